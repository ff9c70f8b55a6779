"""benchmarks.access_floor: the one-read layouts' loads and stores with no arithmetic.

Under the interpreter the floors write what PyTorch computes from the same values (ragged
last tiles, the pairs' words); compiled for sm_90a they move every class plane once each
way with the default's one access per plane and thread, as the fused pass does, so that
their time is the access pattern's alone.
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
    t = torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.int64)
    empty = torch.empty(0)
    return layout.Problem(x, t, None, None, None, None, None, None, torch.empty_like(x), empty,
                          empty, 255, 256)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_floors_write_what_pytorch_computes(dtype):
    from fastmtl.ops.common import interpreted

    if not interpreted():
        pytest.skip("runs the kernel under TRITON_INTERPRET=1")
    x = torch.randn(2, 150, 9, 34).to(dtype)  # 306 pixels: the last tile of each image ragged
    problem = _problem(x)
    assert problem.one_read and problem.pairs == (dtype == torch.bfloat16)
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
    for dtype in (torch.float32, torch.bfloat16):
        B, H, W = SIZES["half"]
        x = torch.empty(B, 150, 8, 16, dtype=dtype)  # a probe standing in for the tensors
        problem = _problem(x)
        real = layout.tile_grid(B, H * W, problem.block_p, problem.max_programs)
        _, args, kwargs = access_floor.arguments(problem, x, torch.empty_like(x), True)
        kwargs["TILES_PER_PROGRAM"] = real[1]
        compiled = compile_for(access_floor.one_read_floor_kernel, args, kwargs, 90)
        registers, spills = ptxas_usage(compiled.asm["ptx"])
        code = [i for _, i in sass(compiled.asm["cubin"])]
        out.append(dict(dtype=str(dtype), tiles_per_program=real[1], registers=registers,
                        programs_per_sm=programs_per_sm(registers, problem.warps),
                        spills=spills, loads=sum("LDG." in i for i in code),
                        stores=sum("STG." in i for i in code), asm=problem.asm_planes))
    return out


def test_floors_compile_for_sm90_with_the_defaults_accesses():
    from helpers import run_compiled

    report = run_compiled(__file__, "static", timeout=600)
    assert [r["dtype"] for r in report] == ["torch.float32", "torch.bfloat16"]
    for r in report:
        # every plane of a tile held (fp32 pixels or pair words), one access per plane each
        # way per tile, as the default (fp32: two tiles per program, the pairs one)
        assert r["asm"] and r["spills"] == 0 and r["registers"] <= 255, r
        assert r["programs_per_sm"] == 2, r  # as the default's 255 registers: same occupancy
        assert r["loads"] == 150 * r["tiles_per_program"], r
        assert r["stores"] == 150 * r["tiles_per_program"], r
    assert [r["tiles_per_program"] for r in report] == [2, 1]


if __name__ == "__main__":
    assert "TRITON_INTERPRET" not in os.environ
    {"static": lambda: print(json.dumps(static_report()))}[sys.argv[1]]()
