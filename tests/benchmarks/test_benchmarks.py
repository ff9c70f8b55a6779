"""The benchmark runner in quick CPU mode: output structure and the cost model. Times nothing."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is not installed with the package
    sys.path.insert(0, str(REPO))

from benchmarks.problem import Problem, minimal_bytes_per_pixel  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--cpu-threads", "1",
           "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (json_path,) = out.glob("*.json")
    return json_path, json.loads(json_path.read_text()), proc.stdout


def test_design_worked_example():
    # DESIGN.md: 4C read + 4C written (x, dx) + 8 (t) + 25 (o, g, do, m) + 12 (d, z, dd) ~ 197 B.
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


def test_quick_cpu_run_writes_json_and_markdown(quick_run):
    json_path, result, stdout = quick_run
    assert re.fullmatch(r"cpu-[a-z0-9-]+-\d{4}-\d{2}-\d{2}", json_path.stem)
    assert json_path.stem == f"{result['device']['slug']}-{result['date']}"
    for key in ("python", "torch", "triton", "driver"):
        assert key in result["versions"]
    assert result["command"].startswith("python -m benchmarks --quick")
    assert result["device"]["type"] == "cpu"
    assert result["copy_bandwidth"]["gbps"] > 0
    assert result["copy_bandwidth"]["moved_bytes"] == 2 * result["copy_bandwidth"]["bytes"]

    rows = result["results"]
    assert {(r["impl"], r["dtype"], r["mode"]) for r in rows} >= {
        ("reference", d, m) for d in ("fp32", "bf16") for m in ("fwd+bwd", "fwd")}
    for r in rows:
        assert 0 < r["min_s"] <= r["p25_s"] <= r["median_s"] <= r["p75_s"] <= r["max_s"]
        assert r["minimal_bytes"] == r["pixels"] * r["bytes_per_pixel"]
        assert r["gbps"] == pytest.approx(r["minimal_bytes"] / r["median_s"] / 1e9)
        assert r["pct_copy_bw"] == pytest.approx(100 * r["gbps"] / result["copy_bandwidth"]["gbps"])
        assert r["peak_bytes"] is None  # measured on CUDA only
        assert r["impl"] not in r["speedup"]
    fp32 = next(r for r in rows if (r["dtype"], r["classes"], r["mode"]) == ("fp32", 19, "fwd+bwd"))
    assert fp32["bytes_per_pixel"] == 197

    skipped = {s["impl"]: s["reason"] for s in result["skipped"]}
    assert "CUDA" in skipped["triton"]
    assert skipped["liger"]  # not installed, or needs CUDA
    assert {"compile", "compile-max-autotune"} <= skipped.keys()

    markdown = json_path.with_suffix(".md").read_text()
    assert result["command"] in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| impl"))
    for column in ("median ms", "IQR ms", "bytes/px", "GB/s", "% copy", "peak MiB"):
        assert column in header
    assert "- triton: needs CUDA" in markdown
    assert "| reference" in stdout


def test_plot_from_json(quick_run, tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.plot import plot

    png = plot(quick_run[0], tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
