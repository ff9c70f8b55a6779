"""The multi-task loss straight from low-resolution predictions (fused bilinear upsampling).

A head that predicts u at h x w while the targets are H x W is trained on the
bilinear upsampling v = up(u) (``F.interpolate(u, (H, W), mode="bilinear")``).
This kernel never stores v or its gradient: v is interpolated on the fly from the
tables of ``bilinear_tables.py`` and the gradient dv is reduced straight to h x w.

Work split. Full-resolution row Y belongs to the low-resolution row i0(Y) of its first
tap (the rows of low-resolution row a are [start_y[a], start_y[a + 1])), and likewise
for columns (runs). A program takes one image, a band of low-resolution rows
[a_lo, a_hi) and a strip of low-resolution columns [j_lo, j_hi), and writes the
gradient of exactly those cells, once, in the prediction's layout. Cell (i, j)
receives from the pixels of rows i - 1 and i and columns j - 1 and j, so the program
also walks row a_lo - 1 and run j_lo - 1 (its neighbours' too; their loss is not
counted here): no cell is shared, nothing is atomic, nothing gradient-sized is
allocated besides the gradient.

Each thread holds one full-resolution column X of the strip's window (BLOCK_X
columns) with its classes in registers, and walks the rows:

    top[X, c] = wx0 u[c, a, i0(X)] + wx1 u[c, a, i1(X)]     (once per low-res row;
    bot[X, c] = the same at row a1 = second_tap(a)            top of a + 1 = bot of a)
    v = wy0(Y) top + wy1(Y) bot                                (PyTorch's order)
    semantic: loss = w_t (logsumexp v - v_t), dv = w_t (softmax(v) - onehot(t))
              (w_t = class_weight[t] or 1 on valid pixels, 0 on ignored ones: an ignored
              pixel's dv is 0 * softmax(v), NaN where v is, as F.cross_entropy's)
    instance: loss = sum_ch |v_ch - g_ch|, dv = sign(v - g)   (pixels in the mask)
    depth:    loss = |v - z|, dv = sign(v - z)                  (z finite and > 0)
    A += dv, Bc += wy1 dv                                       (registers, per X)

with the targets loaded two rows ahead. At the end of low-resolution row a,
T = A - Bc = sum_Y wy0 dv (plus row a - 1's carried bottom part) is row a's gradient per
column; ``_reduce_runs`` sums it over the runs into the cells,
gradient(a, j) = sum_{X in run j} wx0 T + sum_{X in run j-1} wx1 T, stored times
``grad_scale``; then A = Bc, Bc = 0. On the last row and column, and on every row or
column of an axis the upsampling keeps (KEEP_Y: h = H, KEEP_X: w = W), both taps are the
same cell, as PyTorch takes them (``second_tap``): the bottom and second parts stay there,
nothing is carried on, and the row's top is its bottom.
A strip wider than one window (heads much narrower than the targets) is walked in
several windows; later ones add to the cells the earlier ones stored (after a barrier).

Partial sums per program: part[k, pid] (loss sums of the tasks, then normalisers) and
bad[:, pid], the labels outside [0, C) that are not ignore_index among the pixels the
program owns: their count, the flat index b H W + Y W + X of the first and its value.
Runtime loops are ``while`` loops (the Triton interpreter rejects a runtime ``range``
bound with NumPy >= 2.4).
"""
import triton
import triton.language as tl

from .casts import to_element
from .upsample_reduce import NO_PIXEL, ROW_NORM

__all__ = ["upsample_loss_kernel"]

NO_ROW = tl.constexpr(2147483647)  # no bad label in this column yet
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _sign(v):
    # The derivative of |v| as torch computes it: sign(0) = 0, and 0 for NaN.
    return tl.where(v > 0, 1.0, 0.0) - tl.where(v < 0, 1.0, 0.0)


@triton.jit
def _label(t):
    # Labels as signed integers of at least 32 bits (int64 stays int64: a label past
    # 2**31 must not wrap into [0, C)).
    return t.to(tl.int64 if t.dtype == tl.int64 else tl.int32)


@triton.jit
def _exp2(x, FAST_MATH: tl.constexpr):
    # 2^x. FAST_MATH (float32, compiled): ex2.approx.ftz, one instruction; values below
    # 2**-126 (probabilities that add nothing) flush to 0.
    if FAST_MATH:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    return tl.exp2(x)


@triton.jit
def _exp_shifted(v, v_max, FAST_MATH: tl.constexpr):
    # exp(v - v_max) per row of v (FAST_MATH: through ``_exp2``).
    if FAST_MATH:
        return _exp2(v * LOG2E - (v_max * LOG2E)[:, None], FAST_MATH)
    return tl.exp(v - v_max[:, None])


@triton.jit
def _log(x, FAST_MATH: tl.constexpr):
    if FAST_MATH:
        log2 = tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
        return log2 * 0.6931471805599453
    return tl.log(x)


@triton.jit
def _divide(num, den, FAST_MATH: tl.constexpr):
    # num / den for a softmax sum den (at least 1, or NaN). FAST_MATH (float32, compiled):
    # rcp.approx.ftz and a multiply, where `/` wraps its reciprocal in range fix-ups (6
    # instructions less per target pixel).
    if FAST_MATH:
        rcp = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [den],
                                        dtype=tl.float32, is_pure=True, pack=1)
        return num * rcp
    return num / den


@triton.jit
def _fold(v, MAX: tl.constexpr):
    # [X, n] -> [X, n / 2]: adjacent classes combined (their maximum, or their sum)
    a, b = tl.split(tl.reshape(v, [v.shape[0], v.shape[1] // 2, 2]))
    return tl.maximum(a, b) if MAX else a + b


@triton.jit
def _tree(v, MAX: tl.constexpr, BLOCK_C: tl.constexpr):
    # The maximum or the sum over the classes of each column. Where a thread holds all of
    # them (BLOCK_C <= 32), a tree of pairs, log2 BLOCK_C deep, where tl.max and tl.sum
    # chain the classes one after the other; otherwise (the warps share the classes) those.
    if BLOCK_C > 32:
        out = tl.max(v, 1) if MAX else tl.sum(v, 1)
    else:
        if BLOCK_C >= 32:
            v = _fold(v, MAX)
        if BLOCK_C >= 16:
            v = _fold(v, MAX)
        if BLOCK_C >= 8:
            v = _fold(v, MAX)
        if BLOCK_C >= 4:
            v = _fold(v, MAX)
        if BLOCK_C >= 2:
            v = _fold(v, MAX)
        out = tl.reshape(v, [v.shape[0]])
    return out


@triton.jit
def _offset(v, INDEX32: tl.constexpr):
    # v as an element offset within one image of a prediction tensor (its channel and row
    # part; the image's own start is in the pointer, in 64 bits): 32-bit where the launch
    # found every image of the predictions within 2**31 elements (``INDEX32``), so that a
    # tap's address is one IMAD.WIDE of the offset onto its column's pointer instead of a
    # 64-bit multiply, shift and add per element; 64-bit otherwise.
    if INDEX32:
        return v.to(tl.int32)
    else:
        return v.to(tl.int64)


@triton.jit
def _tap(col, ch, ch_ok, ch_stride, row, s_h, in_window, INDEX32: tl.constexpr = False):
    # u[c, row, i(X)] for the window's columns (col: pointers to the image's tap column i(X)),
    # as loaded. Tiles are (columns, channels): with gathered columns, this order is the one
    # for which Triton keeps a column's channels in one thread and spreads the columns over
    # lanes.
    r = _offset(row, INDEX32) * s_h + _offset(ch, INDEX32)[None, :] * ch_stride
    return tl.load(col[:, None] + r, mask=in_window[:, None] & ch_ok[None, :], other=0.0)


@triton.jit
def _along_x(col0, col1, ch, ch_ok, ch_stride, row, s_h, wx0, wx1, in_window, ACC: tl.constexpr,
             INDEX32: tl.constexpr = False):
    # out[X, c] = wx0(X) u[c, row, i0(X)] + wx1(X) u[c, row, i1(X)] for the window's columns
    # (col0/col1: pointers to the image's tap columns i0(X), i1(X)).
    u0 = _tap(col0, ch, ch_ok, ch_stride, row, s_h, in_window, INDEX32)
    u1 = _tap(col1, ch, ch_ok, ch_stride, row, s_h, in_window, INDEX32)
    return wx0[:, None] * u0.to(ACC) + wx1[:, None] * u1.to(ACC)


@triton.jit
def _tap_value(col0, col1, ch, ch_stride, a, a1, s_h, wx0, wx1, wy0, wy1, ok,
               ACC: tl.constexpr, INDEX32: tl.constexpr = False):
    # wy0 (wx0 u[ch, a, i0] + wx1 u[ch, a, i1]) + wy1 (wx0 u[ch, a1, i0] + wx1 u[ch, a1, i1]),
    # one channel ch per pixel (col0/col1: the pixel's tap columns).
    channel = _offset(ch, INDEX32) * ch_stride
    r0 = channel + _offset(a, INDEX32) * s_h
    r1 = channel + _offset(a1, INDEX32) * s_h
    u00 = tl.load(col0 + r0, mask=ok, other=0.0).to(ACC)
    u01 = tl.load(col1 + r0, mask=ok, other=0.0).to(ACC)
    u10 = tl.load(col0 + r1, mask=ok, other=0.0).to(ACC)
    u11 = tl.load(col1 + r1, mask=ok, other=0.0).to(ACC)
    return wy0 * (wx0 * u00 + wx1 * u01) + wy1 * (wx0 * u10 + wx1 * u11)


@triton.jit
def _in_loop(x, a, COMPILED: tl.constexpr):
    # x, made to depend on the loop counter a (compiled: an opaque move), so that what is
    # computed from it is recomputed per iteration rather than hoisted and kept live.
    if COMPILED:
        return tl.inline_asm_elementwise("mov.b32 $0, $1; // $2", "=r,r,r", [x, a + x * 0],
                                         dtype=tl.int32, is_pure=True, pack=1)
    return x


@triton.jit
def second_tap(i, n, KEEP: tl.constexpr):
    """The second tap of index i on an axis of n cells, as PyTorch's upsample_bilinear2d
    takes it: the next cell, or i itself on the axis's last cell, and on every cell where
    the upsampling keeps the axis's size (KEEP)."""
    if KEEP:
        return i
    else:
        return tl.minimum(i + 1, n - 1)


@triton.jit
def _reduce_runs(T, lam_x_ptr, run_lo, run_hi, last, xw, k_max, a, BLOCK_CH: tl.constexpr,
                 BLOCK_X: tl.constexpr, NRUN: tl.constexpr, KC: tl.constexpr,
                 ACC: tl.constexpr, COMPILED: tl.constexpr, KEEP_X: tl.constexpr = False):
    # T[X - xw, c] per window column. Run r covers the window columns [run_lo[r], run_hi[r]).
    # Returns cells[r, c] = sum_{X in run r} (1 - lam(X)) T + sum_{X in run r-1} lam(X) T
    # (cell r - 1's second taps land on cell r; where `last`, run r's own second taps land
    # on cell r too: the image's last column, and with KEEP_X, where the upsampling keeps the
    # width, every column). The runs' columns are gathered KC at a
    # time through shared memory (one-dimensional gathers: each thread then adds up KC
    # columns of one run and class), outside the row loop.
    flat = tl.reshape(T, [BLOCK_X * BLOCK_CH])
    ch = _in_loop(tl.arange(0, BLOCK_CH), a, COMPILED)
    k = _in_loop(tl.arange(0, KC), a, COMPILED)
    total = tl.zeros([NRUN, BLOCK_CH], ACC)  # sum_{X in run} T
    second = tl.zeros([NRUN, BLOCK_CH], ACC)  # sum_{X in run} lam(X) T
    k0 = 0
    while k0 < k_max:
        # (slot, run, channel) tensors: the slots of a run stay in one thread.
        X = run_lo[None, :] + k0 + k[:, None]
        in_run = X < run_hi[None, :]
        lam = tl.load(lam_x_ptr + X, mask=in_run, other=0.0)[:, :, None]
        at = tl.minimum(X - xw, BLOCK_X - 1)[:, :, None] * BLOCK_CH + ch[None, None, :]
        g = tl.reshape(tl.gather(flat, tl.reshape(at, [KC * NRUN * BLOCK_CH]), 0),
                       [KC, NRUN, BLOCK_CH])
        g = tl.where(in_run[:, :, None], g, 0.0)
        total += tl.sum(g, 0)
        second += tl.sum(lam * g, 0)
        k0 += KC
    r = _in_loop(tl.arange(0, NRUN), a, COMPILED)
    previous = (tl.maximum(r - 1, 0)[:, None] * BLOCK_CH + ch[None, :])
    shifted = tl.reshape(tl.gather(tl.reshape(second, [NRUN * BLOCK_CH]),
                                   tl.reshape(previous, [NRUN * BLOCK_CH]), 0),
                         [NRUN, BLOCK_CH])
    if KEEP_X:
        return total
    else:
        # The last cell's second taps are the cell itself.
        own = tl.where(last[:, None], total, total - second)
        return own + tl.where(r[:, None] > 0, shifted, 0.0)


@triton.jit
def _window_runs(j_lo, j_hi, start_x_ptr, xw, xe, it, BLOCK_X: tl.constexpr,
                 NRUN: tl.constexpr, COMPILED: tl.constexpr):
    # The runs r = 0 .. NRUN-1 of cells j_lo - 1 + r in window [xw, min(xw + BLOCK_X, xe)):
    # (cell, its columns [lo, hi) in the window, the most columns of any run, whether the
    # window writes the cell, the first column of the run before it). Read from the start
    # table here (``it``: the row-loop counter), so that nothing run-shaped stays live
    # across the row loop.
    r = _in_loop(tl.arange(0, NRUN), it, COMPILED)
    cell = j_lo - 1 + r
    run_exists = (cell >= 0) & (cell < j_hi)
    run_start = tl.load(start_x_ptr + cell, mask=run_exists, other=0)
    run_end = tl.load(start_x_ptr + cell + 1, mask=run_exists, other=0)
    reach_start = tl.load(start_x_ptr + tl.maximum(cell - 1, 0), mask=run_exists, other=0)
    lo = tl.maximum(run_start, xw)
    hi = tl.minimum(run_end, tl.minimum(xw + BLOCK_X, xe))
    cell_ok = run_exists & (cell >= j_lo) & (reach_start < xw + BLOCK_X) & (run_end > xw)
    return cell, lo, hi, tl.max(hi - lo, 0), cell_ok, reach_start


@triton.jit
def _run_cells(acc_a, acc_b, last_row, a, lam_x_ptr, start_x_ptr, j_lo, j_hi, w, xs, xw, xe,
               grad_scale, BLOCK_CH: tl.constexpr, BLOCK_X: tl.constexpr, NRUN: tl.constexpr,
               KC: tl.constexpr, ACC: tl.constexpr, COMPILED: tl.constexpr,
               KEEP_X: tl.constexpr = False):
    # Gradient of low-resolution row a, cells [j_lo, j_hi): per column, T = acc_a - acc_b
    # (its bottom part acc_b belongs to row a + 1, or to row a itself where ``last_row``:
    # the image's last row, or any row of an axis the upsampling keeps), reduced over the
    # runs of this window [xw, min(xw + BLOCK_X, xe)), times grad_scale: (value[r, ch],
    # cell[r], whether this window writes cell r, whether it is the first to: the first
    # window that reaches a cell stores it).
    cell, lo, hi, k_max, cell_ok, reach_start = _window_runs(j_lo, j_hi, start_x_ptr, xw, xe, a,
                                                             BLOCK_X, NRUN, COMPILED)
    first = (reach_start >= xw) | (xw == xs)

    T = acc_a - tl.where(last_row, 0.0, acc_b)
    value = _reduce_runs(T, lam_x_ptr, lo, hi, cell == w - 1, xw, k_max, a, BLOCK_CH, BLOCK_X,
                         NRUN, KC, ACC, COMPILED, KEEP_X) * grad_scale
    return value, cell, cell_ok, first


@triton.jit
def _write_cells(value, cell, cell_ok, first, g_ptr, ch, ch_ok, g_sc, g_sh, g_sw, a,
                 ACC: tl.constexpr, COMPILED: tl.constexpr):
    # ``_run_cells``' value[r, ch] stored to row a's cells, or added to what an earlier
    # window of this program stored there.
    ch = _in_loop(ch, a, COMPILED)
    p = (g_ptr + a.to(tl.int64) * g_sh + cell.to(tl.int64)[:, None] * g_sw
         + ch.to(tl.int64)[None, :] * g_sc)
    ok = cell_ok[:, None] & ch_ok[None, :]
    earlier = tl.load(p, mask=ok & (first == 0)[:, None], other=0.0).to(ACC)
    tl.store(p, to_element(earlier + value, g_ptr), mask=ok)


@triton.jit
def _store_cells(acc_a, acc_b, last_row, g_ptr, ch, ch_ok, g_sc, g_sh, g_sw, a, lam_x_ptr,
                 start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale, BLOCK_CH: tl.constexpr,
                 BLOCK_X: tl.constexpr, NRUN: tl.constexpr, KC: tl.constexpr,
                 ACC: tl.constexpr, COMPILED: tl.constexpr, KEEP_X: tl.constexpr = False):
    # Row a's gradient cells of one task (``_run_cells``, ``_write_cells``).
    value, cell, cell_ok, first = _run_cells(acc_a, acc_b, last_row, a, lam_x_ptr, start_x_ptr,
                                             j_lo, j_hi, w, xs, xw, xe, grad_scale, BLOCK_CH,
                                             BLOCK_X, NRUN, KC, ACC, COMPILED, KEEP_X)
    _write_cells(value, cell, cell_ok, first, g_ptr, ch, ch_ok, g_sc, g_sh, g_sw, a, ACC,
                 COMPILED)


@triton.jit
def _semantic_row(Y, wy0, wy1, owned, later, Yn, t_row, t_sh, t_next, t_after, in_window,
                  ignore_index, C, cw_ptr, classes, class_ok, x_col0, x_col1, x_sc, x_sh, a, a1,
                  wx0, wx1, xa, xb, n_bad, lane_first_row, sem_loss, sem_norm, dx_a, dx_b,
                  HAS_WEIGHT: tl.constexpr, WRITE_GRAD: tl.constexpr, FAST_MATH: tl.constexpr,
                  ACC: tl.constexpr, INDEX32: tl.constexpr):
    """Target row Y of the semantic task: its label check, loss and gradient (added to
    dx_a, and times wy1 to dx_b). The row's logits are v = wy0 xa + wy1 xb (xa, xb: top
    and bot)."""
    t = _label(t_next)
    t_next = t_after
    t_after = tl.load(t_row + Yn * t_sh, mask=later, other=0)
    labelled = in_window & (t != ignore_index)
    valid = labelled & (t >= 0) & (t < C)
    bad = owned & labelled & (valid == 0)
    n_bad += bad.to(tl.int32)
    # Rows come in order, so a column's first bad label stays its first.
    lane_first_row = tl.where(bad & (lane_first_row == NO_ROW), Y, lane_first_row)
    label = tl.where(valid, t.to(tl.int32), -1)
    if HAS_WEIGHT:
        wt = tl.load(cw_ptr + label, mask=valid, other=0.0).to(ACC)
    else:
        wt = valid.to(ACC)
    v = wy0 * xa + wy1 * xb
    v = tl.where(class_ok[None, :], v, float("-inf"))
    v_max = _tree(v, True, v.shape[1])
    e = tl.where(class_ok[None, :], _exp_shifted(v, v_max, FAST_MATH), 0.0)
    denom = _tree(e, False, v.shape[1])
    lse = _log(denom, FAST_MATH) + v_max
    # Padding classes (C < BLOCK_C) are constants here, so they cost nothing.
    is_target = (label[:, None] == classes[None, :]) & class_ok[None, :]
    # v[target], recomputed from its four taps (cached loads) as v is.
    v_target = _tap_value(x_col0, x_col1, label, x_sc, a, a1, x_sh, wx0, wx1, wy0, wy1, valid,
                          ACC, INDEX32)
    sem_loss += tl.where(valid & owned, wt * (lse - v_target), 0.0)
    sem_norm += tl.where(owned, wt, 0.0)
    if WRITE_GRAD:
        dv = e * _divide(wt, denom, FAST_MATH)[:, None] - tl.where(is_target, wt[:, None], 0.0)
        dx_a += tl.where(class_ok[None, :], dv, 0.0)
        dx_b += tl.where(class_ok[None, :], wy1 * dv, 0.0)
    return t_next, t_after, n_bad, lane_first_row, sem_loss, sem_norm, dx_a, dx_b


@triton.jit
def _row_weights(lam_y_ptr, Y, owned_x, y_own, in_window, y_stop):
    """Row Y's weights (wy0, wy1), which of its columns the program owns, and for the
    targets loaded two rows ahead (their latency overlaps two rows of work) row Y + 2 and
    whether it is walked."""
    wy1 = tl.load(lam_y_ptr + Y)
    owned = owned_x & (Y >= y_own)
    later = in_window & (Y + 2 < y_stop)
    return 1.0 - wy1, wy1, owned, later, (Y + 2).to(tl.int64)


@triton.jit
def program_region(pid, n_strips, n_bands, band_rows, strip_cells, h, w, start_ptr):
    """The part of the problem program ``pid`` owns: image b, low-resolution rows
    [a_lo, a_hi) (it also walks a_first = a_lo - 1), cells [j_lo, j_hi), and the
    full-resolution columns it walks, [xs, xe), of which it owns those from x_own."""
    strip = pid % n_strips
    band = (pid // n_strips) % n_bands
    b = (pid // n_strips // n_bands).to(tl.int64)
    a_lo = band * band_rows
    a_hi = tl.minimum(a_lo + band_rows, h)
    a_first = tl.maximum(a_lo - 1, 0)
    j_lo = strip * strip_cells
    j_hi = tl.minimum(j_lo + strip_cells, w)
    start_x_ptr = start_ptr + h + 1
    xs = tl.load(start_x_ptr + tl.maximum(j_lo - 1, 0))  # first column of run j_lo - 1
    x_own = tl.load(start_x_ptr + j_lo)                   # first column this program owns
    xe = tl.load(start_x_ptr + j_hi)
    return b, a_lo, a_hi, a_first, j_lo, j_hi, xs, x_own, xe


@triton.jit
def store_semantic_partials(part_ptr, bad_ptr, n_parts, pid, sem_loss, sem_norm, n_bad,
                            first_bad, t_ptr, b, t_sb, t_sh, t_sw, H, W):
    """The semantic task's partial sums of program pid: loss, normaliser, and the bad labels'
    count, first flat index and its value (read again from the targets: fewer registers
    than carrying it)."""
    tl.store(part_ptr + pid, tl.sum(sem_loss, 0))
    tl.store(part_ptr + ROW_NORM * n_parts + pid, tl.sum(sem_norm, 0))
    first_index = tl.min(first_bad, 0)
    tl.store(bad_ptr + pid, tl.sum(n_bad, 0).to(tl.int64))
    tl.store(bad_ptr + n_parts + pid, first_index)
    found = first_index != NO_PIXEL
    in_image = first_index - b * H * W
    bad_row = tl.where(found, in_image // W, 0)
    bad_col = tl.where(found, in_image - bad_row * W, 0)
    tl.store(bad_ptr + 2 * n_parts + pid,
             tl.load(t_ptr + b * t_sb + bad_row * t_sh + bad_col * t_sw, mask=found,
                     other=0).to(tl.int64))


@triton.jit
def semantic_program(
    pid,
    x_ptr, t_ptr, cw_ptr, gx_ptr, x_sb, x_sc, x_sh, x_sw, t_sb, t_sh, t_sw,
    gx_sb, gx_sc, gx_sh, gx_sw, ignore_index,
    o_ptr, g_ptr, m_ptr, go_ptr, o_sb, o_sc, o_sh, o_sw, g_sb, g_sc, g_sh, g_sw,
    m_sb, m_sh, m_sw, go_sb, go_sc, go_sh, go_sw,
    d_ptr, z_ptr, gd_ptr, d_sb, d_sh, d_sw, z_sb, z_sh, z_sw, gd_sb, gd_sh, gd_sw,
    index_ptr, lam_ptr, start_ptr, part_ptr, bad_ptr, n_parts, h, w, H, W,
    n_bands, n_strips, band_rows, strip_cells, grad_scale,
    C: tl.constexpr, HAS_SEM: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_INST: tl.constexpr,
    HAS_DEP: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_X: tl.constexpr, NRUN: tl.constexpr, KC: tl.constexpr, ACC_FP64: tl.constexpr,
    FAST_MATH: tl.constexpr, COMPILED: tl.constexpr, INDEX32: tl.constexpr = False,
    KEEP_Y: tl.constexpr = False, KEEP_X: tl.constexpr = False,
):
    """The semantic launch's program ``pid`` (``upsample_loss_kernel``; ``upsample_both_kernel``
    gives it the semantic share of its grid)."""
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    # With 32-bit offsets the logits' per-class tap offsets are recomputed per low-resolution
    # row (``_in_loop``): hoisted, ptxas keeps them live across the program and spills.
    OPAQUE: tl.constexpr = COMPILED and INDEX32
    b, a_lo, a_hi, a_first, j_lo, j_hi, xs, x_own, xe = program_region(
        pid, n_strips, n_bands, band_rows, strip_cells, h, w, start_ptr)
    lam_y_ptr = lam_ptr
    lam_x_ptr = lam_ptr + H
    start_x_ptr = start_ptr + h + 1
    y_first = tl.load(start_ptr + a_first)
    y_stop = tl.load(start_ptr + a_hi)
    y_own = tl.load(start_ptr + a_lo)

    classes = tl.arange(0, BLOCK_C)
    class_ok = classes < C
    offset_ch = tl.arange(0, 2)
    depth_ch = tl.arange(0, 1)
    lane = tl.arange(0, BLOCK_X)
    sem_loss = tl.zeros([BLOCK_X], ACC)
    sem_norm = tl.zeros([BLOCK_X], ACC)
    n_bad = tl.zeros([BLOCK_X], tl.int32)
    first_bad = tl.full([BLOCK_X], NO_PIXEL, tl.int64)  # flat index b H W + Y W + X
    lane_first_row = tl.full([BLOCK_X], NO_ROW, tl.int32)  # of a bad label, per column
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
        Xl = X.to(tl.int64)

        if HAS_SEM:
            x_col0 = x_ptr + b * x_sb + i0x.to(tl.int64) * x_sw  # a pixel's two tap columns
            x_col1 = x_ptr + b * x_sb + i1x.to(tl.int64) * x_sw
            x_top = _along_x(x_col0, x_col1, _in_loop(classes, xw, OPAQUE), class_ok, x_sc,
                             a_first, x_sh, wx0, wx1, in_window, ACC, INDEX32)
            dx_a = tl.zeros([BLOCK_X, BLOCK_C], ACC)
            dx_b = tl.zeros([BLOCK_X, BLOCK_C], ACC)
            t_row = t_ptr + b * t_sb + Xl * t_sw
            t_next = tl.load(t_row + y_first.to(tl.int64) * t_sh, mask=in_window, other=0)
            t_after = tl.load(t_row + (y_first + 1).to(tl.int64) * t_sh,
                              mask=in_window & (y_first + 1 < y_stop), other=0)
        if HAS_INST:
            o_col0 = o_ptr + b * o_sb + i0x.to(tl.int64) * o_sw
            o_col1 = o_ptr + b * o_sb + i1x.to(tl.int64) * o_sw
            o_top = _along_x(o_col0, o_col1, offset_ch, offset_ch < 2, o_sc, a_first, o_sh, wx0,
                             wx1, in_window, ACC)
            do_a = tl.zeros([BLOCK_X, 2], ACC)
            do_b = tl.zeros([BLOCK_X, 2], ACC)
            m_row = m_ptr + b * m_sb + Xl * m_sw
            g_row = g_ptr + b * g_sb + (Xl * g_sw)[:, None] + offset_ch.to(tl.int64)[None, :] * g_sc
            m_next = tl.load(m_row + y_first.to(tl.int64) * m_sh, mask=in_window, other=0)
            g_next = tl.load(g_row + y_first.to(tl.int64) * g_sh, mask=in_window[:, None],
                             other=0.0)
            second = in_window & (y_first + 1 < y_stop)
            m_after = tl.load(m_row + (y_first + 1).to(tl.int64) * m_sh, mask=second, other=0)
            g_after = tl.load(g_row + (y_first + 1).to(tl.int64) * g_sh, mask=second[:, None],
                              other=0.0)
        if HAS_DEP:
            d_col0 = d_ptr + b * d_sb + i0x.to(tl.int64) * d_sw
            d_col1 = d_ptr + b * d_sb + i1x.to(tl.int64) * d_sw
            d_top = _along_x(d_col0, d_col1, depth_ch, depth_ch < 1, 0, a_first, d_sh, wx0, wx1,
                             in_window, ACC)
            dd_a = tl.zeros([BLOCK_X, 1], ACC)
            dd_b = tl.zeros([BLOCK_X, 1], ACC)
            z_row = z_ptr + b * z_sb + Xl * z_sw
            z_next = tl.load(z_row + y_first.to(tl.int64) * z_sh, mask=in_window, other=0.0)
            z_after = tl.load(z_row + (y_first + 1).to(tl.int64) * z_sh,
                              mask=in_window & (y_first + 1 < y_stop), other=0.0)

        Y = y_first
        a = a_first
        while a < a_hi:
            a1 = second_tap(a, h, KEEP_Y)
            y_end = tl.load(start_ptr + a + 1)
            if HAS_SEM:
                x_bot = _along_x(x_col0, x_col1, _in_loop(classes, a, OPAQUE), class_ok, x_sc,
                                 a1, x_sh, wx0, wx1, in_window, ACC, INDEX32)
                if KEEP_Y:  # the top is this row too: the upsampling keeps the height
                    x_top = x_bot
            if HAS_INST:
                o_bot = _along_x(o_col0, o_col1, offset_ch, offset_ch < 2, o_sc, a1, o_sh, wx0,
                                 wx1, in_window, ACC)
                if KEEP_Y:
                    o_top = o_bot
            if HAS_DEP:
                d_bot = _along_x(d_col0, d_col1, depth_ch, depth_ch < 1, 0, a1, d_sh, wx0, wx1,
                                 in_window, ACC)
                if KEEP_Y:
                    d_top = d_bot
            while Y < y_end:  # every task of the launch in one loop
                wy0, wy1, owned, later, Yn = _row_weights(lam_y_ptr, Y, owned_x, y_own,
                                                          in_window, y_stop)
                if HAS_SEM:
                    (t_next, t_after, n_bad, lane_first_row, sem_loss, sem_norm, dx_a,
                     dx_b) = _semantic_row(
                        Y, wy0, wy1, owned, later, Yn, t_row, t_sh, t_next, t_after, in_window,
                        ignore_index, C, cw_ptr, classes, class_ok, x_col0, x_col1, x_sc, x_sh,
                        a, a1, wx0, wx1, x_top, x_bot, n_bad, lane_first_row, sem_loss,
                        sem_norm, dx_a, dx_b, HAS_WEIGHT, WRITE_GRAD, FAST_MATH, ACC, INDEX32)
                if HAS_INST:
                    in_mask = in_window & (m_next != 0)
                    target = g_next.to(ACC)
                    m_next = m_after
                    g_next = g_after
                    m_after = tl.load(m_row + Yn * m_sh, mask=later, other=0)
                    g_after = tl.load(g_row + Yn * g_sh, mask=later[:, None], other=0.0)
                    diff = wy0 * o_top + wy1 * o_bot - target
                    inst_loss += tl.where(in_mask & owned, tl.sum(tl.abs(diff), 1), 0.0)
                    inst_norm += (in_mask & owned).to(ACC)
                    if WRITE_GRAD:
                        dv = tl.where(in_mask[:, None], _sign(diff), 0.0)
                        do_a += dv
                        do_b += wy1 * dv
                if HAS_DEP:
                    z = z_next.to(ACC)
                    z_next = z_after
                    z_after = tl.load(z_row + Yn * z_sh, mask=later, other=0.0)
                    measured = in_window & (z > 0) & (z < float("inf"))
                    diff = wy0 * d_top + wy1 * d_bot - tl.where(measured, z, 0.0)[:, None]
                    dep_loss += tl.where(measured & owned, tl.sum(tl.abs(diff), 1), 0.0)
                    dep_norm += (measured & owned).to(ACC)
                    if WRITE_GRAD:
                        dv = tl.where(measured[:, None], _sign(diff), 0.0)
                        dd_a += dv
                        dd_b += wy1 * dv
                Y += 1
            # Owner row a is done: its gradient row (rows of a - 1 before a_lo are only
            # walked for their bottom part) goes to the cells, its bottom part carries on.
            if WRITE_GRAD:
                if a >= a_lo:
                    if HAS_SEM:
                        _store_cells(dx_a, dx_b, a1 == a, gx_ptr + b * gx_sb, classes, class_ok,
                                     gx_sc, gx_sh, gx_sw, a, lam_x_ptr, start_x_ptr, j_lo, j_hi,
                                     w, xs, xw, xe, grad_scale, BLOCK_C, BLOCK_X, NRUN, KC,
                                     ACC, COMPILED, KEEP_X)
                    if HAS_INST:
                        _store_cells(do_a, do_b, a1 == a, go_ptr + b * go_sb, offset_ch,
                                     offset_ch < 2, go_sc, go_sh, go_sw, a, lam_x_ptr,
                                     start_x_ptr, j_lo, j_hi, w, xs, xw, xe, grad_scale, 2,
                                     BLOCK_X, NRUN, KC, ACC, COMPILED, KEEP_X)
                    if HAS_DEP:
                        _store_cells(dd_a, dd_b, a1 == a, gd_ptr + b * gd_sb, depth_ch,
                                     depth_ch < 1, 0, gd_sh, gd_sw, a, lam_x_ptr, start_x_ptr,
                                     j_lo, j_hi, w, xs, xw, xe, grad_scale, 1, BLOCK_X, NRUN,
                                     KC, ACC, COMPILED, KEEP_X)
                # (where the upsampling keeps the height, a row's second taps are its own:
                # nothing carries on)
                if HAS_SEM:
                    dx_a = dx_b
                    if KEEP_Y:
                        dx_a = tl.zeros([BLOCK_X, BLOCK_C], ACC)
                    dx_b = tl.zeros([BLOCK_X, BLOCK_C], ACC)
                if HAS_INST:
                    do_a = do_b
                    if KEEP_Y:
                        do_a = tl.zeros([BLOCK_X, 2], ACC)
                    do_b = tl.zeros([BLOCK_X, 2], ACC)
                if HAS_DEP:
                    dd_a = dd_b
                    if KEEP_Y:
                        dd_a = tl.zeros([BLOCK_X, 1], ACC)
                    dd_b = tl.zeros([BLOCK_X, 1], ACC)
            if HAS_SEM:
                x_top = x_bot
            if HAS_INST:
                o_top = o_bot
            if HAS_DEP:
                d_top = d_bot
            a += 1
        if HAS_SEM:  # this window's first bad label per column: its flat index and value
            named = lane_first_row != NO_ROW
            flat = b * H * W + lane_first_row.to(tl.int64) * W + Xl
            first_bad = tl.where(named & (flat < first_bad), flat, first_bad)
            lane_first_row = tl.full([BLOCK_X], NO_ROW, tl.int32)
        tl.debug_barrier()  # a later window reads the cells this one stored
        xw += BLOCK_X

    # Each launch writes the rows of its tasks (the wrapper splits them over launches).
    if HAS_SEM:
        store_semantic_partials(part_ptr, bad_ptr, n_parts, pid, sem_loss, sem_norm, n_bad,
                                first_bad, t_ptr, b, t_sb, t_sh, t_sw, H, W)
    if HAS_INST:
        tl.store(part_ptr + n_parts + pid, tl.sum(inst_loss, 0))
        tl.store(part_ptr + (ROW_NORM + 1) * n_parts + pid, tl.sum(inst_norm, 0))
    if HAS_DEP:
        tl.store(part_ptr + 2 * n_parts + pid, tl.sum(dep_loss, 0))
        tl.store(part_ptr + (ROW_NORM + 2) * n_parts + pid, tl.sum(dep_norm, 0))


# Channel strides are never specialised to 1: a channels-last prediction would otherwise
# make Triton lay the classes along the lanes instead of inside each thread.
@triton.jit(do_not_specialize=["x_sc", "gx_sc", "o_sc", "g_sc", "go_sc"])
def upsample_loss_kernel(
    x_ptr, t_ptr, cw_ptr, gx_ptr, x_sb, x_sc, x_sh, x_sw, t_sb, t_sh, t_sw,
    gx_sb, gx_sc, gx_sh, gx_sw, ignore_index,
    o_ptr, g_ptr, m_ptr, go_ptr, o_sb, o_sc, o_sh, o_sw, g_sb, g_sc, g_sh, g_sw,
    m_sb, m_sh, m_sw, go_sb, go_sc, go_sh, go_sw,
    d_ptr, z_ptr, gd_ptr, d_sb, d_sh, d_sw, z_sb, z_sh, z_sw, gd_sb, gd_sh, gd_sw,
    index_ptr, lam_ptr, start_ptr, part_ptr, bad_ptr, n_parts, h, w, H, W,
    n_bands, n_strips, band_rows, strip_cells, grad_scale,
    C: tl.constexpr, HAS_SEM: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_INST: tl.constexpr,
    HAS_DEP: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_X: tl.constexpr, NRUN: tl.constexpr, KC: tl.constexpr, ACC_FP64: tl.constexpr,
    FAST_MATH: tl.constexpr, COMPILED: tl.constexpr, INDEX32: tl.constexpr = False,
    KEEP_Y: tl.constexpr = False, KEEP_X: tl.constexpr = False,
):
    semantic_program(tl.program_id(0), x_ptr, t_ptr, cw_ptr, gx_ptr, x_sb, x_sc, x_sh, x_sw,
        t_sb, t_sh, t_sw, gx_sb, gx_sc, gx_sh, gx_sw, ignore_index, o_ptr, g_ptr, m_ptr,
        go_ptr, o_sb, o_sc, o_sh, o_sw, g_sb, g_sc, g_sh, g_sw, m_sb, m_sh, m_sw, go_sb,
        go_sc, go_sh, go_sw, d_ptr, z_ptr, gd_ptr, d_sb, d_sh, d_sw, z_sb, z_sh, z_sw,
        gd_sb, gd_sh, gd_sw, index_ptr, lam_ptr, start_ptr, part_ptr, bad_ptr, n_parts, h,
        w, H, W, n_bands, n_strips, band_rows, strip_cells, grad_scale, C, HAS_SEM,
        HAS_WEIGHT, HAS_INST, HAS_DEP, WRITE_GRAD, BLOCK_C, BLOCK_X, NRUN, KC, ACC_FP64,
        FAST_MATH, COMPILED, INDEX32, KEEP_Y, KEEP_X)
