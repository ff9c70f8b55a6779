"""pytest-benchmark cases: implementation x size x classes x dtype, forward+backward and forward.

    pytest benchmarks/                                   # every case this device supports
    pytest benchmarks/ --bench-sizes full --bench-classes 19 --benchmark-columns=median,iqr

Timing is pytest-benchmark's (perf_counter around each call, synchronised on
CUDA); ``python -m benchmarks`` times with CUDA events and reports bandwidth
and memory. Nothing here passes or fails on a time.
"""
from __future__ import annotations

import pytest
import torch

from benchmarks.implementations import IMPLEMENTATIONS, step


def _bench(benchmark, impl, problem, device, rounds, explicit_impls, inputs_for, backward):
    impl = IMPLEMENTATIONS[impl]
    reason = impl.unavailable(device)
    if reason is None and impl.slow_on_cpu and device.type == "cpu" and not explicit_impls:
        reason = "torch.compile is slow on CPU; name it in --bench-impls to run it"
    if reason:
        pytest.skip(reason)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        args = inputs_for(problem, impl.inputs)
        loss = impl.build(check_labels=False)

        def run():
            step(loss, *args, backward)
            sync()

        run()  # compile / autotune outside the timed rounds
    except torch.OutOfMemoryError:
        pytest.skip("out of memory")
    mode = "fwd+bwd" if backward else "fwd"
    nbytes = problem.minimal_bytes(backward)
    benchmark.group = f"{mode} {problem.shape} C={problem.classes} {problem.dtype}"
    benchmark.extra_info.update(device=str(device), pixels=problem.pixels, minimal_bytes=nbytes)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=2, iterations=1)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["gbps"] = nbytes / benchmark.stats.stats.median / 1e9


def test_forward_backward(benchmark, impl, problem, device, rounds, explicit_impls, inputs_for):
    _bench(benchmark, impl, problem, device, rounds, explicit_impls, inputs_for, backward=True)


def test_forward(benchmark, impl, problem, device, rounds, explicit_impls, inputs_for):
    _bench(benchmark, impl, problem, device, rounds, explicit_impls, inputs_for, backward=False)
