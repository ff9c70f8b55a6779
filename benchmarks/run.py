"""``python -m benchmarks``: time every implementation, print a table per device, save JSON and markdown.

Each case is one problem (size x classes x dtype) and one mode: "fwd+bwd" (the
total and the gradients of the three predictions and log_vars) or "fwd" (the
total under no_grad). Reported per case: device time (median, quartiles), wall
clock and host time per call, achieved GB/s on the minimal bytes of
``problem.minimal_bytes_per_pixel``, that as a percentage of the device's copy
bandwidth measured in the same run, peak memory above the inputs (CUDA), the
kernels each call launches with their device time (CUDA, torch.profiler), the
device time of the call replayed from a CUDA graph (no host work between its
launches), the
speed-up against every other implementation and the performance targets
(``benchmarks/targets.py``). The JSON and markdown are rewritten after every
problem, so a run that is stopped keeps what it measured.

``python -m benchmarks train-step --help``: the whole-training-step benchmark.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks import report
from benchmarks.environment import environment
from benchmarks.gpu_clocks import ClockSampler
from benchmarks.implementations import IMPLEMENTATIONS, step
from benchmarks.problem import DTYPES, SIZES, TARGET_DTYPES, Problem, parse_size
from benchmarks.targets import TARGET_SUITE
from benchmarks.timing import (copy_bandwidth, graph_times, kernel_times, measure,
                               paired_overhead, peak_memory_above_inputs, release, summarize,
                               timer_name, wall_and_host)

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
    p.add_argument("--suite", choices=["targets"],
                   help="run the cases the performance targets are read from (benchmarks/targets.py): "
                   "C=19 full, C=150 half, a 2x128x256 per-call overhead case; --sizes replaces "
                   "their sizes, --classes/--dtypes/--impls narrow them")
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
    p.add_argument("--stem", help="file name without suffix (default <device>-<date>)")
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
    try:
        for size in args.sizes or []:
            parse_size(size)
        args.classes = [int(c) for c in args.classes] if args.classes else None
    except ValueError as exc:
        p.error(str(exc))
    return args


def settings_for(args, device: torch.device) -> dict:
    d = {k: v[0 if args.quick else 1] for k, v in DEFAULTS[device.type].items()}
    return {
        "suite": args.suite,
        "quick": args.quick,
        "sizes": args.sizes or d["sizes"],
        "small_batch": args.small_batch,
        "classes": args.classes or d["classes"],
        "dtypes": args.dtypes or ["fp32", "bf16"],
        "target_dtype": args.target_dtype,
        "modes": args.modes or list(MODES),
        "repeats": args.repeats or d["repeats"],
        "warmup": args.warmup if args.warmup is not None else d["warmup"],
        "copy_mib": args.copy_mib or d["copy_mib"],
        "check_labels": args.check_labels,
        "timer": timer_name(device),
    }


def cases(args, s: dict) -> list[tuple[str, int, str, tuple | None]]:
    """(size, classes, dtype, implementations or None for all) in the order they run."""
    if not args.suite:
        return [(size, c, dtype, None) for size in s["sizes"] for c in s["classes"] for dtype in s["dtypes"]]
    merged: dict[tuple, set] = {}
    for suite_size, c, dtypes, impls in TARGET_SUITE:
        for size in args.sizes or [suite_size]:
            for dtype in dtypes:
                if (args.classes and c not in args.classes) or (args.dtypes and dtype not in args.dtypes):
                    continue
                merged.setdefault((size, c, dtype), set()).update(impls)
    return [(size, c, dtype, tuple(i for i in IMPLEMENTATIONS if i in impls))
            for (size, c, dtype), impls in merged.items()]


def _error(exc: BaseException) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"error: {type(exc).__name__}: {first[:200]}"


def available(names, device: torch.device, explicit: bool, skipped: list) -> list:
    """The implementations among ``names`` that can run here; the others go to ``skipped``."""
    impls = []
    for name in names:
        impl = IMPLEMENTATIONS[name]
        reason = impl.unavailable(device)
        if reason is None and impl.slow_on_cpu and device.type == "cpu" and not explicit:
            reason = "torch.compile is slow on CPU; name it in --impls to run it"
        if reason:
            skipped.append({"impl": name, "case": None, "reason": reason})
        else:
            impls.append(impl)
    return impls


def run_device(device: torch.device, args, command: str, save=lambda result: None) -> dict:
    """Every case on ``device``; ``save(result)`` is called after each problem with the rows so far."""
    s = settings_for(args, device)
    print(f"\n== {device.type}: timer {s['timer']} ==", flush=True)
    result = {"schema": 2, "kind": "loss", "date": datetime.date.today().isoformat(),
              "command": command, **environment(device), "settings": s,
              "implementations": {k: v.description for k, v in IMPLEMENTATIONS.items()},
              "results": [], "skipped": [], "partial": "copy bandwidth being measured"}
    print(f"{result['device']['name']}", flush=True)
    clocks = ClockSampler(device.index or 0).start() if device.type == "cuda" else None
    try:
        return _run_cases(device, args, s, result, clocks, save)
    finally:
        if clocks is not None:
            clocks.stop()


def _run_cases(device, args, s: dict, result: dict, clocks, save) -> dict:
    """``run_device``'s measurements: the copy bandwidth, then every problem."""
    start = time.monotonic()
    result["copy_bandwidth"] = copy_bandwidth(device, s["copy_mib"] * 2**20)
    result["copy_bandwidth"]["clocks"] = clocks and clocks.window(start, time.monotonic())
    release(device)
    print(f"copy bandwidth: {result['copy_bandwidth']['gbps']:.1f} GB/s ({s['copy_mib']} MiB "
          "dst.copy_(src))", flush=True)

    skipped, rows = result["skipped"], result["results"]
    todo = cases(args, s)
    s["cases"] = [f"{size} C={c} {dtype}" for size, c, dtype, _ in todo]
    in_cases = {i for *_, wanted in todo for i in (wanted or IMPLEMENTATIONS)}
    names = [i for i in args.impls or IMPLEMENTATIONS if i in in_cases]
    impls = {i.name: i for i in available(names, device, bool(args.impls), skipped)}
    for n, (size, classes, dtype, wanted) in enumerate(todo):
        result["partial"] = f"{n} of {len(todo)} problems done"
        save(result)
        label, (b, h, w) = parse_size(size, s["small_batch"])
        problem = Problem(label, b, h, w, classes, dtype, s["target_dtype"])
        chosen = [impls[i] for i in (wanted or names) if i in impls]
        rows += run_problem(problem, chosen, s, device, skipped, clocks)
        release(device)
        for row in rows:
            row["pct_copy_bw"] = 100 * row["gbps"] / result["copy_bandwidth"]["gbps"]
            graph = row.get("graph_median_s")
            row["graph_pct_copy_bw"] = graph and 100 * row["minimal_bytes"] / graph / 1e9 \
                / result["copy_bandwidth"]["gbps"]
        report.add_speedups(rows)
    del result["partial"]
    return result


def run_problem(problem: Problem, impls, s: dict, device, skipped: list,
                clocks: ClockSampler | None = None) -> list[dict]:
    """The rows of every implementation on ``problem``; ``clocks``: the GPU's clocks while
    each row's device time was measured (``benchmarks.gpu_clocks``)."""
    rows, inputs = [], {}
    case = f"{problem.size} {problem.shape}, C={problem.classes}, {problem.dtype}"
    for mode in s["modes"]:
        backward = mode == "fwd+bwd"
        calls = {}  # impl -> its call, for the label check's paired timing
        for impl in impls:
            error = None
            try:
                if impl.inputs not in inputs:
                    inputs[impl.inputs] = impl.inputs(problem, device)
                args = inputs[impl.inputs]
                loss = impl.build(check_labels=s["check_labels"])
                call = functools.partial(step, loss, *args, backward)
                started = time.monotonic()
                times = measure(call, device, s["warmup"], s["repeats"])
                timed = (started, time.monotonic())
                overhead = wall_and_host(call, device, s["repeats"])
                peak = peak_memory_above_inputs(call, device)
            except Exception as exc:  # one failing peer must not end the run
                if not isinstance(exc, torch.OutOfMemoryError):
                    traceback.print_exc()
                error = _error(exc)
            if error:  # released here, once the traceback no longer holds its tensors
                skipped.append({"impl": impl.name, "case": f"{case}, {mode}", "reason": error})
                release(device)
                continue
            grads = sum(t.numel() * t.element_size() for t in [*args[0].values(), args[2]])
            rows.append(result_row(problem, impl.name, mode, summarize(times), overhead, peak,
                                   grads if backward else None))
            r = rows[-1]
            if clocks is not None:
                r["clocks"] = clocks.window(*timed)
            calls[impl.name] = call
            if impl.name == "triton-check-labels" and "triton" in calls:
                r["label_check_overhead"] = paired_overhead(calls["triton"], call, device)
            try:  # a profiler or capture failure loses only that figure, never the timing
                r["kernels"] = kernel_times(call, device)
            except Exception as exc:
                r["kernels"] = {"error": _error(exc)}
            try:
                replays = graph_times(call, device, s["repeats"])
                r["graph_median_s"] = None if replays is None else summarize(replays)["median_s"]
            except Exception as exc:
                r["graph_median_s"], r["graph_error"] = None, _error(exc)
                release(device)
            print(f"{impl.name:>22} {case:<32} {mode:<8} {r['median_s'] * 1e3:9.3f} ms "
                  f"{r['gbps']:8.1f} GB/s  wall {r['wall_s'] * 1e3:.3f} ms  host {r['host_s'] * 1e3:.3f} ms",
                  flush=True)
    return rows


def result_row(problem: Problem, impl: str, mode: str, stats: dict, overhead: dict, peak,
               grads: int | None) -> dict:
    nbytes = problem.minimal_bytes(mode == "fwd+bwd")
    return {
        "impl": impl, "size": problem.size, "shape": problem.shape, "batch": problem.batch,
        "height": problem.height, "width": problem.width, "pixels": problem.pixels,
        "classes": problem.classes, "dtype": problem.dtype, "target_dtype": problem.target_dtype,
        "mode": mode, **stats, **overhead,
        "bytes_per_pixel": nbytes // problem.pixels, "minimal_bytes": nbytes,
        "gbps": nbytes / stats["median_s"] / 1e9,
        "peak_bytes": peak, "gradient_bytes": grads,
        "peak_over_gradients": None if peak is None or not grads else peak / grads,
    }


def write(result: dict, stem: Path) -> None:
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(report.markdown(result))


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
    if args.stem and len(devices) > 1:
        print("--stem names one file: give one --device with it", file=sys.stderr)
        return 2
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    command = "python -m benchmarks " + shlex.join(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in devices:
        device = torch.device(name)
        stems = {}

        def save(result):
            stem = stems.setdefault("stem", args.out / (args.stem or
                                    f"{result['device']['slug']}-{result['date']}"))
            write(result, stem)

        result = run_device(device, args, command, save)
        save(result)
        stem = stems["stem"]
        print("\n" + report.markdown(result))
        print(f"wrote {stem}.json and {stem}.md")
        if args.plot:
            from benchmarks.plot import plot
            print(f"wrote {plot(stem.with_suffix('.json'))}")
    return 0
