"""The semantic loss on low-resolution predictions for many classes: classes in chunks.

Same contract, work split and partial sums as ``upsample_loss_kernel`` (see
``upsample_loss.py``), for the semantic task only, when C is too large for a thread to
hold all classes of its column twice over (two gradient accumulators per class). A
thread still holds one full-resolution column X of the window, but its classes pass
through its registers CH at a time, twice per low-resolution row a and group of at most
ROWS of its target rows (the rows Y of run a, [start_y[a], start_y[a + 1])):

    pass A, per chunk:  top, bot = x-interpolated logits of rows a and a1 = second_tap(a)
                        for each row r of the group (unrolled, rows in the thread):
                        v = wy0 top + wy1 bot, online max m[r] and sum s[r] of exp(v - m[r])
    lse[r] = log s[r] + m[r]; loss += w_t (lse[r] - v[target]) (v[target] from its taps)
    pass B, per chunk:  for each row r: p = exp(v - lse[r]),
                        G0 += w_t wy0 (p - onehot), G1 += w_t wy1 (p - onehot)
                        cells of row a  (+)= runs-reduced G0      (``_reduce_runs``)
                        cells of row a1 (+)= runs-reduced G1

so what a thread keeps across the class loop is 2 ROWS values (then lse, label and
weight per row), and the gradient of a chunk lives only while its rows are walked. Row
a + 1's share (G1), which the all-classes kernel carries in registers to the next
low-resolution row, is added here to the cells of row a + 1 in the gradient buffer
itself: those cells are this program's own, not final yet, and are read back and
completed when row a + 1 is walked (row a_hi's share is its neighbour's, as there). The
first store to a cell writes, later ones add: the buffer needs no zeroing and nothing
else is allocated. In a 16-bit gradient the carried share is rounded once more.

The rows of the group are a [ROWS, BLOCK_X] tile whose rows stay in the thread; the
unrolled row loops pick and update one row with compile-time selects (no shuffles, no
shared memory). Full chunks have no class mask; the last chunk (C % CH classes, CHT
slots) is a separate copy with a compile-time mask. No barrier or shuffle is in the
row loops: the chunk's run reduction (shared memory) is once per chunk, group and row.

Non-finite logits: the online maximum shifts by 0 where it is still -inf, so that a chunk
of -inf logits adds nothing; a +inf or NaN logit makes s NaN as F.cross_entropy's softmax
is, and a row of -inf logits gives lse = -inf, hence NaN loss and gradient, as there.
"""
import triton
import triton.language as tl

from .casts import to_element
from .upsample_loss import (NO_ROW, _exp_shifted, _in_loop, _label, _log, _offset,
                            _reduce_runs, _tap_value, _window_runs, program_region, second_tap,
                            store_semantic_partials)
from .upsample_reduce import NO_PIXEL

__all__ = ["upsample_chunks_kernel"]


@triton.jit
def _row(tile, r, ROWS: tl.constexpr):
    # Row r of a [ROWS, BLOCK_X] tile (rows in the thread): selects, added as integers so
    # that they fold away where r is a compile-time index (unrolled loops).
    pick = tl.arange(0, ROWS)[:, None] == r
    if tile.dtype == tl.float32:
        return tl.sum(tl.where(pick, tile.to(tl.int32, bitcast=True), 0), 0).to(
            tl.float32, bitcast=True)
    elif tile.dtype == tl.float64:
        return tl.sum(tl.where(pick, tile.to(tl.int64, bitcast=True), 0), 0).to(
            tl.float64, bitcast=True)
    else:
        return tl.sum(tl.where(pick, tile, 0), 0)


@triton.jit
def _put(tile, r, value, ROWS: tl.constexpr):
    return tl.where(tl.arange(0, ROWS)[:, None] == r, value[None, :], tile)


@triton.jit
def _max_sum(m, s, top, bot, cls_ok, lam_y_ptr, y, n, ROWS: tl.constexpr, MASKED: tl.constexpr,
             FAST_MATH: tl.constexpr):
    # Pass A for one chunk: the running max m and sum s (of exp(v - m)) of each row.
    for r in tl.static_range(ROWS):
        if r < n:
            wy1 = tl.load(lam_y_ptr + y + r)
            wy0 = 1.0 - wy1
            v = wy0 * top + wy1 * bot
            if MASKED:
                v = tl.where(cls_ok[None, :], v, float("-inf"))
            m_old = _row(m, r, ROWS)
            m_new = tl.maximum(m_old, tl.max(v, 1))
            shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # a chunk of -inf adds 0
            e = _exp_shifted(v, shift, FAST_MATH)
            if MASKED:
                e = tl.where(cls_ok[None, :], e, 0.0)
            s_new = _row(s, r, ROWS) * tl.exp(m_old - shift) + tl.sum(e, 1)
            m = _put(m, r, m_new, ROWS)
            s = _put(s, r, s_new, ROWS)
    return m, s


@triton.jit
def _chunk_grad(top, bot, k0, lse, labels, weights, lam_y_ptr, y, n, CHW: tl.constexpr,
                ROWS: tl.constexpr, BLOCK_X: tl.constexpr, ACC: tl.constexpr,
                FAST_MATH: tl.constexpr):
    # Pass B for one chunk: G0 = sum_r w_t wy0 dv, G1 = sum_r w_t wy1 dv over the group's
    # rows, dv = softmax(v) - onehot(target) (an ignored pixel: 0 x softmax, NaN where v is).
    g0 = tl.zeros([BLOCK_X, CHW], ACC)
    g1 = tl.zeros([BLOCK_X, CHW], ACC)
    slot = tl.arange(0, CHW)
    for r in tl.static_range(ROWS):
        if r < n:
            wy1 = tl.load(lam_y_ptr + y + r)
            wy0 = 1.0 - wy1
            v = wy0 * top + wy1 * bot
            p = _exp_shifted(v, _row(lse, r, ROWS), FAST_MATH)
            hit = slot[None, :] == (_row(labels, r, ROWS) - k0)[:, None]
            dv = tl.where(hit, p - 1.0, p)
            wt = _row(weights, r, ROWS)
            g0 += (wt * wy0)[:, None] * dv
            g1 += (wt * wy1)[:, None] * dv
    return g0, g1


@triton.jit
def _store_shares(g0, g1, a, a1, from_above, a_lo, a_hi, group, g_ptr, ch, ch_ok, g_sc, g_sh,
                  g_sw, it, lam_x_ptr, start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale,
                  CHW: tl.constexpr, BLOCK_X: tl.constexpr, NRUN: tl.constexpr,
                  KC: tl.constexpr, ACC: tl.constexpr, COMPILED: tl.constexpr,
                  KEEP_X: tl.constexpr):
    # Cells [j_lo, j_hi), channels ch, of rows a (g0) and a1 (g1): each share reduced over
    # the window's runs (both in one exchange), times grad_scale, stored, or added to what
    # is there: where an earlier window stored the cell, and where this program stored a
    # share of it before (row a's from row a - 1 where ``from_above``, any row's from an
    # earlier group).
    cell, lo, hi, k_max, cell_ok, reach_start = _window_runs(j_lo, j_hi, start_x_ptr, xw, xe, it,
                                                             BLOCK_X, NRUN, COMPILED)
    later = (reach_start < xw) & (xw != xs)  # an earlier window stored the cell
    both = tl.reshape(tl.join(g0, g1), [BLOCK_X, 2 * CHW])  # channel 2c: g0, 2c + 1: g1
    cells = _reduce_runs(both, lam_x_ptr, lo, hi, cell == w - 1, xw, k_max, it, 2 * CHW,
                         BLOCK_X, NRUN, KC, ACC, COMPILED, KEEP_X) * grad_scale
    top, bottom = tl.split(tl.reshape(cells, [NRUN, CHW, 2]))
    if a1 == a:  # the image's last row, or an axis kept: both taps are this row
        top = top + bottom
    ch = _in_loop(ch, it, COMPILED)
    p = g_ptr + cell.to(tl.int64)[:, None] * g_sw + ch.to(tl.int64)[None, :] * g_sc
    ok = cell_ok[:, None] & ch_ok[None, :]
    tl.debug_barrier()  # what another thread stored in these cells is visible
    if a >= a_lo:  # a_lo - 1 is only walked for its share of row a_lo
        p_top = p + a.to(tl.int64) * g_sh
        add = ((group > 0) | from_above) | later
        earlier = tl.load(p_top, mask=ok & add[:, None], other=0.0).to(ACC)
        tl.store(p_top, to_element(earlier + top, g_ptr), mask=ok)
    if (a1 > a) & (a1 < a_hi):  # row a_hi's share is its own program's
        p_bottom = p + a1.to(tl.int64) * g_sh
        add = (group > 0) | later
        earlier = tl.load(p_bottom, mask=ok & add[:, None], other=0.0).to(ACC)
        tl.store(p_bottom, to_element(earlier + bottom, g_ptr), mask=ok)


@triton.jit
def _chunk(k0, it, col0, col1, m, s, lse, labels, weights, a, a1, from_above, y, n, a_lo, a_hi,
           group, x_sc, x_sh, wx0, wx1, in_window, lam_y_ptr, gx_ptr, g_sc, g_sh, g_sw, lam_x_ptr,
           start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale, C: tl.constexpr,
           CHW: tl.constexpr, MASKED: tl.constexpr, PASS_B: tl.constexpr, ROWS: tl.constexpr,
           BLOCK_X: tl.constexpr, NRUN: tl.constexpr, KC: tl.constexpr, ACC: tl.constexpr,
           FAST_MATH: tl.constexpr, COMPILED: tl.constexpr, INDEX32: tl.constexpr,
           KEEP_X: tl.constexpr):
    # One chunk of classes [k0, k0 + CHW): pass A (PASS_B false: returns m, s) or pass B
    # (its gradient shares stored).
    # (through _in_loop: the last chunk's pointers are not hoisted out of the row loop)
    ch = _in_loop(k0 + tl.arange(0, CHW), it, COMPILED)
    ch_ok = ch < C
    # As _along_x for rows a and a1, the channel offsets shared by the four taps; only
    # the last chunk has a class mask.
    if MASKED:
        ok = in_window[:, None] & ch_ok[None, :]
    else:
        ok = in_window[:, None]
    off = _offset(ch, INDEX32) * x_sc
    row_a = (off + _offset(a, INDEX32) * x_sh)[None, :]
    row_a1 = (off + _offset(a1, INDEX32) * x_sh)[None, :]
    top = (wx0[:, None] * tl.load(col0[:, None] + row_a, mask=ok, other=0.0).to(ACC)
           + wx1[:, None] * tl.load(col1[:, None] + row_a, mask=ok, other=0.0).to(ACC))
    bot = (wx0[:, None] * tl.load(col0[:, None] + row_a1, mask=ok, other=0.0).to(ACC)
           + wx1[:, None] * tl.load(col1[:, None] + row_a1, mask=ok, other=0.0).to(ACC))
    if PASS_B:
        g0, g1 = _chunk_grad(top, bot, k0, lse, labels, weights, lam_y_ptr, y, n, CHW, ROWS,
                             BLOCK_X, ACC, FAST_MATH)
        _store_shares(g0, g1, a, a1, from_above, a_lo, a_hi, group, gx_ptr, ch, ch_ok, g_sc,
                      g_sh, g_sw, it, lam_x_ptr, start_x_ptr, j_lo, j_hi, w, xs, xw, xe,
                      grad_scale, CHW, BLOCK_X, NRUN, KC, ACC, COMPILED, KEEP_X)
    else:
        m, s = _max_sum(m, s, top, bot, ch_ok, lam_y_ptr, y, n, ROWS, MASKED, FAST_MATH)
    return m, s


# Channel strides are never specialised to 1 (see upsample_loss_kernel).
@triton.jit(do_not_specialize=["x_sc", "gx_sc"])
def upsample_chunks_kernel(
    x_ptr, t_ptr, cw_ptr, gx_ptr, x_sb, x_sc, x_sh, x_sw, t_sb, t_sh, t_sw,
    gx_sb, gx_sc, gx_sh, gx_sw, ignore_index,
    index_ptr, lam_ptr, start_ptr, part_ptr, bad_ptr, n_parts, h, w, H, W,
    n_bands, n_strips, band_rows, strip_cells, grad_scale,
    C: tl.constexpr, HAS_WEIGHT: tl.constexpr, WRITE_GRAD: tl.constexpr, CH: tl.constexpr,
    CHT: tl.constexpr, ROWS: tl.constexpr, BLOCK_X: tl.constexpr, NRUN: tl.constexpr,
    KC: tl.constexpr, ACC_FP64: tl.constexpr, FAST_MATH: tl.constexpr,
    COMPILED: tl.constexpr, INDEX32: tl.constexpr = False, KEEP_Y: tl.constexpr = False,
    KEEP_X: tl.constexpr = False,
):
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    FULL: tl.constexpr = (C // CH) * CH  # classes in full chunks; the rest in one of CHT
    pid = tl.program_id(0)
    b, a_lo, a_hi, a_first, j_lo, j_hi, xs, x_own, xe = program_region(
        pid, n_strips, n_bands, band_rows, strip_cells, h, w, start_ptr)
    lam_y_ptr = lam_ptr
    lam_x_ptr = lam_ptr + H
    start_x_ptr = start_ptr + h + 1
    y_own = tl.load(start_ptr + a_lo)
    gx_img = gx_ptr + b * gx_sb

    lane = tl.arange(0, BLOCK_X)
    sem_loss = tl.zeros([BLOCK_X], ACC)
    sem_norm = tl.zeros([BLOCK_X], ACC)
    n_bad = tl.zeros([BLOCK_X], tl.int32)
    first_bad = tl.full([BLOCK_X], NO_PIXEL, tl.int64)  # flat index b H W + Y W + X

    xw = xs
    while xw < xe:  # one window unless the strip is wider than BLOCK_X columns
        X = xw + lane
        in_window = X < xe
        owned_x = in_window & (X >= x_own)
        i0x = tl.load(index_ptr + H + X, mask=in_window, other=0)
        wx1 = tl.load(lam_x_ptr + X, mask=in_window, other=0.0)
        wx0 = 1.0 - wx1
        i1x = second_tap(i0x, w, KEEP_X)
        Xl = X.to(tl.int64)
        col0 = x_ptr + b * x_sb + i0x.to(tl.int64) * x_sw  # a pixel's two tap columns
        col1 = x_ptr + b * x_sb + i1x.to(tl.int64) * x_sw
        t_col = t_ptr + b * t_sb + Xl * t_sw
        lane_first_row = tl.full([BLOCK_X], NO_ROW, tl.int32)  # of a bad label, per column

        a = a_first
        while a < a_hi:
            a1 = second_tap(a, h, KEEP_Y)
            # whether row a - 1 stored its bottom share in row a (never where the upsampling
            # keeps the height: a row's shares are then all its own)
            from_above = a > (h if KEEP_Y else 0)
            y = tl.load(start_ptr + a)
            y_end = tl.load(start_ptr + a + 1)
            group = 0
            while (y < y_end) | (group == 0):  # groups of ROWS rows (an empty run: one)
                n = tl.minimum(y_end - y, ROWS)
                # Pass A: the running max and sum of every row, chunk by chunk.
                m = tl.full([ROWS, BLOCK_X], float("-inf"), ACC)
                s = tl.zeros([ROWS, BLOCK_X], ACC)
                k0 = 0
                while k0 < FULL:
                    m, s = _chunk(k0, k0, col0, col1, m, s, s, s, s, a, a1, from_above, y, n,
                                  a_lo, a_hi, group, x_sc, x_sh, wx0, wx1, in_window,
                                  lam_y_ptr, gx_img, gx_sc, gx_sh, gx_sw, lam_x_ptr,
                                  start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale, C, CH,
                                  False, False, ROWS, BLOCK_X, NRUN, KC, ACC, FAST_MATH,
                                  COMPILED, INDEX32, KEEP_X)
                    k0 += CH
                if FULL < C:
                    m, s = _chunk(FULL, a, col0, col1, m, s, s, s, s, a, a1, from_above, y, n,
                                  a_lo, a_hi, group, x_sc, x_sh, wx0, wx1, in_window,
                                  lam_y_ptr, gx_img, gx_sc, gx_sh, gx_sw, lam_x_ptr,
                                  start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale, C, CHT,
                                  True, False, ROWS, BLOCK_X, NRUN, KC, ACC, FAST_MATH,
                                  COMPILED, INDEX32, KEEP_X)
                lse = _log(s, FAST_MATH) + m

                # Per row (not unrolled: per pixel, not per class): the label, its check
                # and weight, kept for pass B; the loss, v[target] re-read from its four
                # taps (cached loads).
                labels = tl.full([ROWS, BLOCK_X], -1, tl.int32)
                weights = tl.zeros([ROWS, BLOCK_X], ACC)
                r = 0
                while r < n:
                    Y = y + r
                    t = _label(tl.load(t_col + Y.to(tl.int64) * t_sh, mask=in_window, other=0))
                    labelled = in_window & (t != ignore_index)
                    valid = labelled & (t >= 0) & (t < C)
                    owned = owned_x & (Y >= y_own)
                    bad = owned & labelled & (valid == 0)
                    n_bad += bad.to(tl.int32)
                    lane_first_row = tl.where(bad & (lane_first_row == NO_ROW), Y,
                                              lane_first_row)
                    label = tl.where(valid, t.to(tl.int32), -1)
                    if HAS_WEIGHT:
                        wt = tl.load(cw_ptr + label, mask=valid, other=0.0).to(ACC)
                    else:
                        wt = valid.to(ACC)
                    sem_norm += tl.where(owned, wt, 0.0)
                    wy1 = tl.load(lam_y_ptr + Y)
                    wy0 = 1.0 - wy1
                    v_target = _tap_value(col0, col1, label, x_sc, a, a1, x_sh, wx0, wx1, wy0,
                                          wy1, valid, ACC, INDEX32)
                    sem_loss += tl.where(valid & owned, wt * (_row(lse, r, ROWS) - v_target),
                                         0.0)
                    labels = _put(labels, r, label, ROWS)
                    weights = _put(weights, r, wt, ROWS)
                    r += 1

                # Pass B: each chunk's gradient shares of rows a and a + 1, stored.
                if WRITE_GRAD:
                    k0 = 0
                    while k0 < FULL:
                        _chunk(k0, k0, col0, col1, m, s, lse, labels, weights, a, a1,
                               from_above, y, n, a_lo, a_hi, group, x_sc, x_sh, wx0, wx1,
                               in_window, lam_y_ptr, gx_img, gx_sc, gx_sh, gx_sw, lam_x_ptr,
                               start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale, C, CH,
                               False, True, ROWS, BLOCK_X, NRUN, KC, ACC, FAST_MATH, COMPILED,
                               INDEX32, KEEP_X)
                        k0 += CH
                    if FULL < C:
                        _chunk(FULL, a, col0, col1, m, s, lse, labels, weights, a, a1,
                               from_above, y, n, a_lo, a_hi, group, x_sc, x_sh, wx0, wx1,
                               in_window, lam_y_ptr, gx_img, gx_sc, gx_sh, gx_sw, lam_x_ptr,
                               start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale, C, CHT,
                               True, True, ROWS, BLOCK_X, NRUN, KC, ACC, FAST_MATH, COMPILED,
                               INDEX32, KEEP_X)
                y += ROWS
                group += 1
            a += 1
        # This window's first bad label per column: its flat index.
        named = lane_first_row != NO_ROW
        flat = b * H * W + lane_first_row.to(tl.int64) * W + Xl
        first_bad = tl.where(named & (flat < first_bad), flat, first_bad)
        tl.debug_barrier()  # a later window reads the cells this one stored
        xw += BLOCK_X

    store_semantic_partials(part_ptr, bad_ptr, n_parts, pid, sem_loss, sem_norm, n_bad,
                            first_bad, t_ptr, b, t_sb, t_sh, t_sw, H, W)
