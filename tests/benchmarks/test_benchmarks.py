"""The benchmarks on CPU: the device check rehearsed end to end (runner, training step, plots),
the cost model, the targets, the batch search and the timer's contract. Times nothing."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = next(p for p in Path(__file__).resolve().parents if (p / "benchmarks" / "run.py").exists())
if str(REPO) not in sys.path:  # benchmarks/ is not installed with the package
    sys.path.insert(0, str(REPO))

from benchmarks import device_check, report, targets, timing, train_step  # noqa: E402
from benchmarks.problem import Problem, minimal_bytes_per_pixel  # noqa: E402

FAKE_CUDA_TESTS = '''
import pytest

@pytest.mark.cuda
def test_passes():
    pass

@pytest.mark.cuda
def test_fails():
    assert 1 == 2

@pytest.mark.cuda
def test_skips():
    pytest.skip("no reason")

def test_not_marked():
    pass
'''
NEEDS_ABSENT_MODULE = "import fastmtl_absent_module\n\ndef test_never_collected():\n    pass\n"
FILES = {"summary.md", "log.txt", "loss.json", "loss.md", "loss.png", "train-step.json",
         "train-step.md", "train-step.png"}


@pytest.fixture(scope="module")
def dry_check(tmp_path_factory):
    """``device_check.sh --dry`` with a stand-in for the CUDA tests: 1 pass, 1 failure, 1 skip."""
    tmp = tmp_path_factory.mktemp("device-check")
    (tmp / "test_fake_cuda.py").write_text(FAKE_CUDA_TESTS)
    (tmp / "test_needs_absent.py").write_text(NEEDS_ABSENT_MODULE)
    out = tmp / "out"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(["bash", "benchmarks/device_check.sh", str(out), "--dry", "--commit", "abc1234",
                           "--tests", str(tmp / "test_fake_cuda.py"), str(tmp / "test_needs_absent.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return out, proc


def _summary_json(out: Path) -> dict:
    text = (out / "summary.md").read_text()
    return json.loads(text.split("```json", 1)[1].split("```", 1)[0])


def test_dry_check_writes_every_part_into_one_folder(dry_check):
    out, proc = dry_check
    assert {p.name for p in out.iterdir()} == FILES, proc.stdout + proc.stderr
    state = _summary_json(out)
    status = {p["part"]: p["status"] for p in state["parts"]}
    assert status == {"tests": "failed", "loss": "ok", "train": "ok", "plots": "ok"}, proc.stdout
    assert proc.returncode == 1  # a part failed (the stand-in's failing test)
    assert state["tests"]["counts"] == {"passed": 1, "failed": 1, "skipped": 1, "deselected": 1, "error": 1}
    assert any("test_fails" in line for line in state["tests"]["problems"])
    assert any(line.startswith("ERROR ") and line.endswith("No module named 'fastmtl_absent_module'")
               for line in state["tests"]["problems"]), state["tests"]["problems"]
    host = state["host"]
    assert host["commit"] == "abc1234"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", host["date"])
    assert host["packages"]["torch"] == importlib.metadata.version("torch")
    for png in ("loss.png", "train-step.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The summary is printed last, environment first, with the targets and the training step.
    tail = proc.stdout[proc.stdout.index("# fastmtl device check"):]
    for heading in ("| part", "## Targets", "## Per-call overhead", "## Training step"):
        assert heading in tail
    if importlib.util.find_spec("liger_kernel") is None:
        assert "liger-kernel not installed" in proc.stdout


def test_dry_check_loss_results(dry_check):
    out, _ = dry_check
    result = json.loads((out / "loss.json").read_text())
    assert result["kind"] == "loss" and "partial" not in result
    assert result["device"]["type"] == "cpu"
    assert result["copy_bandwidth"]["moved_bytes"] == 2 * result["copy_bandwidth"]["bytes"]
    rows = result["results"]
    cases = {(r["classes"], r["dtype"]) for r in rows}
    assert cases == {(19, "fp32"), (19, "bf16"), (150, "fp32"), (150, "bf16")}  # the suite's cases
    assert len({(r["impl"], r["classes"], r["dtype"]) for r in rows}) == len(rows)  # merged, not repeated
    for r in rows:
        assert r["shape"] == "2x16x32" and r["mode"] == "fwd+bwd"
        assert 0 < r["min_s"] <= r["p25_s"] <= r["median_s"] <= r["p75_s"] <= r["max_s"]
        assert r["wall_s"] > 0 and r["host_s"] > 0
        assert r["minimal_bytes"] == r["pixels"] * r["bytes_per_pixel"]
        assert r["gbps"] == pytest.approx(r["minimal_bytes"] / r["median_s"] / 1e9)
        assert r["pct_copy_bw"] == pytest.approx(100 * r["gbps"] / result["copy_bandwidth"]["gbps"])
        assert r["peak_bytes"] is None and r["kernels"] is None  # measured on CUDA only
        e = 4 if r["dtype"] == "fp32" else 2
        low = r["impl"].startswith("upsample")
        h, w = (math.ceil(r["height"] / 8), math.ceil(r["width"] / 8)) if low else (r["height"], r["width"])
        assert r["gradient_bytes"] == r["batch"] * h * w * (r["classes"] + 3) * e + 12
    reference = {(r["classes"], r["dtype"]) for r in rows if r["impl"] == "reference"}
    assert reference == cases
    skipped = {s["impl"]: s["reason"] for s in result["skipped"]}
    assert "CUDA" in skipped["triton"] and "CUDA" in skipped["triton-check-labels"]
    assert "compile" in skipped
    markdown = (out / "loss.md").read_text()
    assert result["command"] in markdown
    for heading in ("## Targets", "## Results", "## Speed-ups", "## Per-call overhead"):
        assert heading in markdown
    assert "- triton: needs CUDA" in markdown


def test_kernel_table_lists_each_kernel_with_its_share_of_the_median():
    from benchmarks.report import kernels_table

    row = {"impl": "triton", "shape": "8x1024x2048", "classes": 19, "dtype": "fp32", "mode": "fwd+bwd",
           "median_s": 2e-3, "kernels": {"us_per_call": {"fused_loss_kernel": 1500.0, "partial_sums": 20.0},
                                         "launches_per_call": 2.0}}
    peer = {**row, "impl": "compile"}  # peers' kernels are not listed
    text = kernels_table([row, peer, {**row, "mode": "fwd"}])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]]
    assert [c[0] for c in cells] == ["triton"] * 3
    assert [c[4:] for c in cells[:2]] == [["fused_loss_kernel", "1500", "75.0"], ["partial_sums", "20.0", "1.0"]]
    assert cells[2][4] == "(2 launches per call)"
    assert kernels_table([peer, {**row, "kernels": {"error": "profiler failed"}}]) is None


def test_dry_check_training_step(dry_check):
    out, _ = dry_check
    result = json.loads((out / "train-step.json").read_text())
    assert result["kind"] == "train-step" and result["settings"]["amp"] == "bf16"
    rows = {r["variant"]: r for r in result["results"]}
    assert set(rows) == set(train_step.VARIANTS)
    for r in rows.values():
        assert r["error"] is None, r
        assert 0 < r["median_s"] and r["largest_batch"] is None and r["largest_batch_note"] == "CUDA only"
        assert (r["model"], r["size"], r["batch"]) == ("tiny", "32x64", 1)
    eager = rows["eager"]["median_s"]
    for name, r in rows.items():
        assert r["x_eager"] == pytest.approx(eager / r["median_s"])
        base = rows["no-loss"]["median_s"]
        assert r["loss_share_time"] == (None if name == "no-loss" else pytest.approx(1 - base / r["median_s"]))


def test_design_worked_example():
    # docs/kernel.md: 4C read + 4C written (x, dx) + 8 (t) + 25 (o, g, do, m) + 12 (d, z, dd) ~ 197 B.
    by_hand = 4 * 19 + 4 * 19 + 8 + (8 + 8 + 8 + 1) + (4 + 4 + 4)
    assert by_hand == 197
    assert minimal_bytes_per_pixel(19, torch.float32, torch.int64) == by_hand
    full = Problem("full", 8, 1024, 2048, 19, "fp32", "int64").minimal_bytes(backward=True)
    assert full == by_hand * 8 * 1024 * 2048
    assert abs(full / 1e9 - 3.3) < 0.05  # "about 3.3 GB"


def test_bytes_scale_with_dtype_classes_and_labels():
    # bf16 halves every prediction/regression byte; the bool mask and the labels keep theirs.
    assert minimal_bytes_per_pixel(19, torch.bfloat16, torch.int64) == 2 * 19 * 2 + 8 + 3 * 4 + 1 + 3 * 2
    assert minimal_bytes_per_pixel(150, torch.float32, torch.uint8) == 2 * 150 * 4 + 1 + 25 + 12
    # Forward alone reads everything once and writes nothing.
    assert minimal_bytes_per_pixel(19, torch.float32, torch.int64, backward=False) == 19 * 4 + 8 + 17 + 8


def _row(impl, shape, classes, dtype, ms, pct=None, peak=None, grads=None, graph_pct=None):
    b, h, w = (int(v) for v in shape.split("x"))
    return {"impl": impl, "shape": shape, "batch": b, "height": h, "width": w, "pixels": b * h * w,
            "classes": classes, "dtype": dtype, "target_dtype": "int64", "mode": "fwd+bwd",
            "median_s": ms / 1e3, "pct_copy_bw": pct, "graph_pct_copy_bw": graph_pct, "peak_bytes": peak,
            "peak_over_gradients": None if grads is None else peak / grads}


def test_targets_read_the_largest_case_and_compare_with_the_goals():
    low = 8 * 128 * 256 * 22 * 4 + 12  # fp32 gradients of 1/8-resolution heads, C=19
    rows = [
        _row("triton", "8x1024x2048", 19, "fp32", 1.0, pct=90.0, peak=105, grads=100, graph_pct=95.0),
        _row("triton-check-labels", "8x1024x2048", 19, "fp32", 1.04),
        _row("reference", "8x1024x2048", 19, "fp32", 5.0),
        _row("compile", "8x1024x2048", 19, "fp32", 1.5),
        _row("upsample-fused", "8x1024x2048", 19, "fp32", 0.25, peak=low),
        _row("upsample-interp-eager", "8x1024x2048", 19, "fp32", 6.0),
        _row("triton", "8x1024x2048", 19, "bf16", 0.8, pct=70.0),
        # a smaller C=19 case whose figures would meet every goal: not the one read
        _row("triton", "2x128x256", 19, "fp32", 0.01, pct=99.0),
        _row("reference", "2x128x256", 19, "fp32", 1.0),
    ]
    report.add_speedups(rows)
    result = {"results": rows, "skipped": [{"impl": "compile", "case": None, "reason": "slow (x); y"}]}
    got = {e["target"]: e for e in targets.evaluate(result)}
    expect = {
        "C=19 fp32: % of copy bandwidth": (90.0, True),
        "C=19 bf16: % of copy bandwidth": (70.0, False),
        "C=19 fp32: % of copy bandwidth, graph replay": (95.0, True),
        "C=19: bf16 faster than fp32": (1.0 / 0.8, True),
        "C=19 fp32: x eager reference": (5.0, True),
        "C=19 fp32: x torch.compile": (1.5, False),
        "C=19 fp32: peak / gradient bytes": (1.05, True),
        "C=19 fp32: label check overhead": (0.04, False),
        "1/8 heads C=19 fp32: x full-resolution fused": (4.0, True),
        "1/8 heads C=19 fp32: x F.interpolate + eager": (24.0, True),
        "1/8 heads C=19 fp32: peak / low-res gradient bytes": (1.0, True),
    }
    for name, (value, met) in expect.items():
        assert got[name]["value"] == pytest.approx(value), name
        assert got[name]["met"] is met, name
        assert got[name]["case"].startswith("8x1024x2048"), name
    assert got["C=19 bf16: % of copy bandwidth, graph replay"]["value"] is None
    assert got["C=19 bf16: x torch.compile"]["value"] is None
    assert got["C=19 bf16: x torch.compile"]["why"] == "compile: slow"
    assert got["C=150 fp32: x torch.compile"]["met"] is None
    assert "| C=19 fp32: label check overhead | <= 3% | +4.0% | no |" in targets.table(list(got.values()))
    # A run with the paired timing of the two calls reads that instead of the two medians.
    rows[1]["label_check_overhead"] = 0.01
    paired = {e["target"]: e for e in targets.evaluate(result)}["C=19 fp32: label check overhead"]
    assert paired["value"] == 0.01 and paired["met"] is True


def test_unmet_eager_targets_name_the_rows_whose_host_was_slower_than_their_kernels():
    """A row whose median host time per call exceeds its kernels' (graph replay) time is
    host-bound; an unmet target read from its eager median says so in the case column,
    with both figures. A met target, or a row whose host kept up, carries no note."""
    fp32 = _row("triton", "8x1024x2048", 19, "fp32", 0.90, pct=87.0)
    bf16 = _row("triton", "8x1024x2048", 19, "bf16", 0.84, pct=48.0)
    fp32.update(host_s=0.56e-3, graph_median_s=0.89e-3)  # the host kept up
    bf16.update(host_s=0.71e-3, graph_median_s=0.50e-3)
    low = _row("upsample-fused", "8x1024x2048", 19, "bf16", 0.87)
    low.update(host_s=0.79e-3, graph_median_s=0.62e-3)
    rows = [fp32, bf16, low]
    report.add_speedups(rows)
    got = {e["target"]: e for e in targets.evaluate({"results": rows})}
    assert got["C=19 bf16: % of copy bandwidth"]["host_bound"] == (
        "triton host-bound: 0.71 ms of host time per call, 0.50 ms of kernels")
    assert "host_bound" not in got["C=19 fp32: % of copy bandwidth"]
    assert "host_bound" not in got["C=19 bf16: % of copy bandwidth, graph replay"]
    # The ratio to the full-resolution call suffers from the 1/8 call's host, not the other's.
    assert got["1/8 heads C=19 bf16: x full-resolution fused"]["host_bound"].startswith(
        "upsample-fused host-bound: 0.79 ms")
    text = targets.table(list(got.values()))
    assert ("| C=19 bf16: % of copy bandwidth | >= 80% | 48.0% | no | 8x1024x2048 bf16 "
            "(triton host-bound: 0.71 ms of host time per call, 0.50 ms of kernels) |") in text
    assert "| C=19 fp32: % of copy bandwidth | >= 85% | 87.0% | yes | 8x1024x2048 fp32 |" in text


def test_paired_overhead_times_both_calls_in_alternating_rounds(monkeypatch):
    """A clock that only the two calls move (1 s per call of a, 1.25 s per call of b): the
    overhead is exactly 0.25, whichever call a round starts with."""
    now = [0.0]
    order = []

    def call(name, seconds):
        def run():
            order.append(name)
            now[0] += seconds
        return run

    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    got = timing.paired_overhead(call("a", 1.0), call("b", 1.25), torch.device("cpu"), rounds=4,
                                 calls=3)
    assert got == pytest.approx(0.25)
    assert "".join(order) == "aaabbb" "bbbaaa" "aaabbb" "bbbaaa"


def test_run_problem_pairs_the_label_check_with_the_plain_call(monkeypatch):
    """With both fused rows in one problem, the check-labels row carries the paired timing
    of the two calls, each call bound to its own loss (CPU stand-ins that count calls)."""
    from benchmarks import run
    from benchmarks.implementations import Implementation

    counts = {"triton": 0, "triton-check-labels": 0}

    def counting(name):
        def build(check_labels=False):
            def loss(predictions, targets, log_vars):
                counts[name] += 1
                return sum(p.float().mean() for p in predictions.values()) + log_vars.sum()
            return loss
        return Implementation(name, name, build)

    paired = []

    def fake_paired(fn_a, fn_b, device):
        before = dict(counts)
        fn_a()
        fn_b()
        paired.append({k: counts[k] - before[k] for k in counts})
        return 0.02

    monkeypatch.setattr(run, "paired_overhead", fake_paired)
    settings = {"modes": ["fwd+bwd"], "check_labels": False, "warmup": 0, "repeats": 2}
    problem = Problem("tiny", 1, 8, 16, 3, "fp32", "int64")
    rows = run.run_problem(problem, [counting("triton"), counting("triton-check-labels")],
                           settings, torch.device("cpu"), [])
    assert [r["impl"] for r in rows] == ["triton", "triton-check-labels"]
    assert "label_check_overhead" not in rows[0] and rows[1]["label_check_overhead"] == 0.02
    assert paired == [{"triton": 1, "triton-check-labels": 1}]


def test_targets_of_the_committed_baseline_are_its_own_rows():
    path = REPO / "benchmarks" / "results" / "nvidia-h100-80gb-hbm3-2026-11-25.json"
    result = json.loads(path.read_text())
    got = {e["target"]: e["value"] for e in targets.evaluate(result)}
    row = {(r["impl"], r["dtype"]): r for r in result["results"]}
    assert got["C=19 fp32: % of copy bandwidth"] == row["triton", "fp32"]["pct_copy_bw"]
    assert got["C=19 bf16: x torch.compile"] == row["triton", "bf16"]["speedup"]["compile"]
    assert got["1/8 heads C=19 fp32: x F.interpolate + eager"] == \
        row["upsample-fused", "fp32"]["speedup"]["upsample-interp-eager"]
    assert got["C=150 fp32: % of copy bandwidth"] is None  # not in that run


def test_largest_batch_doubles_then_bisects():
    tried = []

    def fits(b):
        tried.append(b)
        return b <= 37
    found = train_step.largest_batch(fits, start=8, cap=512, deadline=math.inf)
    assert found == {"largest_batch": 37, "fails_at": 38, "status": "exact", "trials": len(tried)}
    assert tried[:4] == [8, 16, 32, 64]
    assert train_step.largest_batch(lambda b: True, 8, 20, math.inf)["status"] == "cap"
    assert train_step.largest_batch(lambda b: False, 8, 20, math.inf)["largest_batch"] == 0
    assert train_step.largest_batch(fits, 8, 512, deadline=0)["status"] == "time limit"


def test_batch_search_recovers_from_out_of_memory():
    def step(images, targets):
        if images.shape[0] > 5:
            raise torch.OutOfMemoryError("stand-in: batch too large")
        return images.sum()
    errors = []
    fits = train_step.fits_on_device(step, (8, 16), 19, torch.device("cpu"), errors)
    assert train_step.largest_batch(fits, 2, 64, math.inf)["largest_batch"] == 5
    assert errors == []

    def failing_step(images, targets):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")
    fits = train_step.fits_on_device(failing_step, (8, 16), 19, torch.device("cpu"), errors)
    assert train_step.largest_batch(fits, 2, 64, math.inf)["largest_batch"] == 0
    assert errors[0] == "batch 2: RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED"


def test_do_bench_contract(monkeypatch):
    """timing.do_bench_times drives triton.testing.do_bench; here on a stand-in driver whose
    events read perf_counter, so the CUDA path's arguments and units are checked on CPU."""
    import triton.runtime

    class FakeEvent:
        def __init__(self, enable_timing=False):
            self.t = None

        def record(self):
            self.t = time.perf_counter()

        def elapsed_time(self, end):
            return (end.t - self.t) * 1e3

    class Interface:
        Event = FakeEvent

        @staticmethod
        def synchronize():
            pass

    class Driver:
        def get_device_interface(self):
            return Interface

        def get_empty_cache_for_benchmark(self):
            return torch.empty(1024)

        def clear_cache(self, cache):
            cache.zero_()

    monkeypatch.setattr(triton.runtime.driver, "_active", Driver())
    times = timing.do_bench_times(lambda: time.sleep(0.002), lambda: None, repeats=10)
    assert 3 <= len(times) <= 40
    assert all(0.002 <= t < 1 for t in times)  # seconds, each at least the sleep


def test_run_part_stops_a_part_and_its_children_at_the_time_limit(tmp_path):
    script = ("import subprocess, sys, time; "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print('child', child.pid, flush=True); time.sleep(60)")
    with (tmp_path / "log").open("w") as log:
        start = time.monotonic()
        status, rc = device_check.run_part([sys.executable, "-c", script], 3, log, dict(os.environ))
    assert (status, rc) == ("timeout", None)
    assert time.monotonic() - start < 30
    pid = int(re.search(r"child (\d+)", (tmp_path / "log").read_text()).group(1))
    for _ in range(50):  # gone, or a zombie waiting for init to reap it
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
        except OSError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {pid} outlived the part's time limit")


def test_missing_packages_alone_do_not_fail_the_tests_part():
    collect = {"counts": {"passed": 3, "error": 1}, "complete": True,
               "problems": ["ERROR tests/data/test_data.py: ModuleNotFoundError: No module named "
                            "'cityscapesscripts'"]}
    assert device_check.only_missing_modules(collect, ["cityscapesscripts"])
    assert not device_check.only_missing_modules(collect, ["liger_kernel"])
    failed = {**collect, "counts": {"passed": 2, "failed": 1, "error": 1}}
    assert not device_check.only_missing_modules(failed, ["cityscapesscripts"])


def test_parse_pytest_without_a_final_line():
    stopped = "tests/a.py::test_one PASSED [ 33%]\ntests/a.py::test_two FAILED [ 66%]\ntests/a.py::test_three "
    assert device_check.parse_pytest(stopped) == {"counts": {"passed": 1, "failed": 1}, "complete": False,
                                                  "problems": []}


def test_host_time_with_stubbed_launches_profiles_the_python_side(capsys):
    from benchmarks import host_time
    from fastmtl.ops import fused

    launch_for = fused.launch_for
    assert host_time.main(["--stub-launches", "--calls", "3", "--top", "2", "--size", "1x8x16",
                           "--impls", "triton", "upsample-fused"]) == 0
    out = capsys.readouterr().out
    found = re.findall(r"(\d+) us per fwd\+bwd call \(Python side, launches stubbed; the "
                       r"first launch (\d+) us after the call's start; every launch at "
                       r"([\d, ]+) us\)", out)
    assert len(found) == 2, out
    for call, first, every in found:
        times = [int(t) for t in every.split(", ")]
        # forward and backward's launches, in the order they came, the first one first
        assert len(times) >= 5 and times == sorted(times) and times[0] == int(first), found
        assert 0 < int(first) <= int(call), found
    assert out.count("function calls") == 4  # each profiled, by cumulative and own time
    assert fused.launch_for is launch_for  # the stubs are gone afterwards


def test_host_time_stubs_the_label_checks_cuda_path_with_good_labels(monkeypatch):
    # Every call takes a row, each launch writes it as a check of good labels, and the
    # next call hands it back: the pool stays one chunk, nothing is left to read, and the
    # module's own functions are back afterwards.
    from benchmarks import host_time
    from benchmarks.problem import Problem
    from fastmtl.ops import label_check

    for name in ("_free_slots", "_taken"):
        monkeypatch.setattr(label_check, name, {})
    monkeypatch.setattr(label_check, "_pending", [])
    zero_copy = label_check._zero_copy
    with host_time.stubbed_launches():
        call = host_time.warm_call("triton-check-labels", Problem("x", 1, 8, 16, 19, "fp32"),
                                   torch.device("cpu"), warmup=3)
        for _ in range(label_check.SLOTS_PER_CHUNK + 5):
            call()
        assert len(label_check._pending) == 1  # this call's, unread
        assert label_check._pending[-1][0].host[0] == 0  # written as good
        label_check.raise_pending_label_errors()
        free = label_check._free_slots[None]
        assert len(free) == label_check.SLOTS_PER_CHUNK and not label_check._taken
    assert label_check._zero_copy is zero_copy


def test_host_time_profile_drops_each_calls_outputs_before_the_next():
    """Kept alive, every call's gradients would need fresh device memory, and the profile
    would charge the allocator's work to the op (as it once did, under torch.empty_like)."""
    import weakref

    from benchmarks import host_time

    class Output:
        pass

    last = []

    def call():
        assert not last or last[-1]() is None, "the previous call's output is still alive"
        out = Output()
        last.append(weakref.ref(out))
        return out

    host_time._repeat(call, 5)
    assert len(last) == 5


def test_parse_pytest_of_xdist_workers_without_a_final_line():
    stopped = ("tests/a.py::test_one \n[gw0] [ 33%] PASSED tests/a.py::test_one \n"
               "tests/a.py::test_two \n[gw1] [ 66%] FAILED tests/a.py::test_two \n"
               "[gw0] [100%] SKIPPED tests/a.py::test_three \ntests/a.py::test_four \n")
    assert device_check.parse_pytest(stopped)["counts"] == {"passed": 1, "failed": 1, "skipped": 1}


def test_cuda_tests_use_xdist_workers_where_installed(monkeypatch, tmp_path):
    args = device_check.parse_args([str(tmp_path)])
    for found in (True, False):
        monkeypatch.setattr(device_check.importlib.util, "find_spec",
                            lambda name, found=found: object() if found and name == "xdist" else None)
        tests = device_check.commands(args, tmp_path, 60)["tests"]
        assert ("-n" in tests) == found, tests
    dry = device_check.parse_args([str(tmp_path), "--dry"])
    monkeypatch.setattr(device_check.importlib.util, "find_spec", lambda name: object())
    assert "-n" not in device_check.commands(dry, tmp_path, 60)["tests"]  # the CPU rehearsal


def test_one_call_applies_its_settings_during_the_calls_only(monkeypatch):
    from benchmarks import one_call
    from fastmtl.ops import fused_layout, upsample_tiles

    seen = []
    monkeypatch.setattr(one_call, "step", lambda *a: seen.append(
        (upsample_tiles.current().semantic_registers, upsample_tiles.current().band_rows,
         fused_layout.RESIDENT_PAIRS)))
    pairs = fused_layout.RESIDENT_PAIRS
    assert one_call.main(["triton", "--size", "1x8x16", "--device", "cpu", "--calls", "2",
                          "--set", "semantic_registers=128", "--set", "band_rows=(4, 2)",
                          "--set", f"RESIDENT_PAIRS={not pairs}"]) == 0
    assert seen == [(128, (4, 2), not pairs)] * 2
    assert upsample_tiles.current() == upsample_tiles.DEFAULT
    assert fused_layout.RESIDENT_PAIRS == pairs
    for bad in ("semantic_registers", "no_such_field=1", "band_rows=(4,"):
        with pytest.raises(ValueError):
            one_call.parse_sets([bad])


def test_one_call_runs_the_upsample_loss_under_the_interpreter(capsys):
    from benchmarks import one_call

    assert one_call.main(["upsample-fused", "--size", "1x16x24", "--device", "cpu", "--calls", "1",
                          "--set", "semantic_registers=128"]) == 0
    assert "1 forward + backward calls of upsample-fused, 1x16x24" in capsys.readouterr().out


def test_host_time_cuda_api_rows_are_the_cuda_functions_per_loss_call():
    from types import SimpleNamespace as Avg

    from benchmarks import host_time

    averages = [Avg(key="cudaLaunchKernel", count=40, cpu_time_total=200.0),
                Avg(key="cuLaunchKernelEx", count=60, cpu_time_total=420.0),
                Avg(key="aten::empty", count=90, cpu_time_total=300.0),
                Avg(key="cudnnConvolution", count=10, cpu_time_total=99.0),
                Avg(key="cudaFree", count=1, cpu_time_total=950.0)]
    assert host_time.api_rows(averages, calls=10) == [
        ("cudaFree", 0.1, 95.0), ("cuLaunchKernelEx", 6.0, 42.0), ("cudaLaunchKernel", 4.0, 20.0)]


def test_host_time_cuda_api_needs_cuda(capsys):
    from benchmarks import host_time

    assert host_time.main(["--cuda-api", "--device", "cpu", "--impls", "triton"]) == 0
    assert "## triton: skipped (needs CUDA" in capsys.readouterr().out


def test_host_time_api_report_renders_a_real_profile():
    """The report's profiler calls and fields, on a CPU call (no CUDA rows there)."""
    from benchmarks import host_time

    x = torch.ones(64)
    report = host_time.api_report(lambda: (x * 2).sum(), calls=5, device=torch.device("cpu"),
                                  top=5)
    assert "| (all of them) | 0.00 | 0.0 |" in report
    assert "aten::mul" in report and "aten::sum" in report
