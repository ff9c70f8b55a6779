"""The one-read layouts with their next tiles staged through shared memory
(``fused_layout.STAGED_PLANES``: the planes loaded 16 classes at a time by
``semantic.planes_staged``, the tile loop pipelined ``STAGED_STAGES`` deep).

Under the interpreter the loads are ordinary ones and ``tl.range`` ignores its stages: these
tests check the chunked loads and the column splits (which class lands in which plane, the
last chunk part empty or full), tiles past the batch, and where staging is taken. The
compiled form (asynchronous copies, the wait, 16-byte copies) is checked statically in
test_tune_configs.py, as tuning candidates, and on a GPU below.
"""
import pytest
import torch

from helpers import make_inputs
from oracle import assert_match, run_both

from fastmtl.ops import fused_layout


@pytest.fixture
def staged(monkeypatch, problems):
    """STAGED_PLANES on (pixel pairs on as well); yields the problems built."""
    monkeypatch.setattr(fused_layout, "RESIDENT_PAIRS", True)
    monkeypatch.setattr(fused_layout, "STAGED_PLANES", True)
    return problems


def _match(C, dtype, seed, H=16, W=32, device="cpu"):
    # H x W a multiple of the tile: 128 pixels (fp32, one per thread) or 256 (pairs)
    pred, tgt = make_inputs(B=3, C=C, H=H, W=W, dtype=dtype, seed=seed, device=device)
    pred["semantic"] = pred["semantic"] * 4  # softmax far from uniform
    cw = torch.rand(C, generator=torch.Generator().manual_seed(2)).to(device) + 0.5
    kernel, expected = run_both(pred, tgt, log_vars=torch.tensor([0.3, -0.4, 0.8], device=device),
                                class_weight=cw)
    assert_match(kernel, expected, dtype)


# So few programs that each takes several tiles and the last program's last tiles lie past
# the batch; a class count that leaves the last load of 16 part empty, and one that fills
# it; both pipeline depths.
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("C", [150, 96])
@pytest.mark.parametrize("stages", [2, 3])
def test_staged_planes_match_pytorch(monkeypatch, staged, stages, C, dtype):
    monkeypatch.setattr(fused_layout, "STAGED_PROGRAMS", 2)
    monkeypatch.setattr(fused_layout, "STAGED_STAGES", stages)
    _match(C, dtype, seed=C + stages)
    assert staged and all(p.one_read and p.stages == stages and p.max_programs == 2
                          and p.pairs == (dtype == torch.bfloat16) for p in staged)
    grids = [p.fused_grid() for p in staged]
    assert all(per_program > 1 and programs * per_program > tiles
               for programs, per_program, _, tiles in grids), grids


def _problem(x):
    from fastmtl.ops import fused as ops

    t = torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.int64)
    empty = torch.empty(0)
    return ops.Problem(x, t, None, None, None, None, None, None, torch.empty_like(x), empty,
                       empty, 255, fused_layout.MAX_BLOCK_C)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_only_whole_tiles_of_unit_stride_pixels_are_staged(staged, dtype):
    """The staged loads are masked by tile and class, never by pixel: where an image ends
    inside a tile, or a plane's pixels are not at unit stride, the planes stay unstaged, and
    a launch that would stage them refuses."""
    whole = _problem(torch.zeros(2, 150, 16, 32, dtype=dtype))
    assert whole.one_read and whole.stages == 3 and whole.max_programs == 132
    ragged = _problem(torch.zeros(2, 150, 14, 22, dtype=dtype))
    last = _problem(torch.zeros(2, 16, 32, 150, dtype=dtype).permute(0, 3, 1, 2))
    for problem in (ragged, last):
        assert problem.stages == 1 and not problem.stageable()
    ragged.stages = 3
    with pytest.raises(AssertionError, match="whole tiles"):
        ragged.launch_fused(lambda kernel: None, (None,) * 8, None, None, None, None, None,
                            True, None)


def test_only_the_one_read_layouts_are_staged(staged):
    """The sweeps (C > 150) and the planes of C = 19 keep their own pipelining: given more
    stages (as a tuning candidate may), their tile loop is pipelined but their loads stay
    masked by pixel (an image here ends inside a tile)."""
    for C, dtype in ((19, torch.float32), (19, torch.bfloat16), (200, torch.float32)):
        x = torch.zeros(2, C, 14, 22, dtype=dtype)
        problem = _problem(x)
        assert not problem.one_read and problem.stages == 1, (C, dtype)
        problem.stages = 2
        launched = []

        def launch(kernel):
            class Grid:
                def __getitem__(self, grid):
                    return lambda *args, **kwargs: launched.append(kwargs)
            return Grid()

        t = torch.zeros(2, 14, 22, dtype=torch.int64)
        problem.launch_fused(launch, (x, t) + (None,) * 6, torch.empty_like(x), None, None,
                             torch.empty(1), torch.empty(1), True, torch.empty(1),
                             problem.compact_buffer("cpu"))
        (kwargs,) = launched
        assert kwargs["TILE_STAGES"] == 2 and not kwargs["STAGED"], (C, dtype)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("programs", [132, 5])
def test_compiled_staged_planes_match_pytorch_on_gpu(monkeypatch, staged, programs, dtype):
    """The pipelined tile loop as compiled (asynchronous copies two tiles ahead, 16-byte,
    masked by tile): one wave of 132 programs, and 5 programs of many tiles whose last ones
    lie past the batch."""
    monkeypatch.setattr(fused_layout, "STAGED_PROGRAMS", programs)
    _match(150, dtype, seed=8, H=32, W=72, device="cuda")
    assert staged and all(p.one_read and p.stages == 3 for p in staged)
