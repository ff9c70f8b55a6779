"""Timers, copy bandwidth and peak memory.

Device time, CUDA: ``triton.testing.do_bench``. Before every repetition it
zero-fills a 256 MiB buffer (evicting the inputs from L2, so each repetition
reads from HBM), then brackets the call with CUDA events. The number of
repetitions is set from a time budget of about ``repeats`` calls. Without
triton the same loop is run by hand. CPU: ``time.perf_counter`` around each call.

Per-call overhead (``wall_and_host``): ``repeats`` calls back to back with one
synchronisation at the end, no L2 eviction. Their wall clock per call is the
larger of the device time and the host time to issue a call; the host time is
``perf_counter`` around each call without synchronising. When the device time is
tiny, launch and Python costs show as wall clock above the device time.

Graph replay (``graph_times``, CUDA): the call captured once in a CUDA graph and
replayed under the same timer: the device's time for the call's kernels with no
host work between them, what the call costs inside a captured training step or
when the host runs ahead of the GPU. The median above includes any time the GPU
waits for the host to issue the call's launches.

Kernels (``kernel_times``, CUDA): ``torch.profiler`` over a few calls, each GPU
kernel's device time per call, so a row says which launch its time went to.
"""
from __future__ import annotations

import gc
import statistics
import time

import torch

L2_FLUSH_BYTES = 256 * 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timer_name(device: torch.device) -> str:
    if device.type != "cuda":
        return "time.perf_counter"
    try:
        import triton.testing  # noqa: F401
    except ImportError:
        return "CUDA events (triton not importable)"
    return "triton.testing.do_bench"


def measure(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn()``: about ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times
    if timer_name(device) != "triton.testing.do_bench":
        return event_loop(fn, device, repeats)
    return do_bench_times(fn, lambda: torch.cuda.synchronize(device), repeats)


def do_bench_times(fn, sync, repeats: int) -> list[float]:
    """``triton.testing.do_bench`` with a time budget of about ``repeats`` calls; seconds per call."""
    from triton.testing import do_bench

    estimate_ms = 1e3 * statistics.median(_synced_call(fn, sync) for _ in range(3))
    budget = max(estimate_ms, 1e-3)
    times_ms = do_bench(fn, warmup=budget, rep=repeats * budget, return_mode="all")
    return [t / 1e3 for t in times_ms]


def _synced_call(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def event_loop(fn, device: torch.device, repeats: int) -> list[float]:
    """do_bench's loop by hand: before each call the 256 MiB fill, then the call between
    two CUDA events; seconds per call."""
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    torch.cuda.synchronize(device)
    for start, end in zip(starts, ends):
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]


def wall_and_host(fn, device: torch.device, repeats: int) -> dict:
    """Wall clock per call of back-to-back calls, and the median host time to issue one call."""
    host = []
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        host.append(time.perf_counter() - t)
    _sync(device)
    return {"wall_s": (time.perf_counter() - start) / repeats, "host_s": statistics.median(host)}


def paired_overhead(fn_a, fn_b, device: torch.device, rounds: int = 128,
                    calls: int = 8) -> float:
    """How much longer ``fn_b`` takes than ``fn_a`` when each is called back to back, as in
    a training loop: rounds of ``calls`` calls of one then of the other (in alternating
    order), each round timed from a synchronised start to a synchronised end; the median
    over rounds of time_b / time_a, minus 1. The two share every drift of the machine, which
    separate medians taken minutes apart do not. Where the host is slower than the device
    a round's time is the host's, whose noise the rounds average out: a call against itself
    came out within -3.9..+3.0% over 16 rounds and -0.9..+1.0% over 128 (8 repeats each,
    stubbed launches on a 2-core CPU)."""
    ratios = []
    for r in range(rounds):
        seconds = {}
        for name, fn in ((("a", fn_a), ("b", fn_b)) if r % 2 == 0 else (("b", fn_b), ("a", fn_a))):
            _sync(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            _sync(device)
            seconds[name] = time.perf_counter() - start
        ratios.append(seconds["b"] / seconds["a"])
    return statistics.median(ratios) - 1


def graph_times(fn, device: torch.device, repeats: int) -> list[float] | None:
    """Seconds per replay of ``fn()`` captured in a CUDA graph (CUDA only), timed as ``measure``."""
    if device.type != "cuda":
        return None
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    try:
        if timer_name(device) != "triton.testing.do_bench":
            return event_loop(graph.replay, device, repeats)
        return do_bench_times(graph.replay, lambda: torch.cuda.synchronize(device), repeats)
    finally:
        del out, graph
        release(device)


def kernel_times(fn, device: torch.device, calls: int = 3, keep: int = 8) -> dict | None:
    """Device microseconds per call of each GPU kernel ``fn()`` launches (CUDA only): the ``keep``
    largest by name, the rest summed as "(other kernels)", and the launches per call."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
    per_kernel: dict[str, float] = {}
    launches = 0
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        name = event.name[:80]
        per_kernel[name] = per_kernel.get(name, 0.0) + event.device_time_total / calls
        launches += 1
    ranked = sorted(per_kernel.items(), key=lambda kv: -kv[1])
    out = dict(ranked[:keep])
    if len(ranked) > keep:
        out["(other kernels)"] = sum(v for _, v in ranked[keep:])
    return {"us_per_call": out, "launches_per_call": launches / calls}


def summarize(times: list[float]) -> dict:
    """Median, quartiles, extremes (seconds) and the count."""
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return {"median_s": statistics.median(times), "p25_s": q1, "p75_s": q3,
            "min_s": min(times), "max_s": max(times), "repeats": len(times)}


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int = 20) -> dict:
    """Bandwidth of ``dst.copy_(src)`` on ``nbytes`` (bytes moved = 2 * nbytes: read + write)."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = measure(lambda: dst.copy_(src), device, warmup=3, repeats=repeats)
    stats = summarize(times)
    return {"bytes": nbytes, "moved_bytes": 2 * nbytes, **stats,
            "gbps": 2 * nbytes / stats["median_s"] / 1e9}


def peak_memory_above_inputs(fn, device: torch.device) -> int | None:
    """Peak bytes allocated during one ``fn()`` beyond what was allocated before it (CUDA only).

    The outputs (loss and gradients) are alive at the peak, so they are counted.
    """
    if device.type != "cuda":
        return None
    release(device)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return peak


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
