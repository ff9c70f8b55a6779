"""Timers, copy bandwidth and peak memory.

CUDA: each repetition is bracketed by CUDA events, after a write of 256 MiB
that evicts the inputs from L2 (untimed), so every repetition reads from HBM.
CPU: ``time.perf_counter`` around each repetition.
"""
from __future__ import annotations

import gc
import statistics
import time

import torch

L2_FLUSH_BYTES = 256 * 2**20


def measure(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn()`` for ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times
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
