"""``python -m benchmarks``: time every implementation, print a table per device, save JSON and markdown.

Each case is one problem (size x classes x dtype) and one mode: "fwd+bwd" (the
total and the gradients of the three predictions and log_vars) or "fwd" (the
total under no_grad). Reported per case: median time and quartiles, achieved
GB/s on the minimal bytes of ``problem.minimal_bytes_per_pixel``, that as a
percentage of the device's copy bandwidth measured in the same run, peak memory
above the inputs (CUDA), and the speed-up against every other implementation.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import traceback
from pathlib import Path

import torch

from benchmarks import report
from benchmarks.implementations import IMPLEMENTATIONS, step
from benchmarks.problem import DTYPES, SIZES, TARGET_DTYPES, Problem, gradient_bytes, parse_size
from benchmarks.timing import copy_bandwidth, measure, peak_memory_above_inputs, release, summarize

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODES = ("fwd+bwd", "fwd")
QUICK_CPU_SIZE = "2x64x128"

# (quick, full) defaults per device type.
DEFAULTS = {
    "cuda": {"sizes": (["full"], list(SIZES)), "classes": ([19], [19, 150]),
             "repeats": (20, 100), "warmup": (5, 10), "copy_mib": (2048, 2048)},
    "cpu": {"sizes": ([QUICK_CPU_SIZE], ["tiny"]), "classes": ([19], [19, 150]),
            "repeats": (3, 10), "warmup": (1, 2), "copy_mib": (64, 512)},
}


def _list(values):
    """Accept "a,b c" style lists from nargs='+'."""
    return None if values is None else [v for item in values for v in item.split(",") if v]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"few repetitions and one size: 'full' on CUDA, {QUICK_CPU_SIZE} on CPU; C=19")
    p.add_argument("--device", nargs="+", help="cuda and/or cpu (default: cuda if available, else cpu)")
    p.add_argument("--sizes", nargs="+", help=f"{', '.join(SIZES)} or BxHxW "
                   f"(default: all on CUDA, tiny on CPU; --quick: full on CUDA, {QUICK_CPU_SIZE} on CPU)")
    p.add_argument("--small-batch", action="store_true",
                   help="divide the batch of named sizes by 4 (for cards with less memory)")
    p.add_argument("--classes", nargs="+", help="numbers of classes C (default 19 150; --quick: 19)")
    p.add_argument("--dtypes", nargs="+", help=f"{', '.join(DTYPES)} (default fp32 bf16)")
    p.add_argument("--target-dtype", default="int64", choices=list(TARGET_DTYPES),
                   help="semantic label dtype (default int64)")
    p.add_argument("--impls", nargs="+",
                   help=f"{', '.join(IMPLEMENTATIONS)} (default all; torch.compile peers run on CPU "
                   "only when named here)")
    p.add_argument("--modes", nargs="+", help="fwd+bwd and/or fwd (default both)")
    p.add_argument("--repeats", type=int, help="timed repetitions (default 100 CUDA / 10 CPU; --quick 20 / 3)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default 10 CUDA / 2 CPU; --quick 5 / 1)")
    p.add_argument("--copy-mib", type=int, help="buffer size of the copy-bandwidth test "
                   "(default 2048 on CUDA, 512 on CPU, 64 with --quick on CPU)")
    p.add_argument("--cpu-threads", type=int,
                   help="torch.set_num_threads for CPU runs (1 is steadier on a shared machine)")
    p.add_argument("--check-labels", action="store_true",
                   help="keep fastmtl's label-range check on (it synchronises; off by default)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where JSON/markdown go")
    p.add_argument("--plot", action="store_true", help="also write a PNG plot next to the JSON")
    p.add_argument("--list", action="store_true", help="list the implementations and exit")
    args = p.parse_args(argv)
    for name in ("device", "sizes", "classes", "dtypes", "impls", "modes"):
        setattr(args, name, _list(getattr(args, name)))
    for name, allowed in (("dtypes", DTYPES), ("impls", IMPLEMENTATIONS), ("modes", MODES),
                          ("device", ("cuda", "cpu"))):
        bad = [v for v in getattr(args, name) or [] if v not in allowed]
        if bad:
            p.error(f"--{name.replace('_', '-')}: unknown {bad}; choose from {list(allowed)}")
    return args


def settings_for(args, device: torch.device) -> dict:
    d = {k: v[0 if args.quick else 1] for k, v in DEFAULTS[device.type].items()}
    return {
        "quick": args.quick,
        "sizes": args.sizes or d["sizes"],
        "small_batch": args.small_batch,
        "classes": [int(c) for c in args.classes] if args.classes else d["classes"],
        "dtypes": args.dtypes or ["fp32", "bf16"],
        "target_dtype": args.target_dtype,
        "modes": args.modes or list(MODES),
        "repeats": args.repeats or d["repeats"],
        "warmup": args.warmup if args.warmup is not None else d["warmup"],
        "copy_mib": args.copy_mib or d["copy_mib"],
        "check_labels": args.check_labels,
    }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _command(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    """Device description and versions, recorded with every result."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    import fastmtl

    repo = Path(__file__).resolve().parent.parent
    env = {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "triton": triton_version,
            "liger_kernel": _version("liger-kernel"),
            "fastmtl": fastmtl.__version__,
            "fastmtl_git": _command(["git", "-C", str(repo), "describe", "--always", "--dirty"]),
            "platform": platform.platform(),
        },
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        smi = _command(["nvidia-smi", f"--id={device.index or 0}",
                        "--query-gpu=driver_version", "--format=csv,noheader"])
        env["versions"].update({"cuda_runtime": torch.version.cuda, "driver": smi
                                or "unknown (nvidia-smi unavailable)"})
        env["device"] = {"type": "cuda", "name": props.name, "slug": slug(props.name),
                         "memory_bytes": props.total_memory,
                         "multiprocessors": props.multi_processor_count,
                         "capability": f"{props.major}.{props.minor}"}
    else:
        name = _cpu_name()
        env["versions"]["driver"] = None
        env["device"] = {"type": "cpu", "name": name, "slug": "cpu-" + slug(name),
                         "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    return env


def _error(exc: BaseException) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"error: {type(exc).__name__}: {first[:200]}"


def run_device(device: torch.device, args, command: str) -> dict:
    s = settings_for(args, device)
    env = environment(device)
    print(f"\n== {env['device']['name']} ({device.type}) ==", flush=True)
    copy = copy_bandwidth(device, s["copy_mib"] * 2**20)
    release(device)
    print(f"copy bandwidth: {copy['gbps']:.1f} GB/s ({s['copy_mib']} MiB dst.copy_(src))", flush=True)

    impls, skipped = [], []
    for name in args.impls or list(IMPLEMENTATIONS):
        impl = IMPLEMENTATIONS[name]
        reason = impl.unavailable(device)
        if reason is None and impl.slow_on_cpu and device.type == "cpu" and not args.impls:
            reason = "torch.compile is slow on CPU; name it in --impls to run it"
        if reason:
            skipped.append({"impl": name, "case": None, "reason": reason})
        else:
            impls.append(impl)

    rows = []
    for size in s["sizes"]:
        label, (b, h, w) = parse_size(size, s["small_batch"])
        for classes in s["classes"]:
            for dtype in s["dtypes"]:
                problem = Problem(label, b, h, w, classes, dtype, s["target_dtype"])
                rows += run_problem(problem, impls, s, device, skipped)
                release(device)
    for row in rows:
        row["pct_copy_bw"] = 100 * row["gbps"] / copy["gbps"]
    report.add_speedups(rows)
    return {"schema": 1, "date": datetime.date.today().isoformat(), "command": command,
            **env, "settings": s, "copy_bandwidth": copy,
            "implementations": {k: v.description for k, v in IMPLEMENTATIONS.items()},
            "results": rows, "skipped": skipped}


def run_problem(problem: Problem, impls, s: dict, device, skipped: list) -> list[dict]:
    rows, inputs = [], {}
    case = f"{problem.size} {problem.shape}, C={problem.classes}, {problem.dtype}"
    for mode in s["modes"]:
        backward = mode == "fwd+bwd"
        for impl in impls:
            error = None
            try:
                if impl.inputs not in inputs:
                    inputs[impl.inputs] = impl.inputs(problem, device)
                args = inputs[impl.inputs]
                loss = impl.build(check_labels=s["check_labels"])
                times = measure(lambda: step(loss, *args, backward), device, s["warmup"], s["repeats"])
                peak = peak_memory_above_inputs(lambda: step(loss, *args, backward), device)
            except Exception as exc:  # one failing peer must not end the run
                if not isinstance(exc, torch.OutOfMemoryError):
                    traceback.print_exc()
                error = _error(exc)
            if error:  # released here, once the traceback no longer holds its tensors
                skipped.append({"impl": impl.name, "case": f"{case}, {mode}", "reason": error})
                release(device)
                continue
            rows.append(result_row(problem, impl.name, mode, summarize(times), peak))
            r = rows[-1]
            print(f"{impl.name:>22} {case:<32} {mode:<8} {r['median_s'] * 1e3:9.3f} ms "
                  f"{r['gbps']:8.1f} GB/s", flush=True)
    return rows


def result_row(problem: Problem, impl: str, mode: str, stats: dict, peak) -> dict:
    backward = mode == "fwd+bwd"
    nbytes = problem.minimal_bytes(backward)
    grads = gradient_bytes(problem) if backward else None
    return {
        "impl": impl, "size": problem.size, "shape": problem.shape, "batch": problem.batch,
        "height": problem.height, "width": problem.width, "pixels": problem.pixels,
        "classes": problem.classes, "dtype": problem.dtype, "target_dtype": problem.target_dtype,
        "mode": mode, **stats,
        "bytes_per_pixel": nbytes // problem.pixels, "minimal_bytes": nbytes,
        "gbps": nbytes / stats["median_s"] / 1e9,
        "peak_bytes": peak, "gradient_bytes": grads,
        "peak_over_gradients": None if peak is None or not grads else peak / grads,
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.list:
        for name, impl in IMPLEMENTATIONS.items():
            print(f"{name:22} {impl.description}")
        return 0
    devices = args.device or (["cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available here", file=sys.stderr)
        return 2
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    command = "python -m benchmarks " + shlex.join(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in devices:
        result = run_device(torch.device(name), args, command)
        stem = args.out / f"{result['device']['slug']}-{result['date']}"
        table = report.markdown(result)
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        stem.with_suffix(".md").write_text(table)
        print("\n" + table)
        print(f"wrote {stem}.json and {stem}.md")
        if args.plot:
            from benchmarks.plot import plot
            print(f"wrote {plot(stem.with_suffix('.json'))}")
    return 0
