"""Where an eager call's time goes on the GPU's timeline, as the loss benchmark times it.

    python -m benchmarks.eager_timeline [--size full] [--classes 19] [--dtype bf16]
                                        [--calls 30] [--impls triton triton-check-labels]

The eager median of ``python -m benchmarks`` (``triton.testing.do_bench``) zero-fills a
256 MiB buffer before each call and brackets the call with CUDA events: it is the GPU's
time from the end of that fill to the end of the call's last kernel. Where it exceeds the
call's kernels (the graph-replay column), the GPU waited for the host somewhere in
between. This makes the same loop (fill, call) under ``torch.profiler`` and splits that
span, per call, into the call's kernels (busy), the wait before its first kernel (the host
still issuing the call when the fill ended: ``start lag``) and the gaps between its kernels
(the host behind the GPU inside the call), naming the kernel after the largest gap. From
the host's side: the call's duration and when its first and last launches were made. The
profiler slows the host; the same loop timed with CUDA events and no profiler (what
do_bench reports) is printed beside the profiled span, so the split can be trusted as far
as the two agree. Medians over the calls. CUDA only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

import torch

from benchmarks.host_time import warm_call
from benchmarks.implementations import IMPLEMENTATIONS
from benchmarks.problem import Problem, parse_size
from benchmarks.timing import L2_FLUSH_BYTES, event_loop

FLUSH, CALL = "timeline.flush", "timeline.call"
DEVICE_CATEGORIES = ("kernel", "gpu_memset", "gpu_memcpy")
# A device activity's launch: the host event (runtime or driver API) of the same correlation;
# other events may carry one too (kineto's ``cuda_sync``, on the device's timeline).
HOST_CATEGORIES = ("cuda_runtime", "cuda_driver")


def per_call(trace: dict) -> list[dict]:
    """One dict per (fill, call) pair of a Chrome trace written by ``torch.profiler``, in
    microseconds: the GPU's span from the fill's end to the call's last activity, its
    activities' busy time, the start lag and the gaps, the largest gap and the activity
    after which it came; the host's call duration and its first and last launch, from
    the call's start. A device activity belongs to the annotated range (``FLUSH`` or
    ``CALL``) of the host event that launched it (same ``correlation``)."""
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    ranges = {FLUSH: [], CALL: []}
    for e in events:
        if e.get("cat") == "user_annotation" and e["name"] in ranges:
            ranges[e["name"]].append((e["ts"], e["ts"] + e["dur"]))
    for spans in ranges.values():
        spans.sort()
    launched = {e["args"]["correlation"]: e["ts"] for e in events
                if e.get("cat") in HOST_CATEGORIES and "correlation" in e.get("args", {})}

    def owner(ts):
        for name, spans in ranges.items():
            for i, (start, end) in enumerate(spans):
                if start <= ts <= end:
                    return name, i
        return None

    work = {FLUSH: {}, CALL: {}}
    for e in events:
        if e.get("cat") not in DEVICE_CATEGORIES:
            continue
        host = launched.get(e.get("args", {}).get("correlation"))
        where = owner(host) if host is not None else None
        if where is not None:
            work[where[0]].setdefault(where[1], []).append(
                (e["ts"], e["ts"] + e["dur"], e["name"], host))
    calls = []
    for i, (start, end) in enumerate(ranges[CALL]):
        fill, acts = work[FLUSH].get(i), sorted(work[CALL].get(i, []))
        if not fill or not acts:
            continue
        fill_end = max(a[1] for a in fill)
        gaps = [(b[0] - a[1], a[2]) for a, b in zip(acts, acts[1:])]
        largest = max(gaps, default=(0.0, ""))
        calls.append({
            "span": acts[-1][1] - fill_end, "busy": sum(a[1] - a[0] for a in acts),
            "start_lag": acts[0][0] - fill_end, "gaps": sum(max(g, 0.0) for g, _ in gaps),
            "largest_gap": max(largest[0], 0.0), "after": largest[1],
            "launches": len(acts), "host_call": end - start,
            "host_first": min(a[3] for a in acts) - start,
            "host_last": max(a[3] for a in acts) - start,
        })
    return calls


def median_call(calls: list[dict]) -> dict:
    """The median of every figure over the calls; ``after``: the commonest kernel name."""
    out = {k: statistics.median(c[k] for c in calls) for k in calls[0] if k != "after"}
    names = [c["after"] for c in calls]
    out["after"] = max(sorted(set(names)), key=names.count)  # ties: the first by name
    return out


def record(call, device: torch.device, calls: int) -> dict:
    """``calls`` (fill, call) pairs under ``torch.profiler``: the Chrome trace as a dict."""
    from torch.profiler import ProfilerActivity, profile, record_function

    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device)
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            with record_function(FLUSH):
                flush.zero_()
            with record_function(CALL):
                call()
        torch.cuda.synchronize(device)
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            return json.load(f)
    finally:
        os.remove(path)


def report(impl_name: str, problem: Problem, device: torch.device, calls: int) -> str:
    impl = IMPLEMENTATIONS[impl_name]
    why = impl.unavailable(device) or (None if device.type == "cuda" else "needs CUDA")
    head = f"## {impl_name}, {problem.shape}, C={problem.classes}, {problem.dtype}"
    if why:
        return f"{head}: skipped ({why})\n"
    call = warm_call(impl_name, problem, device)
    unprofiled = 1e6 * statistics.median(event_loop(call, device, calls))
    found = per_call(record(call, device, calls))
    if not found:
        return f"{head}: no call's kernels found in the profiler's trace\n"
    m = median_call(found)
    rows = [("GPU span, fill's end to the last kernel's end (profiled)", m["span"]),
            ("the same loop without the profiler (CUDA events, as do_bench)", unprofiled),
            ("the call's kernels, busy", m["busy"]),
            ("GPU idle before the first kernel (start lag)", m["start_lag"]),
            ("GPU idle between the call's kernels", m["gaps"]),
            (f"the largest gap, after {m['after']}", m["largest_gap"]),
            ("host: the call, start to return (profiled)", m["host_call"]),
            ("host: the call's start to its first launch", m["host_first"]),
            ("host: the call's start to its last launch", m["host_last"])]
    lines = [f"{head}: medians of {len(found)} calls, {m['launches']:.0f} device activities "
             "each", "", "| | us |", "| --- | --- |"]
    lines += [f"| {what} | {us:.1f} |" for what, us in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eager_timeline",
                                description=__doc__.splitlines()[0])
    p.add_argument("--size", nargs="+", default=["full"], help="one size, or one per --classes value")
    p.add_argument("--classes", type=int, nargs="+", default=[19])
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--impls", nargs="+", default=["triton", "triton-check-labels"],
                   choices=list(IMPLEMENTATIONS))
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    if len(args.size) not in (1, len(args.classes)):
        p.error(f"--size: one size, or one per --classes value ({len(args.classes)})")
    device = torch.device(args.device)
    for size, classes in zip(args.size * len(args.classes), args.classes):
        label, (b, h, w) = parse_size(size)
        for name in args.impls:
            print(report(name, Problem(label, b, h, w, classes, args.dtype), device, args.calls),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
