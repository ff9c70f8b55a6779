"""The split of an eager call's GPU span (benchmarks.eager_timeline) on a hand-made trace in
torch.profiler's Chrome format, whose figures follow from its timestamps."""
import pytest

from benchmarks.eager_timeline import CALL, FLUSH, median_call, per_call


def _x(cat, name, ts, dur, correlation=None):
    event = {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "args": {}}
    if correlation is not None:
        event["args"]["correlation"] = correlation
    return event


def _pair(t, corr, after_b):
    """One fill and one call of three kernels starting at host time t; the GPU waits 10 us
    for the first kernel, 5 us after A and ``after_b`` us after B."""
    return [
        _x("user_annotation", FLUSH, t, 5),
        _x("cuda_runtime", "cudaLaunchKernel", t + 1, 2, corr),
        _x("kernel", "fill", t + 2, 58, corr),
        _x("user_annotation", CALL, t + 6, 94),
        _x("cpu_op", "aten::empty", t + 7, 3),
        _x("cuda_driver", "cuLaunchKernelEx", t + 20, 4, corr + 1),
        _x("kernel", "A", t + 70, 10, corr + 1),
        _x("cuda_driver", "cuLaunchKernelEx", t + 40, 4, corr + 2),
        _x("kernel", "B", t + 85, 115, corr + 2),
        _x("cuda_runtime", "cudaLaunchKernel", t + 90, 3, corr + 3),
        _x("kernel", "C", t + 200 + after_b, 5, corr + 3),
        {"ph": "s", "cat": "ac2g", "name": "flow", "ts": t + 20, "id": corr + 1},
        _x("cuda_sync", "Stream Sync", t + 300, 1, corr + 2),  # no launch, same correlation
    ]


def test_the_span_splits_into_kernels_start_lag_and_gaps():
    warmup = [_x("cuda_driver", "cuLaunchKernelEx", 1, 1, 1), _x("kernel", "warm", 2, 3, 1)]
    trace = {"traceEvents": warmup + _pair(1000, 10, 30) + _pair(2000, 20, 50)}
    calls = per_call(trace)
    assert len(calls) == 2  # the warm-up kernel belongs to neither range
    first = calls[0]
    assert {k: v for k, v in first.items() if k != "after"} == pytest.approx({
        "span": 235 - 60, "busy": 10 + 115 + 5, "start_lag": 10, "gaps": 5 + 30,
        "largest_gap": 30, "launches": 3, "host_call": 94, "host_first": 14,
        "host_last": 84})
    assert first["after"] == "B"
    assert first["span"] == first["busy"] + first["start_lag"] + first["gaps"]
    assert calls[1]["gaps"] == 5 + 50
    m = median_call(calls)
    assert m["gaps"] == pytest.approx((35 + 55) / 2) and m["busy"] == 130
    assert m["after"] == "B"


def test_overlapping_kernels_count_no_negative_gap():
    trace = {"traceEvents": _pair(0, 1, -20)}  # C starts before B ends (another stream)
    (call,) = per_call(trace)
    assert call["gaps"] == 5 and call["largest_gap"] == 5 and call["after"] == "A"


def test_a_call_without_a_fill_or_kernels_is_left_out():
    events = [e for e in _pair(0, 1, 0) if e["name"] != "fill"]
    assert per_call({"traceEvents": events}) == []


def test_the_report_gives_the_medians_beside_the_unprofiled_span(monkeypatch):
    """The report's table from a trace of two calls, the CUDA parts stood in for: the
    medians of the split and the loop's unprofiled time, in microseconds."""
    import dataclasses

    import torch

    from benchmarks import eager_timeline
    from benchmarks.problem import Problem

    trace = {"traceEvents": _pair(1000, 10, 30) + _pair(2000, 20, 50)}
    monkeypatch.setattr(eager_timeline, "warm_call", lambda *a, **k: (lambda: None))
    monkeypatch.setattr(eager_timeline, "record", lambda call, device, calls: trace)
    monkeypatch.setattr(eager_timeline, "event_loop", lambda call, device, n: [150e-6, 170e-6])
    impl = dataclasses.replace(eager_timeline.IMPLEMENTATIONS["reference"],
                               unavailable=lambda device: None)
    monkeypatch.setitem(eager_timeline.IMPLEMENTATIONS, "reference", impl)
    text = eager_timeline.report("reference", Problem("tiny", 1, 8, 16, 3, "fp32"),
                                 torch.device("cuda"), 2)
    assert "medians of 2 calls, 3 device activities each" in text
    assert "| the same loop without the profiler (CUDA events, as do_bench) | 160.0 |" in text
    assert "| GPU idle between the call's kernels | 45.0 |" in text
    assert "| the largest gap, after B | 40.0 |" in text
    assert "| host: the call's start to its first launch | 14.0 |" in text
