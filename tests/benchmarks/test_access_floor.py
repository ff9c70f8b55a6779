"""benchmarks.access_floor: the one-read layouts' loads and stores with no arithmetic.

Under the interpreter the floors write what PyTorch computes from the same values (ragged
last tiles, the pairs' words, split or not); compiled for sm_90a they move every class plane
once each way with the one-read layouts' one access per plane and thread (half the planes
per thread, split), as the fused pass does, so that their time is the access pattern's alone.
"""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import access_floor  # noqa: E402
from fastmtl.ops import fused_layout as layout  # noqa: E402


def _problem(x):
    t = torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.int64, device=x.device)
    empty = torch.empty(0, device=x.device)
    return layout.Problem(x, t, None, None, None, None, None, None, torch.empty_like(x), empty,
                          empty, 255, 256)


# (dtype, SPLIT_PAIRS): fp32 pixels, the bf16 pixel pairs, the bf16 split pairs
LAYOUTS = [(torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)]


@pytest.mark.parametrize("dtype,split", LAYOUTS, ids=["fp32", "pairs", "split"])
def test_floors_write_what_pytorch_computes(dtype, split, monkeypatch):
    from fastmtl.ops.common import interpreted

    if not interpreted():
        pytest.skip("runs the kernel under TRITON_INTERPRET=1")
    monkeypatch.setattr(layout, "SPLIT_PAIRS", split)
    x = torch.randn(2, 150, 9, 34).to(dtype)  # 306 pixels: the last tile of each image ragged
    problem = _problem(x)
    assert problem.one_read and problem.pairs == (dtype == torch.bfloat16)
    assert problem.split == split and problem.block_p == (256 if problem.pairs and not split
                                                          else 128)
    for wait in (False, True):
        g = torch.full_like(x, float("nan"))
        access_floor.launch(problem, x, g, wait)
        assert access_floor.written(problem, x, g, wait), wait
        assert not access_floor.written(problem, x, g, not wait)  # the two differ
    rows = access_floor.floor_rows(problem, x, lambda call: (call(), 0.5)[1], copy_gbps=1.0)
    assert [r["floor"] for r in rows] == ["copy", "wait"] and all(r["correct"] for r in rows)
    assert rows[0]["bytes"] == 2 * x.numel() * x.element_size()


def static_report() -> list:
    """The floors as compiled for sm_90a at the benchmark's C = 150 sizes and tiles."""
    from compiled import compile_for, programs_per_sm, ptxas_usage, sass

    from benchmarks.problem import SIZES

    out = []
    for dtype, split in LAYOUTS:
        layout.SPLIT_PAIRS = split  # this process's own copy of the module
        B, H, W = SIZES["half"]
        x = torch.empty(B, 150, 8, 16, dtype=dtype)  # a probe standing in for the tensors
        problem = _problem(x)
        # the benchmark's grid, from its shapes (no data: meta tensors)
        real = _problem(torch.empty(B, 150, H, W, dtype=dtype, device="meta")).fused_grid()
        _, args, kwargs = access_floor.arguments(problem, x, torch.empty_like(x), True)
        kwargs["TILES_PER_PROGRAM"] = real[1]
        compiled = compile_for(access_floor.one_read_floor_kernel, args, kwargs, 90)
        registers, spills = ptxas_usage(compiled.asm["ptx"])
        code = [i for _, i in sass(compiled.asm["cubin"])]
        out.append(dict(dtype=str(dtype), split=problem.split, tiles_per_program=real[1],
                        registers=registers,
                        programs_per_sm=programs_per_sm(registers, problem.warps),
                        spills=spills, loads=sum("LDG." in i for i in code),
                        stores=sum("STG." in i for i in code), asm=problem.asm_planes))
    return out


def test_floors_compile_for_sm90_with_the_defaults_accesses():
    from helpers import run_compiled

    report = run_compiled(__file__, "static", timeout=600)
    assert [(r["dtype"], r["split"]) for r in report] == [(str(d), s) for d, s in LAYOUTS]
    for r in report:
        # every plane of a tile held (fp32 pixels or pair words; split: half of each word's
        # planes), one access per plane each way per tile, as the one-read layouts
        planes = 75 if r["split"] else 150
        assert r["asm"] and r["spills"] == 0 and r["registers"] <= 255, r
        # as the fused pass's 255 registers (split: 128): the same occupancy
        assert r["programs_per_sm"] == (4 if r["split"] else 2), r
        assert r["loads"] == planes * r["tiles_per_program"], r
        assert r["stores"] == planes * r["tiles_per_program"], r
    assert [r["tiles_per_program"] for r in report] == [1, 1, 1]  # ONE_TILE


if __name__ == "__main__":
    assert "TRITON_INTERPRET" not in os.environ
    {"static": lambda: print(json.dumps(static_report()))}[sys.argv[1]]()
