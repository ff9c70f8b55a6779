"""Partial sums, totals and the gradient scale of the low-resolution loss.

``upsample_loss_kernel`` leaves per-program partial sums: PART_ROWS rows of
``n_parts`` values (the loss sum and the normaliser of each task, in the
accumulation dtype) and three int64 rows on the bad labels (count, flat index of
the first, its value). They are added in a fixed order in two levels, so that no
single program walks more than REDUCE_BLOCK values per row on either level:

1. ``reduce_partials_kernel``: program q adds the partials [q B, (q + 1) B) of
   every row (B = REDUCE_BLOCK) into float64, the counts into int64, and keeps the
   earliest bad label.
2. ``upsample_finalize_kernel`` (one program) adds the level-1 sums, then per task
   k: N_k, L_k = S_k / N_k, the weighted total and d total / d coef (as
   ``fastmtl.multitask_loss``), and the state backward needs (N_k, coef_k).

The loss kernel stores the gradient of each prediction as ``base * provisional``
(base: the unscaled sum of the per-pixel gradients, provisional: a host constant
that keeps the stored values near 1). ``upsample_grad_scale_kernel`` turns it into
the gradient: times f_k / (N_k provisional) with f_k = g_total coef_k + g_L_k.
"""
import triton
import triton.language as tl

from .casts import to_element
from .normalisers import slot_vector, store_coef_grad

__all__ = ["reduce_partials_kernel", "upsample_finalize_kernel", "upsample_grad_scale_kernel",
           "PART_ROWS", "STATE_ROWS", "SLOTS"]

# Per-task lanes: semantic, instance, depth and one spare (a power of two).
SLOTS = tl.constexpr(4)
# Rows of the partial sums: loss sums of the three tasks, then their normalisers.
PART_ROWS = tl.constexpr(6)
ROW_NORM = tl.constexpr(3)
NO_PIXEL = tl.constexpr(9223372036854775807)  # flat index of "no bad label"
# Rows of the float64 (STATE_ROWS, SLOTS) state saved for backward.
STATE_N = tl.constexpr(0)     # N_k (0: task absent from the batch)
STATE_COEF = tl.constexpr(1)  # coef_k: c_k exp(-s_k), the fixed weight w_k, or 1
STATE_ROWS = 2


@triton.jit
def _earliest(bad_ptr, stride, i, ok):
    # (count, earliest flat index, its value) over the entries i of (3, stride) bad rows.
    count = tl.load(bad_ptr + i, mask=ok, other=0)
    index = tl.load(bad_ptr + stride + i, mask=ok, other=NO_PIXEL)
    value = tl.load(bad_ptr + 2 * stride + i, mask=ok, other=0)
    first = tl.min(index, 0)
    return tl.sum(count, 0), first, tl.sum(tl.where(index == first, value, 0), 0)


@triton.jit
def reduce_partials_kernel(part_ptr, bad_ptr, n_parts, n_sem, n_reg, sums_ptr, bad_sums_ptr,
                           n_sums, BLOCK: tl.constexpr):
    # sums[row, q] = sum_{i in [q BLOCK, (q+1) BLOCK)} part[row, i]  (float64, fixed order)
    # bad_sums[:, q] = the count, earliest flat index and its value over the same i
    # Rows of the semantic task hold n_sem partials, those of the regressions n_reg (the two
    # launches may use different grids); part is (PART_ROWS, n_parts), bad (3, n_parts).
    q = tl.program_id(0)
    i = q.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    for row in tl.static_range(PART_ROWS):
        n_row = n_sem if (row == 0) or (row == ROW_NORM) else n_reg
        v = tl.load(part_ptr + row * n_parts + i, mask=i < n_row, other=0.0).to(tl.float64)
        tl.store(sums_ptr + row * n_sums + q, tl.sum(v, 0))
    count, first, value = _earliest(bad_ptr, n_parts, i, i < n_sem)
    tl.store(bad_sums_ptr + q, count)
    tl.store(bad_sums_ptr + n_sums + q, first)
    tl.store(bad_sums_ptr + 2 * n_sums + q, value)


@triton.jit
def upsample_finalize_kernel(sums_ptr, bad_sums_ptr, n_sums, coef_ptr, pos_sem, pos_inst, pos_dep,
                             f_sem, f_inst, f_dep, r_sem, r_inst, r_dep, total_ptr, losses_ptr,
                             dcoef_ptr, state_ptr, bad_ptr, HAS_COEF: tl.constexpr,
                             USE_LOG_VARS: tl.constexpr, BLOCK: tl.constexpr):
    # One program, float64, level-1 sums added in a fixed order. Per task k (lane):
    #     N_k = sum norm_k,  present_k = task given and N_k > 0,  L_k = present_k S_k / N_k
    #     coef_k = f_k exp(-s_k) (log-variances s) | w_k (weights) | 1
    # log-variances:  total = sum_k present_k (coef_k L_k + r_k s_k),
    #                 dcoef_k = d total / d s_k = present_k (r_k - coef_k L_k)
    # fixed weights:  total = sum_k coef_k L_k,  dcoef_k = d total / d w_k = L_k
    # losses and dcoef go to the task's position in the caller's order; bad: see below.
    lane = tl.arange(0, SLOTS)
    pos = slot_vector(lane, pos_sem, pos_inst, pos_dep, -1)
    given = pos >= 0
    rows = tl.arange(0, BLOCK)
    loss_acc = tl.zeros([BLOCK, SLOTS], tl.float64)
    norm_acc = tl.zeros([BLOCK, SLOTS], tl.float64)
    n_bad = tl.zeros([], tl.int64)
    first_bad = tl.full([], NO_PIXEL, tl.int64)
    first_value = tl.zeros([], tl.int64)
    r0 = 0
    while r0 < n_sums:
        r = r0 + rows
        ok = (r < n_sums)[:, None] & given[None, :]
        loss_acc += tl.load(sums_ptr + lane[None, :] * n_sums + r[:, None], mask=ok, other=0.0)
        norm_acc += tl.load(sums_ptr + (ROW_NORM + lane[None, :]) * n_sums + r[:, None], mask=ok,
                            other=0.0)
        count, first, value = _earliest(bad_sums_ptr, n_sums, r, r < n_sums)
        n_bad += count
        first_value = tl.where(first < first_bad, value, first_value)
        first_bad = tl.minimum(first, first_bad)
        r0 += BLOCK
    n = tl.sum(norm_acc, 0)
    present = given & (n > 0)
    loss = tl.where(present, tl.sum(loss_acc, 0) / tl.where(present, n, 1.0), 0.0)
    if HAS_COEF:
        c = tl.load(coef_ptr + pos, mask=given, other=0.0).to(tl.float64)
        if USE_LOG_VARS:
            coef = slot_vector(lane, f_sem, f_inst, f_dep, 0.0).to(tl.float64) * tl.exp(-c)
        else:
            coef = c
    else:
        coef = tl.where(given, 1.0, 0.0).to(tl.float64)
    if USE_LOG_VARS:
        reg = slot_vector(lane, r_sem, r_inst, r_dep, 0.0).to(tl.float64)
        terms = tl.where(present, coef * loss + reg * c, 0.0)
        dcoef = tl.where(present, reg - coef * loss, 0.0)
    else:
        terms = tl.where(present, coef * loss, 0.0)
        dcoef = loss
    tl.store(total_ptr, tl.sum(terms, 0).to(total_ptr.dtype.element_ty))
    tl.store(losses_ptr + pos, loss.to(losses_ptr.dtype.element_ty), mask=given)
    tl.store(dcoef_ptr + pos, dcoef.to(dcoef_ptr.dtype.element_ty), mask=given)
    tl.store(state_ptr + STATE_N * SLOTS + lane, n)
    tl.store(state_ptr + STATE_COEF * SLOTS + lane, coef)
    # bad = (count, first flat index, its value), from the semantic launch only.
    tl.store(bad_ptr, tl.where(pos_sem >= 0, n_bad, 0))
    tl.store(bad_ptr + 1, first_bad)
    tl.store(bad_ptr + 2, first_value)


@triton.jit
def _scale_buffer(src_ptr, dst_ptr, n, factor, pid, nprog, BLOCK: tl.constexpr, ACC: tl.constexpr):
    start = pid.to(tl.int64) * BLOCK
    while start < n:
        i = start + tl.arange(0, BLOCK)
        in_buffer = i < n
        g = tl.load(src_ptr + i, mask=in_buffer, other=0.0).to(ACC)
        tl.store(dst_ptr + i, to_element(g * factor.to(ACC), dst_ptr), mask=in_buffer)
        start += nprog.to(tl.int64) * BLOCK


@triton.jit
def upsample_grad_scale_kernel(sx_ptr, gx_ptr, n_x, so_ptr, go_ptr, n_o, sd_ptr, gd_ptr, n_d,
                               state_ptr, g_total_ptr, g_losses_ptr, pos_sem, pos_inst, pos_dep,
                               provisional, dcoef_ptr, grad_coef_ptr, n_coef,
                               BLOCK: tl.constexpr, ACC_FP64: tl.constexpr,
                               HAS_G_TOTAL: tl.constexpr = True,
                               HAS_G_LOSSES: tl.constexpr = True,
                               HAS_GRAD_COEF: tl.constexpr = False):
    # Per task k: g = s * factor_k (s: the stored gradient, flat; g may be s itself), with
    #     factor_k = present_k (g_total coef_k + g_L_k) / (N_k provisional)
    # in float64, applied in the accumulation dtype (a gradient that does not arrive is 0,
    # not 0 * coef_k). Programs stride over the elements. HAS_GRAD_COEF: program 0 also
    # writes g_total * dtotal/dcoef (n_coef values) in the log-variances' or weights' dtype.
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if HAS_GRAD_COEF:
        if pid == 0:
            store_coef_grad(g_total_ptr, dcoef_ptr, grad_coef_ptr, n_coef)
    lane = tl.arange(0, SLOTS)
    pos = slot_vector(lane, pos_sem, pos_inst, pos_dep, -1)
    n = tl.load(state_ptr + STATE_N * SLOTS + lane)
    coef = tl.load(state_ptr + STATE_COEF * SLOTS + lane)
    present = (pos >= 0) & (n > 0)
    f = tl.zeros([SLOTS], tl.float64)
    if HAS_G_TOTAL:
        f += tl.load(g_total_ptr).to(tl.float64) * coef
    if HAS_G_LOSSES:
        f += tl.load(g_losses_ptr + pos, mask=pos >= 0, other=0.0).to(tl.float64)
    factor = tl.where(present, f / (tl.where(present, n, 1.0) * provisional), 0.0)
    _scale_buffer(sx_ptr, gx_ptr, n_x, tl.sum(tl.where(lane == 0, factor, 0.0), 0), pid, nprog,
                  BLOCK, ACC)
    _scale_buffer(so_ptr, go_ptr, n_o, tl.sum(tl.where(lane == 1, factor, 0.0), 0), pid, nprog,
                  BLOCK, ACC)
    _scale_buffer(sd_ptr, gd_ptr, n_d, tl.sum(tl.where(lane == 2, factor, 0.0), 0), pid, nprog,
                  BLOCK, ACC)
