"""The regressions' loss straight from low-resolution heads (fused bilinear upsampling).

Instance offsets o (B, 2, h, w) against g (B, 2, H, W) where the mask m (B, H, W) is set,
depth d (B, 1, h, w) against z (B, [1,] H, W) where z is finite and > 0: the same
contract, work split, partial sums and gradient cells as the regressions' launch of
``upsample_loss.py`` (its docstring describes the split and the run reduction, which this
kernel imports), with a row walk made for memory rather than arithmetic. These tasks read
about 13 bytes of targets per pixel and do a few dozen instructions on them, so what
matters is how many bytes each thread keeps in flight.

Each thread holds BLOCK_X / (32 x warps) full-resolution columns of the window (BLOCK_X
columns); per low-resolution row a the full-resolution rows of its run are read in chunks
of ROWS rows as [BLOCK_X, ROWS] tiles, whose rows Triton keeps in the thread (the columns
go along the lanes). The loads are not masked by row (the addresses are clamped and the
rows past the run masked where they are used), so every load of a chunk is issued at
once (4 x ROWS per column: g twice, m, z), and the next chunk's loads, like the next
low-resolution row's taps along x, are issued before the current chunk is reduced,
across the end of a low-resolution row too: they are in flight during the arithmetic
and during the run reduction (``_store_cells``) of each low-resolution row:

    v = wy0(Y) top + wy1(Y) bot                       (PyTorch's order, per row of the tile)
    instance: loss = sum_ch |v_ch - g_ch|, dv = sign(v - g)    (pixels in the mask)
    depth:    loss = |v - z|, dv = sign(v - z)                  (z finite and > 0)
    A += sum_rows dv, Bc += sum_rows wy1 dv                     (in the thread, per column)

A chunk never spans two runs (its rows are masked at the run's end, and the next chunk
starts at the next run). A run's rows are all owned by the program or none (the rows of
a_lo - 1 give only their bottom part), and a full chunk needs no row mask. Prefetched
rows are those of the next chunk exactly, except where a low-resolution row owns no
full-resolution row (factors below 2): there the prefetch reads on to the band's end and
the chunk that uses it masks what is not its own.

With both tasks, each low-resolution row's instance and depth cells come out of one run
reduction of a four-channel tile (``_four_channels``: o0, depth, o1 and a zero channel).
Height strides are not specialised: with transposed targets (height stride 1) Triton
would otherwise lay the rows along the lanes.
"""
import triton
import triton.language as tl

from .upsample_loss import (_along_x, _run_cells, _sign, _store_cells, _write_cells,
                            program_region, second_tap)
from .upsample_reduce import ROW_NORM

__all__ = ["upsample_regressions_kernel"]


@triton.jit
def _rows(col_ptr, Y, sh, stop, rr):
    # [BLOCK_X, ROWS] tile of rows Y + rr at the window's columns (col_ptr: each column's
    # pointer at row 0, the window's last column repeated past its end). Columns first:
    # with these (gathered or contiguous) pointers Triton lays the columns along the lanes
    # and keeps a column's rows in its thread. Unmasked: rows from stop on read row
    # stop - 1 again (the row before, if stop <= Y), and the chunk that uses the tile
    # masks them.
    Yr = tl.maximum(tl.minimum(Y + rr, stop - 1), 0)
    return tl.load(col_ptr[:, None] + (Yr.to(tl.int64) * sh)[None, :])


@triton.jit
def _taps(col0, col1, ch, ch_stride, row, s_h, in_window):
    # The two taps of ``_along_x`` (u[c, row, i0(X)] and u[c, row, i1(X)]), not yet weighted.
    r = row.to(tl.int64) * s_h + ch.to(tl.int64)[None, :] * ch_stride
    ok = in_window[:, None] & (ch >= 0)[None, :]
    return (tl.load(col0[:, None] + r, mask=ok, other=0.0),
            tl.load(col1[:, None] + r, mask=ok, other=0.0))


@triton.jit
def _split_channels(u):
    # [BLOCK_X, 2] -> two [BLOCK_X] (the channels are in the thread).
    c0, c1 = tl.split(u)
    return c0, c1


@triton.jit
def _four_channels(o0, o1, dd):
    # [BLOCK_X, 4]: channels (o0, dd, o1, 0), so that one run reduction serves both tasks
    # and ``_two_tasks`` takes them apart again.
    return tl.reshape(tl.join(tl.join(o0, o1), tl.join(dd, tl.zeros_like(dd))),
                      [o0.shape[0], 4])


@triton.jit
def _two_tasks(value):
    # [NRUN, 4] cells of ``_four_channels`` -> the instance cells [NRUN, 2] and the depth
    # cells [NRUN, 1].
    inst, rest = tl.split(tl.reshape(value, [value.shape[0], 2, 2]))
    dep, _ = tl.split(rest)
    return inst, dep[:, None]


@triton.jit
def _positive_finite(z):
    # z > 0 and z < inf. For float32, one unsigned comparison of the bits (LLVM turns the
    # two comparisons into a class test of five or six instructions).
    if z.dtype == tl.float32:
        bits = z.to(tl.uint32, bitcast=True)
        return (bits - 1) < 0x7F7FFFFF
    return (z > 0) & (z < float("inf"))


@triton.jit
def _instance_rows(m, g0, g1, top0, top1, bot0, bot1, wy0, wy1, in_run, owned,
                   FULL: tl.constexpr, WRITE_GRAD: tl.constexpr, ACC: tl.constexpr):
    # One chunk of instance rows ([BLOCK_X, ROWS] tiles): the sums over its rows of the
    # loss, the normaliser, dv and wy1 dv per column and channel. FULL: every row is the
    # run's (no row mask).
    in_mask = m != 0
    if not FULL:
        in_mask = in_mask & in_run[None, :]
    diff0 = wy0 * top0[:, None] + wy1 * bot0[:, None] - g0
    diff1 = wy0 * top1[:, None] + wy1 * bot1[:, None] - g1
    counted = in_mask & owned[:, None]
    loss = tl.sum(tl.where(counted, tl.abs(diff0) + tl.abs(diff1), 0.0), 1)
    norm = tl.sum(tl.where(counted, 1.0, 0.0).to(ACC), 1)
    if WRITE_GRAD:
        dv0 = tl.where(in_mask, _sign(diff0), 0.0).to(ACC)
        dv1 = tl.where(in_mask, _sign(diff1), 0.0).to(ACC)
        return (loss, norm, tl.sum(dv0, 1), tl.sum(dv1, 1), tl.sum(wy1 * dv0, 1),
                tl.sum(wy1 * dv1, 1))
    zero = tl.zeros_like(loss)
    return loss, norm, zero, zero, zero, zero


@triton.jit
def _depth_rows(z, top, bot, wy0, wy1, in_run, owned, FULL: tl.constexpr,
                WRITE_GRAD: tl.constexpr, ACC: tl.constexpr):
    # One chunk of depth rows: sums over its rows of the loss, normaliser, dv and wy1 dv.
    measured = _positive_finite(z)
    if not FULL:
        measured = measured & in_run[None, :]
    diff = wy0 * top[:, None] + wy1 * bot[:, None] - tl.where(measured, z.to(ACC), 0.0)
    counted = measured & owned[:, None]
    loss = tl.sum(tl.where(counted, tl.abs(diff), 0.0), 1)
    norm = tl.sum(tl.where(counted, 1.0, 0.0).to(ACC), 1)
    if WRITE_GRAD:
        dv = tl.where(measured, _sign(diff), 0.0).to(ACC)
        return loss, norm, tl.sum(dv, 1), tl.sum(wy1 * dv, 1)
    zero = tl.zeros_like(loss)
    return loss, norm, zero, zero


@triton.jit
def regressions_program(
    pid,
    o_ptr, g_ptr, m_ptr, go_ptr, o_sb, o_sc, o_sh, o_sw, g_sb, g_sc, g_sh, g_sw,
    m_sb, m_sh, m_sw, go_sb, go_sc, go_sh, go_sw,
    d_ptr, z_ptr, gd_ptr, d_sb, d_sh, d_sw, z_sb, z_sh, z_sw, gd_sb, gd_sh, gd_sw,
    index_ptr, lam_ptr, start_ptr, part_ptr, n_parts, h, w, H, W,
    n_bands, n_strips, band_rows, strip_cells, grad_scale,
    HAS_INST: tl.constexpr, HAS_DEP: tl.constexpr, WRITE_GRAD: tl.constexpr,
    BLOCK_X: tl.constexpr, ROWS: tl.constexpr, NRUN: tl.constexpr, KC: tl.constexpr,
    ACC_FP64: tl.constexpr, COMPILED: tl.constexpr, KEEP_Y: tl.constexpr = False,
    KEEP_X: tl.constexpr = False,
):
    """The regressions' launch's program ``pid`` (``upsample_regressions_kernel``;
    ``upsample_both_kernel`` gives it the regressions' share of its grid)."""
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    b, a_lo, a_hi, a_first, j_lo, j_hi, xs, x_own, xe = program_region(
        pid, n_strips, n_bands, band_rows, strip_cells, h, w, start_ptr)
    lam_y_ptr = lam_ptr
    lam_x_ptr = lam_ptr + H
    start_x_ptr = start_ptr + h + 1
    y_first = tl.load(start_ptr + a_first)
    y_stop = tl.load(start_ptr + a_hi)

    offset_ch = tl.arange(0, 2)
    depth_ch = tl.arange(0, 1)
    lane = tl.arange(0, BLOCK_X)
    rr = tl.arange(0, ROWS)
    inst_loss = tl.zeros([BLOCK_X], ACC)
    inst_norm = tl.zeros([BLOCK_X], ACC)
    dep_loss = tl.zeros([BLOCK_X], ACC)
    dep_norm = tl.zeros([BLOCK_X], ACC)

    xw = xs
    while xw < xe:  # one window unless the strip is wider than BLOCK_X columns
        X = xw + lane
        in_window = X < xe
        owned_x = in_window & (X >= x_own)
        i0x = tl.load(index_ptr + H + X, mask=in_window, other=0)
        wx1 = tl.load(lam_x_ptr + X, mask=in_window, other=0.0)
        wx0 = 1.0 - wx1
        i1x = second_tap(i0x, w, KEEP_X)
        Xl = tl.minimum(X, xe - 1).to(tl.int64)  # the targets' columns (in the window)

        # The first chunk: rows of run a_first (or on to the band's end if it has none).
        y_end = tl.load(start_ptr + a_first + 1)
        lim = tl.minimum(tl.where(y_first < y_end, y_end, y_stop), y_stop)
        if HAS_INST:
            o_col0 = o_ptr + b * o_sb + i0x.to(tl.int64) * o_sw
            o_col1 = o_ptr + b * o_sb + i1x.to(tl.int64) * o_sw
            o_top0, o_top1 = _split_channels(_along_x(o_col0, o_col1, offset_ch, offset_ch < 2,
                                                      o_sc, a_first, o_sh, wx0, wx1, in_window,
                                                      ACC))
            o_bot0, o_bot1 = _split_channels(_along_x(o_col0, o_col1, offset_ch, offset_ch < 2,
                                                      o_sc, second_tap(a_first, h, KEEP_Y), o_sh,
                                                      wx0, wx1, in_window, ACC))
            do_a0 = tl.zeros([BLOCK_X], ACC)
            do_a1 = tl.zeros([BLOCK_X], ACC)
            do_b0 = tl.zeros([BLOCK_X], ACC)
            do_b1 = tl.zeros([BLOCK_X], ACC)
            m_col = m_ptr + b * m_sb + Xl * m_sw
            g_col = g_ptr + b * g_sb + Xl * g_sw
            m_next = _rows(m_col, y_first, m_sh, lim, rr)
            g0_next = _rows(g_col, y_first, g_sh, lim, rr)
            g1_next = _rows(g_col + g_sc.to(tl.int64), y_first, g_sh, lim, rr)
        if HAS_DEP:
            d_col0 = d_ptr + b * d_sb + i0x.to(tl.int64) * d_sw
            d_col1 = d_ptr + b * d_sb + i1x.to(tl.int64) * d_sw
            d_top = tl.sum(_along_x(d_col0, d_col1, depth_ch, depth_ch < 1, 0, a_first, d_sh,
                                    wx0, wx1, in_window, ACC), 1)
            d_bot = tl.sum(_along_x(d_col0, d_col1, depth_ch, depth_ch < 1, 0,
                                    second_tap(a_first, h, KEEP_Y), d_sh, wx0, wx1, in_window,
                                    ACC), 1)
            dd_a = tl.zeros([BLOCK_X], ACC)
            dd_b = tl.zeros([BLOCK_X], ACC)
            z_col = z_ptr + b * z_sb + Xl * z_sw
            z_next = _rows(z_col, y_first, z_sh, lim, rr)

        Y = y_first
        a = a_first
        while a < a_hi:
            a1 = second_tap(a, h, KEEP_Y)
            if KEEP_Y:  # the top is this row too: the upsampling keeps the height
                if HAS_INST:
                    o_top0 = o_bot0
                    o_top1 = o_bot1
                if HAS_DEP:
                    d_top = d_bot
            y_end = tl.load(start_ptr + a + 1)
            y_after = tl.load(start_ptr + tl.minimum(a + 2, h))  # end of run a + 1
            # The taps of row a + 2 (a + 1's interpolation is at hand), loaded a row ahead
            # and interpolated when the row moves on.
            a2 = second_tap(a + 1, h, KEEP_Y)
            if HAS_INST:
                o_u0, o_u1 = _taps(o_col0, o_col1, offset_ch, o_sc, a2, o_sh, in_window)
            if HAS_DEP:
                d_u0, d_u1 = _taps(d_col0, d_col1, depth_ch, 0, a2, d_sh, in_window)
            while Y < y_end:
                # The next chunk's loads first: in this run, or the first chunk of the next
                # one (its rows are reduced after this row's cells are stored).
                Yn = tl.minimum(Y + ROWS, y_end)
                lim = tl.where(Yn < y_end, y_end, tl.where(y_after > Yn, y_after, y_stop))
                lim = tl.minimum(lim, y_stop)
                if HAS_INST:
                    m_tile = m_next
                    g0 = g0_next.to(ACC)
                    g1 = g1_next.to(ACC)
                    m_next = _rows(m_col, Yn, m_sh, lim, rr)
                    g0_next = _rows(g_col, Yn, g_sh, lim, rr)
                    g1_next = _rows(g_col + g_sc.to(tl.int64), Yn, g_sh, lim, rr)
                if HAS_DEP:
                    z = z_next
                    z_next = _rows(z_col, Yn, z_sh, lim, rr)
                # Rows past the run (a partial chunk) are masked; a run's rows are all owned
                # or none (rows before a_lo only give row a_lo - 1's bottom part).
                Yr = Y + rr
                in_run = Yr < y_end
                wy1 = tl.load(lam_y_ptr + tl.minimum(Yr, H - 1))[None, :]
                wy0 = 1.0 - wy1
                owned = owned_x & (a >= a_lo)
                full = Y + ROWS <= y_end
                if HAS_INST:
                    if full:
                        li, ni, da0, da1, db0, db1 = _instance_rows(
                            m_tile, g0, g1, o_top0, o_top1, o_bot0, o_bot1, wy0, wy1, in_run,
                            owned, True, WRITE_GRAD, ACC)
                    else:
                        li, ni, da0, da1, db0, db1 = _instance_rows(
                            m_tile, g0, g1, o_top0, o_top1, o_bot0, o_bot1, wy0, wy1, in_run,
                            owned, False, WRITE_GRAD, ACC)
                    inst_loss += li
                    inst_norm += ni
                    if WRITE_GRAD:
                        do_a0 += da0
                        do_a1 += da1
                        do_b0 += db0
                        do_b1 += db1
                if HAS_DEP:
                    if full:
                        ld, nd, dda, ddb = _depth_rows(z, d_top, d_bot, wy0, wy1, in_run, owned,
                                                       True, WRITE_GRAD, ACC)
                    else:
                        ld, nd, dda, ddb = _depth_rows(z, d_top, d_bot, wy0, wy1, in_run, owned,
                                                       False, WRITE_GRAD, ACC)
                    dep_loss += ld
                    dep_norm += nd
                    if WRITE_GRAD:
                        dd_a += dda
                        dd_b += ddb
                Y = Yn
            # Owner row a is done (rows of a - 1 before a_lo are only walked for their
            # bottom part): its gradient row goes to the cells, its bottom part carries on.
            if WRITE_GRAD:
                if a >= a_lo:
                    if HAS_INST and HAS_DEP:  # one run reduction for both tasks
                        value, cell, cell_ok, first = _run_cells(
                            _four_channels(do_a0, do_a1, dd_a),
                            _four_channels(do_b0, do_b1, dd_b), a1 == a, a, lam_x_ptr,
                            start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale, 4, BLOCK_X,
                            NRUN, KC, ACC, COMPILED, KEEP_X)
                        v_inst, v_dep = _two_tasks(value)
                        _write_cells(v_inst, cell, cell_ok, first, go_ptr + b * go_sb, offset_ch,
                                     offset_ch < 2, go_sc, go_sh, go_sw, a, ACC, COMPILED)
                        _write_cells(v_dep, cell, cell_ok, first, gd_ptr + b * gd_sb, depth_ch,
                                     depth_ch < 1, 0, gd_sh, gd_sw, a, ACC, COMPILED)
                    else:
                        if HAS_INST:
                            _store_cells(tl.join(do_a0, do_a1), tl.join(do_b0, do_b1),
                                         a1 == a, go_ptr + b * go_sb, offset_ch, offset_ch < 2,
                                         go_sc, go_sh, go_sw, a, lam_x_ptr, start_x_ptr, j_lo,
                                         j_hi, w, xs, xw, xe, grad_scale, 2, BLOCK_X, NRUN, KC,
                                         ACC, COMPILED, KEEP_X)
                        if HAS_DEP:
                            _store_cells(dd_a[:, None], dd_b[:, None], a1 == a, gd_ptr + b * gd_sb,
                                         depth_ch, depth_ch < 1, 0, gd_sh, gd_sw, a, lam_x_ptr,
                                         start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale, 1,
                                         BLOCK_X, NRUN, KC, ACC, COMPILED, KEEP_X)
                # (where the upsampling keeps the height, a row's second taps are its own:
                # nothing carries on)
                if HAS_INST:
                    do_a0 = do_b0
                    do_a1 = do_b1
                    if KEEP_Y:
                        do_a0 = tl.zeros([BLOCK_X], ACC)
                        do_a1 = tl.zeros([BLOCK_X], ACC)
                    do_b0 = tl.zeros([BLOCK_X], ACC)
                    do_b1 = tl.zeros([BLOCK_X], ACC)
                if HAS_DEP:
                    dd_a = dd_b
                    if KEEP_Y:
                        dd_a = tl.zeros([BLOCK_X], ACC)
                    dd_b = tl.zeros([BLOCK_X], ACC)
            if HAS_INST:
                o_top0 = o_bot0
                o_top1 = o_bot1
                o_bot0, o_bot1 = _split_channels(wx0[:, None] * o_u0.to(ACC)
                                                 + wx1[:, None] * o_u1.to(ACC))
            if HAS_DEP:
                d_top = d_bot
                d_bot = tl.sum(wx0[:, None] * d_u0.to(ACC) + wx1[:, None] * d_u1.to(ACC), 1)
            a += 1
        tl.debug_barrier()  # a later window reads the cells this one stored
        xw += BLOCK_X

    # The partial-sum rows of the regressions (the semantic launch writes its own).
    if HAS_INST:
        tl.store(part_ptr + n_parts + pid, tl.sum(inst_loss, 0))
        tl.store(part_ptr + (ROW_NORM + 1) * n_parts + pid, tl.sum(inst_norm, 0))
    if HAS_DEP:
        tl.store(part_ptr + 2 * n_parts + pid, tl.sum(dep_loss, 0))
        tl.store(part_ptr + (ROW_NORM + 2) * n_parts + pid, tl.sum(dep_norm, 0))


@triton.jit(do_not_specialize=["o_sc", "g_sc", "go_sc", "g_sh", "m_sh", "z_sh"])
def upsample_regressions_kernel(
    o_ptr, g_ptr, m_ptr, go_ptr, o_sb, o_sc, o_sh, o_sw, g_sb, g_sc, g_sh, g_sw,
    m_sb, m_sh, m_sw, go_sb, go_sc, go_sh, go_sw,
    d_ptr, z_ptr, gd_ptr, d_sb, d_sh, d_sw, z_sb, z_sh, z_sw, gd_sb, gd_sh, gd_sw,
    index_ptr, lam_ptr, start_ptr, part_ptr, n_parts, h, w, H, W,
    n_bands, n_strips, band_rows, strip_cells, grad_scale,
    HAS_INST: tl.constexpr, HAS_DEP: tl.constexpr, WRITE_GRAD: tl.constexpr,
    BLOCK_X: tl.constexpr, ROWS: tl.constexpr, NRUN: tl.constexpr, KC: tl.constexpr,
    ACC_FP64: tl.constexpr, COMPILED: tl.constexpr, KEEP_Y: tl.constexpr = False,
    KEEP_X: tl.constexpr = False,
):
    regressions_program(tl.program_id(0), o_ptr, g_ptr, m_ptr, go_ptr, o_sb, o_sc, o_sh,
        o_sw, g_sb, g_sc, g_sh, g_sw, m_sb, m_sh, m_sw, go_sb, go_sc, go_sh, go_sw, d_ptr,
        z_ptr, gd_ptr, d_sb, d_sh, d_sw, z_sb, z_sh, z_sw, gd_sb, gd_sh, gd_sw, index_ptr,
        lam_ptr, start_ptr, part_ptr, n_parts, h, w, H, W, n_bands, n_strips, band_rows,
        strip_cells, grad_scale, HAS_INST, HAS_DEP, WRITE_GRAD, BLOCK_X, ROWS, NRUN, KC,
        ACC_FP64, COMPILED, KEEP_Y, KEEP_X)
