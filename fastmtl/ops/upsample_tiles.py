"""How ``upsample_loss_kernel`` splits a problem: windows, strips, bands, launch shape.

Pure Python on the shapes (no tensor is read). The kernel is correct for any split;
the split only decides how much work is repeated and how many programs there are:

- A thread holds one full-resolution column and all classes (C up to 32), or every
  k-th class with k warps along the classes (larger C, 32 class slots per thread).
  The regressions' launch (three channels) gives each thread four columns. The
  window is BLOCK_X columns.
- A program writes the gradient of ``strip_cells`` low-resolution columns and walks
  the runs of those cells and of the cell before (its second taps land on the
  first cell). The strip is the largest that fits one window, found from the exact
  run boundaries below; strips of heads much narrower than the targets need
  several windows (``windows > 1``), whose cells are then added up in the
  accumulation dtype.
- A program also walks one low-resolution row before its band of ``band_rows``
  rows: bands are as long as the grid allows while keeping enough programs to
  fill the GPU (TARGET_WARPS warps in all).

Run boundaries: run j (the outputs whose first tap is input j) starts at the first
output o with src(o) >= j, computed here in exact rational arithmetic; the
kernel's floating-point tables may move a boundary by a pixel, which only changes
the number of windows the kernel walks.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fastmtl.ops.common import cdiv, next_power_of_2

# Enough programs to fill an H100 several times over: about two resident programs of 4 warps
# per SM (the registers allow two), 132 SMs, 8 rounds; fewer for programs of more warps.
TARGET_WARPS = 8192
BAND_ROWS = (16, 8, 4)   # longest band first; the walked extra row costs 1 / (rows + 1)
MULTI_WINDOW_STRIP = 8   # strip of a head much narrower than its targets
MAX_CLASSES_PER_THREAD = 32  # up to here a thread holds all classes of its column
CLASSES_PER_THREAD = 32      # beyond, each warp takes every (warps)-th class: 32 slots each
MAX_WARPS = 16


def run_starts(n_in: int, n_out: int, align_corners: bool) -> list[int]:
    """start[j], j = 0 .. n_in: the first output index whose first tap is >= j."""
    def first_at_least(j: int) -> int:
        if j == 0:
            return 0
        if j >= n_in:
            return n_out
        if align_corners:  # src = o (n_in - 1) / (n_out - 1)
            if n_out == 1:
                return 1
            return min(n_out, -(-j * (n_out - 1) // (n_in - 1)))
        # src = (o + 0.5) n_in / n_out - 0.5 >= j  <=>  (2o + 1) n_in >= (2j + 1) n_out
        return min(n_out, max(0, -(-((2 * j + 1) * n_out - n_in) // (2 * n_in))))
    return [first_at_least(j) for j in range(n_in + 1)]


@lru_cache(maxsize=64)
def _strip_fit(n_in: int, n_out: int, align_corners: bool, block_x: int) -> int:
    """Cells per strip that fit one window of block_x columns with the cell before (0: not
    even one)."""
    start = run_starts(n_in, n_out, align_corners)
    for cells in range(min(n_in, block_x), 0, -1):
        if all(start[min(j + cells, n_in)] - start[max(j - 1, 0)] <= block_x
               for j in range(0, n_in, cells)):
            return cells
    return 0


@dataclass(frozen=True)
class Tiles:
    block_c: int        # classes per tile (a power of two >= C), 1 without the semantic task
    block_x: int        # full-resolution columns per window
    num_warps: int
    strip_cells: int    # low-resolution columns whose gradient a program writes
    n_strips: int
    band_rows: int      # low-resolution rows whose gradient a program writes
    n_bands: int
    nrun: int           # runs a window may meet: a power of two >= strip_cells + 1
    kc: int             # columns per run gathered at a time
    windows: int        # windows per strip (estimate; > 1: cells accumulate across windows)


def tiles(B: int, C: int, h: int, w: int, H: int, W: int, align_corners: bool,
          semantic: bool) -> Tiles:
    """The split of the semantic launch (C classes) or of the regressions' launch."""
    block_c = next_power_of_2(C) if semantic else 1
    columns = 1  # columns per thread
    if not semantic:  # three channels: four columns per thread
        warps_c, warps_x, columns = 1, 4, 4
    elif block_c <= MAX_CLASSES_PER_THREAD:  # classes in the thread, warps along the columns
        warps_c, warps_x = 1, 4 if W <= 10 * w else 8
    else:  # warps along the classes too, CLASSES_PER_THREAD classes (and padding) each
        warps_c, warps_x = min(MAX_WARPS, block_c // CLASSES_PER_THREAD), 1
    block_x = 32 * warps_x * columns
    cells = _strip_fit(w, W, align_corners, block_x)
    windows = 1
    if cells == 0:  # a cell and the one before do not fit one window
        cells = min(w, MULTI_WINDOW_STRIP)
        start = run_starts(w, W, align_corners)
        windows = max(cdiv(start[min(j + cells, w)] - start[max(j - 1, 0)], block_x)
                      for j in range(0, w, cells))
    n_strips = cdiv(w, cells)
    programs = TARGET_WARPS // (warps_c * warps_x)
    band_rows = next((r for r in BAND_ROWS if B * n_strips * cdiv(h, r) >= programs),
                     BAND_ROWS[-1])
    band_rows = max(1, min(band_rows, h))
    nrun = next_power_of_2(cells + 1)
    return Tiles(block_c=block_c, block_x=block_x, num_warps=warps_c * warps_x,
                 strip_cells=cells, n_strips=n_strips, band_rows=band_rows,
                 n_bands=cdiv(h, band_rows), nrun=nrun, kc=max(1, block_x // nrun),
                 windows=windows)
