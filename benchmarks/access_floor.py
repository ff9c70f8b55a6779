"""The memory floor of the one-read layouts' access pattern (C = 150), for ``benchmarks.tune``.

The fused pass at C = 150 takes about the copy's time plus its instructions' issue time,
added (docs/kernel.md, "One tile per program"), as if no warp's arithmetic hid under
another's loads. This kernel moves the class planes exactly as the library's default does
(the same tiles, grid, threads and inline PTX accesses: every plane of a tile loaded by
its thread, then every plane stored) with no arithmetic, so that its time is what that
pattern costs the memory system alone. The split pixel pairs (``Problem.split``) share each
word between two neighbouring threads, each moving half of its planes, as the fused pass.

- ``copy``: each plane stored as it was loaded, the stores free to follow each load;
- ``wait``: each plane stored minus the maximum over the thread's planes, so that no store
  leaves before every load of the thread has arrived, as in the fused pass (whose split
  threads also exchange their maxima, by a shuffle the floor leaves out).

Near the copy's time, the fused pass's excess over it is its arithmetic; near the fused
pass's, the pattern itself is the limit.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

import fastmtl.ops  # noqa: F401  (first: it maps kernels/ as fastmtl.kernels in a checkout)
from fastmtl.kernels.semantic import _store, planes_load


@triton.jit
def one_read_floor_kernel(x_ptr, g_ptr, HW, tiles_per_image, n_tiles, CLASSES: tl.constexpr,
                          BLOCK_P: tl.constexpr, TILES_PER_PROGRAM: tl.constexpr,
                          WAIT: tl.constexpr, ASM: tl.constexpr, SPLIT: tl.constexpr = False):
    # BLOCK_P values (pixels or words) per plane and tile, one per thread, or SPLIT: two
    # threads per word, thread r taking word r // 2 and planes (r % 2) * CLASSES / 2 onwards
    # (as semantic.tile_split_pairs and the fused pass's offsets)
    PLANES: tl.constexpr = CLASSES // 2 if SPLIT else CLASSES  # per thread
    THREADS: tl.constexpr = 2 * BLOCK_P if SPLIT else BLOCK_P
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    for i in tl.static_range(TILES_PER_PROGRAM):
        tile = pid + i * nprog
        image = tile // tiles_per_image
        r = tl.arange(0, THREADS)
        q = (tile - image * tiles_per_image) * BLOCK_P + (r // 2 if SPLIT else r)
        in_image = (q < HW) & (tile < n_tiles)
        off = image.to(tl.int64) * CLASSES * HW + q
        if SPLIT:
            off += (r % 2).to(tl.int64) * PLANES * tl.cast(HW, tl.int64)
        xs = planes_load(x_ptr, off, HW, in_image, PLANES, ASM)
        if WAIT:
            m = xs[0]
            for c in tl.static_range(1, PLANES):
                m = tl.maximum(m, xs[c])
        for c in tl.static_range(PLANES):
            v = xs[c]
            if WAIT:
                v = v - m
            _store(g_ptr + off + c * tl.cast(HW, tl.int64), v, in_image, ASM)


def planes(problem, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(values, plane length, tile length) as the problem's fused pass moves the logits x:
    float32 pixels, or 16-bit pixel pairs as int32 words (split or not: block_p // 2 words)."""
    if problem.pairs:
        return x.view(torch.int32), problem.HW // 2, problem.block_p // 2
    return x, problem.HW, problem.block_p


def arguments(problem, x: torch.Tensor, g: torch.Tensor, wait: bool) -> tuple:
    """(grid, args, kwargs) of a floor pass over contiguous logits x into g (same shape and
    dtype) on the tiles and grid of ``problem`` (a one-read ``fused_layout.Problem``)."""
    if problem.split and not problem.pairs:
        raise NotImplementedError("no floor for float32 pixels split between two threads "
                                  "(fused_layout.SPLIT_PLANES): their tiles take two rounds")
    values, hw, block = planes(problem, x)
    programs, per_program, tiles_per_image, n_tiles = problem.fused_grid()
    return ((programs,), (values, planes(problem, g)[0], hw, tiles_per_image, n_tiles),
            dict(CLASSES=problem.C, BLOCK_P=block, TILES_PER_PROGRAM=per_program, WAIT=wait,
                 ASM=problem.asm_planes, SPLIT=problem.split, num_warps=problem.warps))


def launch(problem, x: torch.Tensor, g: torch.Tensor, wait: bool) -> None:
    grid, args, kwargs = arguments(problem, x, g, wait)
    one_read_floor_kernel[grid](*args, **kwargs)


def written(problem, x: torch.Tensor, g: torch.Tensor, wait: bool) -> bool:
    """Whether g holds what ``launch`` writes from x, computed by PyTorch on the values as
    they are moved (int32 words for the pairs: their bf16 halves are not numbers here); the
    wait's maximum is over each thread's planes: every class, or each half (split)."""
    values = planes(problem, x)[0]
    if wait:
        halves = values.unflatten(1, (2 if problem.split else 1, -1))
        values = (halves - halves.amax(2, keepdim=True)).flatten(1, 2)
    return torch.equal(planes(problem, g)[0], values)


def floor_rows(problem, x: torch.Tensor, measure, copy_gbps: float) -> list[dict]:
    """Both floors timed by ``measure(call) -> seconds`` on logits x (contiguous, the
    problem's), each checked by ``written`` first."""
    g = torch.empty_like(x)
    nbytes = 2 * x.numel() * x.element_size()
    rows = []
    for wait in (False, True):
        launch(problem, x, g, wait)
        correct = written(problem, x, g, wait)
        seconds = measure(lambda: launch(problem, x, g, wait))
        rows.append(dict(floor="wait" if wait else "copy", correct=correct, bytes=nbytes,
                         median_ms=seconds * 1e3,
                         pct_copy=100 * nbytes / seconds / 1e9 / copy_gbps))
    return rows
