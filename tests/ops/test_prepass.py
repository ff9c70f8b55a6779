"""The pre-pass (normaliser_kernel + prepare_kernel) against counts made with torch.

Every launch shape the pre-pass can take must give the same normalisers and the same
first bad label: several tiles per program, the loads of several tiles issued together,
a ragged last tile, tiles past the end of the grid, strided targets, class weights.
"""
import pytest
import torch

from helpers import make_inputs, random_class_weight

import fastmtl.kernels as K
from fastmtl.ops import fused_layout as layout
from fastmtl.ops.fused import REDUCE_BLOCK

IGNORE = 255


def _prepass(pred, tgt, cw, vector, max_programs, unroll):
    x, o, d = pred["semantic"], pred["instance"], pred["depth"]
    t, m, z = tgt["semantic"], tgt["instance_mask"], tgt["depth"]
    problem = layout.Problem(x, t, cw, o, tgt["instance"], m, d, z, None, None, None, IGNORE,
                             64)
    problem.configure_prepass(vector, max_programs, unroll)
    n = problem.n_pre
    norm_part = torch.full((3, n), float("nan"))
    bad_part = torch.full((3, n), -7, dtype=torch.int64)
    state = torch.full((K.STATE_ROWS, K.SLOTS), float("nan"), dtype=torch.float64)
    bad = torch.full((3,), -7, dtype=torch.int64)
    launch = lambda kernel: kernel  # noqa: E731
    problem.launch_normalisers(launch, (x, t, cw, o, tgt["instance"], m, d, z), norm_part,
                               bad_part, state)
    K.prepare_kernel[(1,)](norm_part, bad_part, n, torch.zeros(3), 0, 1, 2, 1.0, 0.5, 0.5,
                           state, bad, HAS_COEF=True, USE_LOG_VARS=True, BLOCK_R=REDUCE_BLOCK)
    return state[0, :3], bad, problem.prepass  # row 0: N_k of the three task slots


def _expected(tgt, cw, C):
    t, m, z = tgt["semantic"].long(), tgt["instance_mask"], tgt["depth"]
    valid = (t != IGNORE) & (t >= 0) & (t < C)
    n_sem = cw[t.clamp(0, C - 1)][valid].double().sum() if cw is not None else valid.sum()
    bad = (t != IGNORE) & ~valid
    flat = bad.reshape(-1).nonzero()
    first = int(flat[0]) if len(flat) else 2 ** 63 - 1
    value = int(t.reshape(-1)[first]) if len(flat) else 0
    n_dep = ((z > 0) & (z < float("inf"))).sum()
    return ([float(n_sem), float(m.sum()), float(n_dep)], [int(bad.sum()), first, value])


@pytest.mark.parametrize("vector,max_programs,unroll", [
    (4, 512, 4),   # the default
    (4, 3, 4),     # many tiles per program, four issued together, tiles past the end
    (2, 5, 2),
    (8, 1, 1),     # one program walks every tile
    (1, 1000, 4),  # more programs than tiles: one tile each
])
@pytest.mark.parametrize("weighted", [False, True])
def test_normalisers_and_first_bad_label_match_torch(vector, max_programs, unroll, weighted):
    C = 7
    pred, tgt = make_inputs(B=3, C=C, H=13, W=37, seed=4)  # ragged last tile of each image
    t = tgt["semantic"]
    t.view(-1)[[700, 301, 1200]] = torch.tensor([9, -2, 40])  # the first bad one is at 301
    cw = random_class_weight(C) if weighted else None
    n, bad, (programs, per_program, _, tiles) = _prepass(pred, tgt, cw, vector, max_programs,
                                                          unroll)
    expected_n, expected_bad = _expected(tgt, cw, C)
    assert per_program * programs >= tiles
    assert n.tolist() == pytest.approx(expected_n, rel=1e-6)
    assert bad.tolist() == expected_bad == [3, 301, -2]


def test_strided_targets_and_no_bad_label():
    C = 5
    pred, tgt = make_inputs(B=2, C=C, H=24, W=20, seed=5)
    tgt = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) for k, v in tgt.items()}
    n, bad, _ = _prepass(pred, tgt, None, 4, 2, 4)
    expected_n, expected_bad = _expected(tgt, None, C)
    assert n.tolist() == pytest.approx(expected_n, rel=1e-6)
    assert bad.tolist() == expected_bad == [0, 2 ** 63 - 1, 0]


def test_tuning_sweep_starts_with_the_default_and_runs_on_cpu(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from benchmarks import tune_prepass

    assert tune_prepass.CANDIDATES[0] == (layout.PREPASS_VECTOR, layout.PREPASS_PROGRAMS,
                                          layout.PREPASS_UNROLL)
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.tune_prepass", "--smoke", "--out",
                           str(tmp_path)], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "tune_prepass.json").read_text())
    assert [c["dtype"] for c in result["cases"]] == ["fp32", "bf16"]
    for case in result["cases"]:
        assert len(case["rows"]) == len(tune_prepass.CANDIDATES)
        assert all(r.get("correct") and r["median_us"] > 0 for r in case["rows"]), case["rows"]
    assert "| 4 | 512 | 4 |" in (tmp_path / "tune_prepass.md").read_text()
