"""Hardware counters of the kernels whose targets are not met, from Nsight Compute.

    python -m benchmarks.kernel_profile --out DIR [--cases NAME ...] [--budget S]

Each case runs ``python -m benchmarks.one_call`` (untimed calls of one implementation)
under ``ncu --clock-control none`` (the clocks as the benchmarks see them) and keeps one
launch of each named kernel from a call after the first (the first compiles). Per kernel
it reads the speed-of-light, occupancy and scheduler figures and the average stall of a
warp per issued instruction by reason (``smsp__average_warps_issue_stalled_*``): what a
latency-bound kernel waits on. Writes ``profile.json`` (every metric ncu gave, with its
unit, per case and kernel) and ``profile.md`` (the table below, then the top stalls).

Standard library only (``ncu`` is a separate program); ``--list`` prints the cases.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import report

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    name: str
    impl: str
    size: str
    classes: int
    dtype: str
    kernels: str  # regex of the kernel names to keep
    per_call: int  # launches of those kernels per call
    sets: tuple = field(default=())  # benchmarks.one_call --set items
    why: str = ""


CASES = [
    Case("upsample-c19-fp32", "upsample-fused", "full", 19, "fp32",
         "upsample_(loss|regressions)_kernel", 2,
         why="1/8 heads: the semantic launch is issue- or latency-bound (0.45 ms)"),
    Case("fused-c150-bf16", "triton", "half", 150, "bf16", "fused_loss_kernel", 1,
         why="C=150 bf16: the split pairs, exponentials kept under a 128-register cap"),
    Case("fused-c150-fp32-split", "triton", "half", 150, "fp32", "fused_loss_kernel", 1,
         ("SPLIT_PLANES=True",),
         why="fp32 pixels split between two threads: 4 programs per SM (not yet timed)"),
    Case("fused-c150-bf16-pairs", "triton", "half", 150, "bf16", "fused_loss_kernel", 1,
         ("SPLIT_PAIRS=False", "ONE_TILE=False"),
         why="a pair per thread, every plane: 2 programs per SM (72% of copy, H200)"),
    Case("fused-c19-bf16", "triton", "full", 19, "bf16", "(fused_loss|normaliser)_kernel", 2,
         why="C=19 bf16: the kernels at 86% of copy in graph replay"),
    Case("upsample-c150-fp32", "upsample-fused", "half", 150, "fp32", "upsample_chunks_kernel", 1,
         why="1/8 heads at C=150: the classes in chunks (1.99 ms)"),
]

SECTIONS = ("SpeedOfLight", "Occupancy", "LaunchStats", "SchedulerStats", "WarpStateStats")
STALLS = r"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
EXTRA = ("sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active",
         "smsp__inst_executed.sum")
STALL_PREFIX = "smsp__average_warps_issue_stalled_"
STALL_SUFFIX = "_per_issue_active.ratio"

# (column, metric, how to show it)
COLUMNS = [
    ("us", "gpu__time_duration.sum", "time"),
    ("DRAM %", "dram__throughput.avg.pct_of_peak_sustained_elapsed", "pct"),
    ("SM %", "sm__throughput.avg.pct_of_peak_sustained_elapsed", "pct"),
    ("issue active %", "smsp__issue_active.avg.pct_of_peak_sustained_active", "pct"),
    ("MUFU pipe %", "sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active", "pct"),
    ("warps / SM", "sm__warps_active.avg.per_cycle_active", "num"),
    ("registers", "launch__registers_per_thread", "int"),
]


def command(case: Case, ncu: str, python: str = sys.executable, extra: bool = True) -> list[str]:
    """ncu over ``benchmarks.one_call``: two calls, the second's launches kept. ``extra``:
    the metrics named here besides the sections'."""
    sets = [x for s in case.sets for x in ("--set", s)]
    metrics = ["--metrics", ",".join((STALLS, *EXTRA))] if extra else []
    return [ncu, "--clock-control", "none", "--csv", "--page", "raw",
            "--kernel-name", f"regex:{case.kernels}", "--launch-skip", str(case.per_call),
            "--launch-count", str(case.per_call),
            *[x for s in SECTIONS for x in ("--section", s)], *metrics,
            python, "-m", "benchmarks.one_call", case.impl, "--size", case.size,
            "--classes", str(case.classes), "--dtype", case.dtype, "--calls", "2", *sets]


def parse_raw_csv(text: str) -> list[dict]:
    """ncu's ``--csv --page raw`` output (other lines ignored) -> one dict per kernel launch:
    {"kernel": name, "metrics": {metric: [unit, value]}}. Values stay strings as ncu
    printed them; the units are read from the row under the header."""
    rows = list(csv.reader(io.StringIO("\n".join(
        line for line in text.splitlines() if line.startswith('"')))))
    header = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if header is None:
        return []
    names = rows[header]
    body = rows[header + 1:]
    units = [""] * len(names)
    if body and not body[0][names.index("Kernel Name")]:
        units, body = body[0], body[1:]
    launches = []
    for r in body:
        if len(r) != len(names):
            continue
        metrics = {n: [u, v] for n, u, v in zip(names, units, r) if "__" in n}
        launches.append({"kernel": r[names.index("Kernel Name")], "metrics": metrics})
    return launches


def _number(value: str) -> float | None:
    try:
        return float(value.replace(",", ""))
    except (AttributeError, ValueError):
        return None


def _show(metrics: dict, metric: str, how: str) -> str:
    unit, value = metrics.get(metric, ["", ""])
    x = _number(value)
    if x is None:
        return "—"
    if how == "time":  # to microseconds
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(unit)
        return f"{x * scale:.1f}" if scale else f"{value} {unit}"
    if how == "int":
        return f"{x:.0f}"
    return f"{x:.1f}"


def stalls(metrics: dict, top: int = 4) -> list[tuple[str, float]]:
    """The ``top`` largest average stalls per issued instruction, (reason, cycles)."""
    found = [(n[len(STALL_PREFIX):-len(STALL_SUFFIX)], _number(v))
             for n, (_, v) in metrics.items()
             if n.startswith(STALL_PREFIX) and n.endswith(STALL_SUFFIX)
             and "_not_issued" not in n]
    found = [(n, x) for n, x in found if x is not None]
    return sorted(found, key=lambda kv: -kv[1])[:top]


def short_name(kernel: str) -> str:
    return kernel.split("(")[0].strip()


def markdown(results: dict) -> str:
    """The profile's table, one row per case and kernel, and its stalls."""
    rows, notes = [], []
    for name, entry in results.items():
        if entry.get("error"):
            notes.append(f"- {name}: {entry['error']}")
        for launch in entry.get("launches", []):
            m = launch["metrics"]
            top = stalls(m)
            rows.append([name, short_name(launch["kernel"])]
                        + [_show(m, metric, how) for _, metric, how in COLUMNS]
                        + [f"{sum(x for _, x in stalls(m, 99)):.1f}" if top else "—",
                           ", ".join(f"{n} {x:.1f}" for n, x in top) or "—"])
    head = ["case", "kernel", *[c for c, _, _ in COLUMNS], "stall cycles / issue",
            "largest stalls (cycles per issued instruction)"]
    text = report.table(head, rows) if rows else "(no kernel profiled)"
    return "\n".join([text, "", *notes]).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernel_profile",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="folder for profile.json and profile.md")
    p.add_argument("--cases", nargs="+", choices=[c.name for c in CASES],
                   default=[c.name for c in CASES])
    p.add_argument("--budget", type=float, default=600, help="seconds for all cases")
    p.add_argument("--ncu", default=shutil.which("ncu") or "ncu")
    p.add_argument("--list", action="store_true", help="print the cases and their commands")
    args = p.parse_args(argv)
    cases = [c for c in CASES if c.name in args.cases]
    if args.list:
        for c in cases:
            print(f"{c.name}: {c.why}\n  {' '.join(command(c, args.ncu))}")
        return 0
    if args.out is None:
        p.error("--out is required")
    if shutil.which(args.ncu) is None:
        print(f"{args.ncu}: Nsight Compute not found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start, results = time.monotonic(), {}
    for i, case in enumerate(cases):
        begin = time.monotonic()
        left = args.budget - (begin - start)
        limit = left / (len(cases) - i)  # an equal share of what is left
        entry = {"command": " ".join(command(case, args.ncu)), "why": case.why}
        try:
            done = subprocess.run(command(case, args.ncu), cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=max(limit, 1))
            entry["launches"] = parse_raw_csv(done.stdout)
            if not entry["launches"] and done.returncode != 0:  # a metric this ncu lacks?
                entry["command"] = " ".join(command(case, args.ncu, extra=False))
                left = limit - (time.monotonic() - begin)
                done = subprocess.run(command(case, args.ncu, extra=False), cwd=REPO, env=env,
                                      capture_output=True, text=True, timeout=max(left, 1))
                entry["launches"] = parse_raw_csv(done.stdout)
            if not entry["launches"]:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                entry["error"] = f"no launch profiled (exit {done.returncode}): {' / '.join(tail)}"
        except subprocess.TimeoutExpired:
            entry["error"] = f"stopped after {limit:.0f} s"
        entry["seconds"] = round(time.monotonic() - begin, 1)
        results[case.name] = entry
        what = entry.get("error") or f"{len(entry['launches'])} launches"
        print(f"[{time.monotonic() - start:5.0f} s] {case.name}: {what}", flush=True)
        (args.out / "profile.json").write_text(json.dumps(results, indent=1))
        (args.out / "profile.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if all(not e.get("error") for e in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
