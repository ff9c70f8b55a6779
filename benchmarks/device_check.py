"""One command for a fresh GPU machine: the evidence of one short rental, in one folder.

    bash benchmarks/device_check.sh OUT_DIR [--commit SHA]      # from the checkout, not installed

Parts, in order, each a subprocess with its own time limit (a failure or a
time-out of one never loses the others' files):

    environment  GPU, driver, versions, commit, date (standard library, in this process)
    tests        TRITON_INTERPRET=0 pytest -m cuda tests/   (past collection errors; -n 6 with pytest-xdist)
    loss         python -m benchmarks --suite targets --quick --modes fwd+bwd
    train        python -m benchmarks train-step --models resnet50 --sizes 512x1024 --batch 8
    plots        python -m benchmarks.plot loss.json train-step.json
    tune         python -m benchmarks.tune --quick    (only when named in --parts)
    tune-upsample  python -m benchmarks.tune_upsample (only when named in --parts)
    tune-prepass   python -m benchmarks.tune_prepass (only when named in --parts)
    profile      python -m benchmarks.kernel_profile: Nsight Compute's counters of the
                 kernels whose targets are not met (only when named in --parts)
    host         python -m benchmarks.host_time --cuda-api in bf16 at C = 19 (8x1024x2048)
                 and C = 150 (8x512x1024): the host's time per call and its CUDA API
                 calls, in a process of its own
                 (only when named in --parts)
    timeline     python -m benchmarks.eager_timeline, the same cases: where an eager call's
                 GPU span goes, kernels or waiting for the host (only when named in --parts)

The parts share a time budget (default 450 s): each gets its share plus what
the earlier parts left unused. OUT_DIR receives at most 8 files: summary.md
(rewritten after every part; printed last), log.txt (every part's output),
loss.json/.md/.png and train-step.json/.md/.png. ``--dry`` rehearses the whole
check on a CPU with tiny problems (the test suite runs it). Standard library
only: it runs where torch cannot even be imported, and says so.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import environment, targets

REPO = environment.REPO
SHARES = {"tests": 140, "loss": 190, "train": 90, "plots": 20, "tune": 150, "tune-upsample": 120,
          "tune-prepass": 60, "profile": 240, "host": 60, "timeline": 60}
DEFAULT_PARTS = ["tests", "loss", "train", "plots"]  # the tuning sweeps run when named
RESERVE = 5  # seconds kept for the summary after the last part
# pytest-xdist workers for the CUDA tests where it is installed: on a fresh machine most of
# their time is Triton compiling each test's kernels, one CPU core at a time (24 of 33
# tests in 135 s on an H100 machine with 16 cores); the workers share the GPU.
TEST_WORKERS = 6
OPTIONAL = {  # module: what its absence means here
    "liger_kernel": "liger-kernel not installed: the liger peer of the loss benchmark is skipped",
    "cityscapesscripts": "cityscapesscripts not installed: test files that import fastmtl.data "
                         "cannot be collected; pytest carries on past them",
}
REQUIRED = {
    "torch": ("tests", "loss", "train", "tune", "tune-upsample", "tune-prepass", "profile",
              "host", "timeline"),
    "triton": (),
    "pytest": ("tests",), "matplotlib": ("plots",),
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmarks/device_check.sh", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("out", type=Path, help="folder for the results (created)")
    p.add_argument("--dry", action="store_true", help="CPU rehearsal: every part tiny, no GPU needed")
    p.add_argument("--commit", help="the commit checked out (a copied checkout has no .git)")
    p.add_argument("--tests", nargs="+", default=["tests"], help="what pytest collects (default tests)")
    p.add_argument("--budget", type=float,
                   help=f"seconds for all parts (default: the sum of the shares + {2 * RESERVE})")
    p.add_argument("--share", action="append", default=[], metavar="PART=SECONDS",
                   help=f"a part's share of the budget (defaults {SHARES})")
    p.add_argument("--parts", nargs="+", choices=list(SHARES), default=DEFAULT_PARTS,
                   help=f"run only these parts (default {' '.join(DEFAULT_PARTS)}), in this order")
    args = p.parse_args(argv)
    args.shares = dict(SHARES)
    for item in args.share:
        name, _, seconds = item.partition("=")
        if name not in SHARES or not seconds.replace(".", "", 1).isdigit():
            p.error(f"--share {item!r}: expected PART=SECONDS with PART one of {list(SHARES)}")
        args.shares[name] = float(seconds)
    args.shares = {k: args.shares[k] for k in args.parts}
    if args.budget is None:
        args.budget = sum(args.shares.values()) + 2 * RESERVE
    return args


def commands(args, out: Path, limit: float) -> dict[str, list[str]]:
    """The command line of each part; ``limit`` is the training step's time limit."""
    py = sys.executable
    loss = [py, "-m", "benchmarks", "--suite", "targets", "--quick", "--modes", "fwd+bwd",
            "--out", str(out), "--stem", "loss"]
    budget = ["--time-limit", f"{max(limit - 20, 5):.0f}",
              "--bisect-seconds", f"{max(limit - 35, 5) / 3:.0f}"]
    files = ["--out", str(out), "--stem", "train-step"]
    train = [py, "-m", "benchmarks", "train-step", "--models", "resnet50", "--sizes", "512x1024",
             "--batch", "8", "--device", "cuda", *files, *budget]
    if not args.dry:
        loss += ["--device", "cuda"]  # never the CPU fallback at full size
    else:
        loss += ["--device", "cpu", "--sizes", "2x16x32", "--repeats", "2", "--warmup", "1",
                 "--copy-mib", "8", "--cpu-threads", "1"]
        train = [py, "-m", "benchmarks", "train-step", "--models", "tiny", "--sizes", "32x64",
                 "--batch", "1", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                 "--cpu-threads", "1", *files, *budget]
    plots = [py, "-m", "benchmarks.plot", *[str(out / f) for f in ("loss.json", "train-step.json")
                                            if (out / f).exists()]]
    sweep = ["--out", str(out), "--budget", f"{max(limit - 15, 5):.0f}"]
    workers = (["-n", str(min(TEST_WORKERS, max(1, (os.cpu_count() or 2) // 2)))]
               if not args.dry and importlib.util.find_spec("xdist") else [])
    return {"tests": [py, "-m", "pytest", "-m", "cuda", *args.tests, "-v", "-rfEs", *workers,
                      "--continue-on-collection-errors", "-p", "no:cacheprovider"],
            "loss": loss, "train": train, "plots": plots,
            "tune": [py, "-m", "benchmarks.tune", "--quick", *sweep],
            "tune-upsample": [py, "-m", "benchmarks.tune_upsample", *sweep],
            "tune-prepass": [py, "-m", "benchmarks.tune_prepass", *sweep],
            "profile": [py, "-m", "benchmarks.kernel_profile", "--out", str(out),
                        "--budget", f"{max(limit - 10, 5):.0f}"],
            # the cases whose eager calls are host-bound (C = 19 and 150 in bf16)
            "host": [py, "-m", "benchmarks.host_time", "--cuda-api", "--size", "full",
                     "8x512x1024", "--classes", "19", "150", "--dtype", "bf16", "--calls",
                     "100", "--top", "15",
                     "--impls", "triton", "triton-check-labels", "upsample-fused"],
            "timeline": [py, "-m", "benchmarks.eager_timeline", "--size", "full", "8x512x1024",
                         "--classes", "19", "150", "--dtype", "bf16", "--calls", "30",
                         "--impls", "triton", "triton-check-labels", "upsample-fused"]}


def run_part(cmd: list[str], timeout: float, log, env: dict) -> tuple[str, int | None]:
    """Run ``cmd`` with output appended to ``log``; kill its process group at ``timeout``."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        rc = proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        return "timeout", None
    return ("ok" if rc == 0 else "failed"), rc


def parse_pytest(text: str) -> dict:
    """Counts from pytest's final summary line, or, when there is none (the run was stopped),
    from its per-test ``-v`` lines; and its FAILED/ERROR lines."""
    lines = text.splitlines()
    outcome = r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)"
    final = [line for line in lines if line.startswith("=") and re.search(outcome, line)]
    counts: dict[str, int] = {}
    if final:
        for n, what in re.findall(outcome, final[-1]):
            counts["error" if what.startswith("error") else what] = int(n)
    else:
        for line in lines:
            # "path::test PASSED [ 3%]", or with pytest-xdist "[gw0] [ 3%] PASSED path::test"
            match = re.search(r"::\S+ (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b", line) or \
                re.match(r"\[gw\d+\] \[ *\d+%\] (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS) \S+::", line)
            if match:
                key = {"XFAIL": "xfailed", "XPASS": "xpassed"}.get(match.group(1), match.group(1).lower())
                counts[key] = counts.get(key, 0) + 1
    reasons, current = {}, None  # collection errors: the first "E " line under each header
    for line in lines:
        header = re.match(r"_+ ERROR collecting (\S+) _+$", line)
        if header:
            current = header.group(1)
        elif current and line.startswith("E "):
            reasons[current], current = line[1:].strip(), None
    problems = []
    for line in lines:
        if line.startswith(("FAILED ", "ERROR ")):
            path = line.split()[1]  # relative to the working directory; the headers' to pytest's rootdir
            why = [r for k, r in reasons.items() if path == k or path.endswith("/" + k)]
            problems.append(f"{line}: {why[0]}" if line.strip() == f"ERROR {path}" and why else line)
    return {"counts": counts, "complete": bool(final), "problems": problems}


def only_missing_modules(tests: dict, missing) -> bool:
    """True when nothing failed and every error is a test file importing a module not installed here."""
    problems = tests["problems"]
    return not tests["counts"].get("failed") and all(
        p.startswith("ERROR ") and any(f"No module named '{m}" in p for m in missing) for p in problems)


def torch_sees_cuda() -> bool:
    """torch.cuda.is_available(), asked in a subprocess (this one never imports torch)."""
    code = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def missing_modules() -> dict[str, str]:
    notes = {m: why for m, why in OPTIONAL.items() if importlib.util.find_spec(m) is None}
    for m, parts in REQUIRED.items():
        if importlib.util.find_spec(m) is None:
            notes[m] = f"{m} not installed" + (f": parts {', '.join(parts)} cannot run" if parts else "")
    return notes


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.commit:
        os.environ["FASTMTL_COMMIT"] = args.commit
    state = {"command": " ".join(["benchmarks/device_check.sh", *(argv if argv is not None else sys.argv[1:])]),
             "dry": args.dry, "host": environment.host_record(), "missing": missing_modules(),
             "parts": [], "tests": None}
    for note in state["missing"].values():
        print(note, flush=True)
    if not args.dry and not state["host"]["gpus"] and not torch_sees_cuda():
        state["missing"]["cuda"] = ("no CUDA device (neither nvidia-smi nor torch sees one): run on a GPU "
                                    "machine, or with --dry for a CPU rehearsal")
        text = summary(state, out)
        (out / "summary.md").write_text(text)
        print("\n" + text.split("\n<details>")[0], file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if not args.dry:
        env["TRITON_INTERPRET"] = "0"  # compiled kernels, whatever the shell had
    log_path = out / "log.txt"
    log_path.write_text(f"{state['command']}\n")
    names = list(args.shares)
    for i, name in enumerate(names):
        later = sum(args.shares[n] for n in names[i + 1:])
        limit = args.budget - (time.monotonic() - start) - later - RESERVE  # unused time flows on
        cmd = commands(args, out, limit)[name]
        blocked = [m for m, parts in REQUIRED.items() if name in parts and m in state["missing"]]
        part = {"part": name, "command": " ".join(cmd), "timeout_s": round(limit)}
        t0 = time.monotonic()
        if blocked:
            part.update(status="skipped", note=f"{', '.join(blocked)} not installed")
        elif name == "plots" and len(cmd) == 3:
            part.update(status="skipped", note="no results to plot")
        elif name.startswith("tune") and args.dry:
            part.update(status="skipped", note="a tuning sweep needs CUDA")
        elif name == "profile" and args.dry:
            part.update(status="skipped", note="Nsight Compute needs CUDA")
        elif name in ("host", "timeline") and args.dry:
            part.update(status="skipped", note="the CUDA profiler's figures need CUDA")
        elif limit < 5:
            part.update(status="skipped", note="no time left in the budget")
        else:
            print(f"[{time.monotonic() - start:5.0f} s] {name}: up to {limit:.0f} s", flush=True)
            with log_path.open("a") as log:
                log.write(f"\n===== {name}: {part['command']}\n")
                log.flush()
                begin = log.tell()
                status, rc = run_part(cmd, limit, log, env)
                log.write(f"\n===== {name}: {status}" + (f", exit code {rc}" if rc not in (0, None) else "") + "\n")
            part.update(status=status, rc=rc)
            if name == "tests":
                with log_path.open() as f:
                    f.seek(begin)
                    state["tests"] = parse_pytest(f.read())
                part["note"] = ", ".join(f"{n} {k}" for k, n in state["tests"]["counts"].items()) \
                    + ("" if state["tests"]["complete"] else " (before it stopped)")
                if status == "failed" and only_missing_modules(state["tests"], state["missing"]):
                    part["status"] = "ok"
                    part["note"] += "; the errors are test files needing packages not installed here"
        part["seconds"] = round(time.monotonic() - t0, 1)
        state["parts"].append(part)
        print(f"[{time.monotonic() - start:5.0f} s] {name}: {part['status']} {part.get('note', '')}",
              flush=True)
        (out / "summary.md").write_text(summary(state, out))
    text = summary(state, out)
    (out / "summary.md").write_text(text)
    print("\n" + text.split("\n<details>")[0], flush=True)
    return 0 if all(p["status"] == "ok" for p in state["parts"]) else 1


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(state: dict, out: Path) -> str:
    from benchmarks import report, train_report

    h, loss = state["host"], _read(out / "loss.json")
    gpu = "; ".join(f"{g['name']} ({g['memory_mib']} MiB, driver {g['driver']})" for g in h["gpus"]) or (
        f"{loss['device']['name']} (nvidia-smi unavailable)" if loss and loss["device"]["type"] == "cuda"
        else "no GPU")
    pk = h["packages"]
    lines = [f"# fastmtl device check, {h['date']}{' (dry run on CPU)' if state['dry'] else ''}", "",
             f"{gpu}; driver's CUDA {h['driver_cuda'] or '—'}, torch {pk['torch']} "
             f"(CUDA {h['torch_cuda_build'] or '—'}), "
             f"triton {pk['triton']}, python {h['python']}; commit {h['commit'] or 'unknown'}, "
             f"source digest {h['source_digest']}; {h['time_utc']}.", ""]
    lines += [f"- {note}" for note in state["missing"].values()]
    lines += ["", report.table(["part", "status", "seconds", "note"],
                               [[p["part"], p["status"], str(p.get("seconds", "")), p.get("note", "")]
                                for p in state["parts"]]), ""]
    if state["tests"] and state["tests"]["problems"]:
        lines += ["CUDA tests, failures and errors:", "", *[f"- {x}" for x in state["tests"]["problems"][:15]], ""]
    if loss:
        lines += ["## Targets", "", targets.table(targets.evaluate(loss)), ""]
        small = report.overhead_rows(loss["results"])
        if small:
            lines += ["## Per-call overhead", "", report.overhead_table(small), ""]
        kernels = report.kernels_table([r for r in loss["results"] if r["pixels"] >= 2**20])
        if kernels:
            lines += ["## Kernels per call", "", kernels, ""]
        clocks = report.clocks_table(loss["results"])
        if clocks:
            lines += ["## GPU clocks while each row was timed", "", clocks, ""]
    train = _read(out / "train-step.json")
    if train and train["results"]:
        lines += ["## Training step", "", train_report.results_table(train["results"]), ""]
    if (out / "profile.md").exists():
        lines += ["## Kernel profiles (Nsight Compute)", "", (out / "profile.md").read_text().rstrip(), ""]
    for sweep in ("tune.md", "tune_upsample.md"):  # the tuning sweeps' own reports
        if (out / sweep).exists():
            lines += [(out / sweep).read_text().rstrip(), ""]
    lines += ["<details><summary>environment and parts (JSON)</summary>", "", "```json",
              json.dumps({k: state[k] for k in ("command", "host", "missing", "parts", "tests")}, indent=1),
              "```", "</details>", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
