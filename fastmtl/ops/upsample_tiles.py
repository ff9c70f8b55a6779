"""How ``upsample_loss_kernel`` splits a problem: windows, strips, bands, launch shape.

Pure Python on the shapes (no tensor is read). The kernel is correct for any split;
the split only decides how much work is repeated and how many programs there are:

- A thread holds one full-resolution column and all classes (C up to 32); for larger C
  one column and the classes in chunks of ``class_chunk`` (``upsample_chunks_kernel``,
  ``rows`` target rows per pass over the classes), or, with ``class_chunk=None`` (the
  default), every k-th class with k warps along the classes (32 class slots per thread).
  The regressions' launch (three channels, ``upsample_regressions_kernel``) gives each
  thread ``regression_columns`` columns and reads their targets ``regression_rows``
  full-resolution rows at a time (``Tiles.rows``). The window is BLOCK_X columns. The
  choices are a ``Config``; ``use``
  swaps it for a block of code (tuning), ``DEFAULT`` is what the op uses.
- A program writes the gradient of ``strip_cells`` low-resolution columns and walks
  the runs of those cells and of the cell before (its second taps land on the
  first cell). The strip is the largest that fits one window, found from the exact
  run boundaries below; strips of heads much narrower than the targets need
  several windows (``windows > 1``), whose cells are then added up in the
  accumulation dtype.
- A program also walks one low-resolution row before its band of ``band_rows``
  rows: bands are as long as the grid allows while keeping enough programs to
  fill the GPU (``target_warps`` warps in all).

Run boundaries: run j (the outputs whose first tap is input j) starts at the first
output o with src(o) >= j, computed here in exact rational arithmetic; the
kernel's floating-point tables may move a boundary by a pixel, which only changes
the number of windows the kernel walks.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Optional

from fastmtl.ops.common import cdiv, next_power_of_2

MAX_CLASSES_PER_THREAD = 32  # up to here a thread holds all classes of its column
CLASSES_PER_THREAD = 32      # beyond, each warp takes every (warps)-th class: 32 slots each
MAX_WARPS = 16
MULTI_WINDOW_STRIP = 8   # strip of a head much narrower than its targets


@dataclass(frozen=True)
class Config:
    """The tiling choices of both launches (``benchmarks/tune_upsample.py`` times them).

    Every configuration computes the same loss and gradients; only the order of some
    sums changes (which program adds which pixels, how many columns of a run are
    gathered at a time), so results agree to rounding, and each configuration is
    deterministic.
    """

    # Semantic launch, C <= MAX_CLASSES_PER_THREAD: warps along the columns (one column
    # per thread, BLOCK_X = 32 x warps), more for heads much narrower than the targets.
    semantic_warps: int = 4
    wide_semantic_warps: int = 8      # when W > 10 w
    # ptxas register cap (its .maxnreg; None: ptxas's choice). 168 lets three programs of
    # 4 warps share an SM (224 registers uncapped: two), with no spills at C = 19.
    semantic_registers: Optional[int] = 168
    # The caps apply to strips of one window meeting at most this many runs (factors of
    # about 8 and more at BLOCK_X = 128): at smaller factors the run reduction's tiles need
    # the registers (a factor of 2 spills 764 bytes under the cap, in the row loop too),
    # and so does the walk over several windows of heads much narrower than the targets.
    capped_runs: int = 16
    large_c_registers: Optional[int] = None  # C > MAX_CLASSES_PER_THREAD (warps share classes)
    # C > MAX_CLASSES_PER_THREAD: classes in chunks of this many inside each thread, one
    # column per thread (``kernels/upsample_chunks.py``); None: the warps share the classes.
    # Measured on an H100 at C = 150 (8x512x1024 targets, heads at 1/8), semantic launch:
    # 1.99 against 2.25 ms fp32, 2.10 against 2.37 ms bf16.
    class_chunk: Optional[int] = 16
    chunk_warps: int = 4
    chunk_rows: int = 8       # most target rows of a run per pass over the classes
    # 168 lets three programs of 4 warps share an SM (235 registers uncapped at C = 150: two),
    # as the cap of the semantic launch at C <= 32 does; ptxas then spills 624 bytes (fp32
    # and bf16) outside both passes over the classes, reloaded about 50 times per group of
    # 8 target rows against some 30,000 instructions (docs/upsample.md). Measured on an
    # H200: 11% faster than ptxas's choice.
    chunk_registers: Optional[int] = 168
    # Regressions' launch (upsample_regressions_kernel): columns per thread and warps
    # (BLOCK_X = 32 x warps x columns), and the full-resolution rows read at a time per
    # thread (a power of two; longer runs take several chunks): 4 loads per row and column,
    # issued together, the next chunk's while the current one is reduced. Two columns of
    # 8 rows: 255 registers (two programs of 4 warps per SM), 64 loads in flight per
    # thread.
    regression_columns: int = 2
    regression_warps: int = 4
    regression_registers: Optional[int] = None
    regression_rows: int = 8
    # (columns, register cap) of the regressions' launch where the launch takes a cap (an
    # eager call on CUDA; not inside a torch.compile graph, whose launcher cannot pass one,
    # nor in fp64) and the cap applies (``capped_runs``): one column capped at 128
    # registers, four programs per SM, measured faster than two uncapped columns on an
    # H100 and an H200 (2-16%: docs/upsample.md); uncapped, one column is the slowest, so
    # elsewhere the two columns above. None: regression_columns and regression_registers.
    capped_regressions: Optional[tuple] = (1, 128)
    # Both launches as one (``kernels/upsample_both.py``): the semantic programs (C <= 32)
    # and the regressions' (one column each) interleaved in one grid under the semantic
    # launch's register cap, so that the regressions' memory latency and the semantic
    # arithmetic overlap on every SM and the two launches' last waves merge. Eager calls
    # only (a torch.compile graph's launcher cannot pass the cap), not fp64; elsewhere two
    # launches. Bitwise the same results. Not yet timed.
    one_launch: bool = False
    # Programs: bands are as long as BAND_ROWS allows while B x strips x bands keeps
    # target_warps / (warps per program) programs; the walked extra row costs 1 / (rows + 1).
    target_warps: int = 8192
    band_rows: tuple = (16, 8, 4)

    def name(self) -> str:
        """The fields that differ from the defaults, as ``field=value`` pairs."""
        diff = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                if getattr(self, f.name) != getattr(DEFAULT, f.name)]
        return ",".join(diff) or "default"


DEFAULT = Config()
_current = [DEFAULT]


def current() -> Config:
    """The configuration the op uses now (``DEFAULT`` unless ``use`` changed it)."""
    return _current[0]


@contextlib.contextmanager
def use(config: Optional[Config] = None, **changes):
    """``with use(Config(...))`` or ``with use(semantic_warps=2)``: the op tiles with that
    configuration inside the block (a tuning sweep; not thread-safe)."""
    chosen = replace(config or current(), **changes)
    previous = _current[0]
    _current[0] = chosen
    try:
        yield chosen
    finally:
        _current[0] = previous


# Module-level names of 0.2.0.dev0, kept for readers of the defaults.
TARGET_WARPS = DEFAULT.target_warps
BAND_ROWS = DEFAULT.band_rows


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
    max_registers: Optional[int] = None  # ptxas register cap (None: ptxas's choice)
    rows: int = 1       # full-resolution rows per chunk: the regressions' launch, and the
                        # large-C semantic launch in class chunks (rows per pass over them)
    class_chunks: bool = False  # semantic launch: upsample_chunks_kernel (block_c per chunk)
    row_groups: int = 1  # class chunks: groups of ``rows`` rows the longest run is walked in

    @property
    def accumulates(self) -> bool:
        """Whether the launch's gradient is kept in the accumulation dtype until backward:
        where its cells add up across windows, or over more than two groups of rows of a
        run (class chunks: each group adds to the stored cells). A 16-bit gradient is
        otherwise rounded at most three times (the carried share of the next row, two
        groups; at a factor of 8 the first run's clamped rows make a second group), and
        with it kept, once."""
        return self.windows > 1 or self.row_groups > 2


def tiles(B: int, C: int, h: int, w: int, H: int, W: int, align_corners: bool,
          semantic: bool, config: Optional[Config] = None, capped: bool = False) -> Tiles:
    """The split of the semantic launch (C classes) or of the regressions' launch;
    ``capped``: the launch can take a register cap (``Config.capped_regressions``)."""
    cfg = config or current()
    if not semantic and capped and cfg.capped_regressions is not None:
        columns, registers = cfg.capped_regressions
        plan = tiles(B, C, h, w, H, W, align_corners, False,
                     replace(cfg, regression_columns=columns, regression_registers=registers,
                             capped_regressions=None))
        if plan.max_registers is not None:
            return plan
    block_c = next_power_of_2(C) if semantic else 1
    columns = 1  # columns per thread
    rows = row_groups = 1
    class_chunks = False
    if not semantic:
        warps_c, warps_x, columns = 1, cfg.regression_warps, cfg.regression_columns
        registers = cfg.regression_registers
        rows = next_power_of_2(cfg.regression_rows)
    elif block_c <= MAX_CLASSES_PER_THREAD:  # classes in the thread, warps along the columns
        warps_c = 1
        warps_x = cfg.semantic_warps if W <= 10 * w else cfg.wide_semantic_warps
        registers = cfg.semantic_registers
    elif cfg.class_chunk is not None:  # classes in chunks inside the thread, one column each
        warps_c, warps_x = 1, cfg.chunk_warps
        block_c = cfg.class_chunk
        registers = cfg.chunk_registers
        start = run_starts(h, H, align_corners)
        longest = max(start[a + 1] - start[a] for a in range(h))
        rows = min(next_power_of_2(max(longest, 1)), cfg.chunk_rows)
        row_groups = cdiv(longest, rows)
        class_chunks = True
    else:  # warps along the classes too, CLASSES_PER_THREAD classes (and padding) each
        warps_c, warps_x = min(MAX_WARPS, block_c // CLASSES_PER_THREAD), 1
        registers = cfg.large_c_registers
    block_x = 32 * warps_x * columns
    cells = _strip_fit(w, W, align_corners, block_x)
    windows = 1
    if cells == 0:  # a cell and the one before do not fit one window
        cells = min(w, MULTI_WINDOW_STRIP)
        start = run_starts(w, W, align_corners)
        windows = max(cdiv(start[min(j + cells, w)] - start[max(j - 1, 0)], block_x)
                      for j in range(0, w, cells))
    n_strips = cdiv(w, cells)
    programs = cfg.target_warps // (warps_c * warps_x)
    band_rows = next((r for r in cfg.band_rows if B * n_strips * cdiv(h, r) >= programs),
                     cfg.band_rows[-1])
    band_rows = max(1, min(band_rows, h))
    nrun = next_power_of_2(cells + 1)
    if nrun > cfg.capped_runs or windows > 1:
        registers = None
    return Tiles(block_c=block_c, block_x=block_x, num_warps=warps_c * warps_x,
                 strip_cells=cells, n_strips=n_strips, band_rows=band_rows,
                 n_bands=cdiv(h, band_rows), nrun=nrun, kc=max(1, block_x // nrun),
                 windows=windows, max_registers=registers, rows=rows,
                 class_chunks=class_chunks, row_groups=row_groups)
