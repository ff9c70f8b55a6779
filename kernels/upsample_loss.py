"""The multi-task loss straight from low-resolution predictions (fused bilinear upsampling).

A head that predicts u at h x w while the targets are H x W is trained on the
bilinear upsampling v = up(u) (``F.interpolate(u, (H, W), mode="bilinear")``).
These kernels never materialise v or its gradient: the full-resolution values
are interpolated on the fly and the gradient is gathered straight back to h x w.

PyTorch's upsample_bilinear2d, per axis (n_in -> n_out, output index o):

    align_corners=False: src = max(0, (n_in / n_out) * (o + 0.5) - 0.5)
    align_corners=True:  src = ((n_in - 1) / (n_out - 1)) * o        (0 when n_out == 1)
    i0 = min(floor(src), n_in - 1),  i1 = min(i0 + 1, n_in - 1)
    lam = src - i0 (clamped to [0, 1]),  weights (1 - lam) on i0 and lam on i1

computed in the accumulation dtype (float32, or float64 for float64 inputs) as
PyTorch does. Where i0 = n_in - 1 both taps are the same cell and the table
stores lam = 0 (the weights (1 - lam) + lam = 1 go to that cell).

Ownership: full-resolution pixel (Y, X) belongs to the low-resolution cell
(i0(Y), i0(X)) of its first tap. i0 never decreases along an axis, so the rows
owned by low-resolution row a form the interval [start_y[a], start_y[a + 1]),
and likewise for columns. ``axis_table_kernel`` writes lam and start.

``upsample_loss_kernel`` gives every program one low-resolution row a and
BLOCK_N columns n of one image; it visits each pixel it owns exactly once, so
the loss partial sums count every pixel once, and it sums the gradient with
respect to v (dv) into four low-resolution buffers, one per tap role (r, s):

    S_rs[a, n] = sum_{p owned by (a, n)} wy_r(Y_p) wx_s(X_p) dv_p

The cells taps reach are (a, n), (a, n + 1), (a + 1, n), (a + 1, n + 1), so

    du[i, j] = S_00[i, j] + S_01[i, j - 1] + S_10[i - 1, j] + S_11[i - 1, j - 1]

(terms outside the image left out), which ``upsample_grad_kernel`` adds in this
fixed order, times the task's gradient scale. No atomics: bitwise deterministic.
The S buffers hold 4 x (low-resolution size) values in the accumulation dtype.

Runtime loops are ``while`` loops (the Triton interpreter rejects a runtime
``range`` bound with NumPy >= 2.4; the compiled code is the same).
"""
import triton
import triton.language as tl

from .normalisers import (ROW_RSCALE, SLOT_DEPTH, SLOT_INSTANCE, SLOT_SEMANTIC, SLOTS)

__all__ = ["axis_table_kernel", "upsample_loss_kernel", "upsample_grad_kernel"]


@triton.jit
def _axis_table(index_ptr, lam_ptr, start_ptr, n_in, n_out, search_steps,
                ALIGN_CORNERS: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK: tl.constexpr):
    # Phase 1, o in [0, n_out): i0(o) into index_ptr, lam(o) into lam_ptr (formulas above).
    # Phase 2, a in [0, n_in]: start[a] = first o with i0(o) >= a (binary search of the
    # stored i0, so ownership and weights come from the same rounded src).
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    lanes = tl.arange(0, BLOCK)
    if ALIGN_CORNERS:
        num = (n_in - 1).to(ACC)
        den = tl.maximum(n_out - 1, 1).to(ACC)
    else:
        num = n_in.to(ACC)
        den = n_out.to(ACC)
    if ACC_FP64:
        scale = num / den  # IEEE division in float64
    else:
        scale = tl.math.div_rn(num, den)  # correctly rounded, as the C++ float division
    if ALIGN_CORNERS:
        scale = tl.where(n_out > 1, scale, 0.0)
    o0 = 0
    while o0 < n_out:
        o = o0 + lanes
        in_axis = o < n_out
        if ALIGN_CORNERS:
            src = scale * o.to(ACC)
        else:
            src = tl.maximum(scale * (o.to(ACC) + 0.5) - 0.5, 0.0)
        i0 = tl.minimum(src.to(tl.int32), n_in - 1)  # src >= 0: truncation is floor
        lam = tl.minimum(tl.maximum(src - i0.to(ACC), 0.0), 1.0)
        lam = tl.where(i0 < n_in - 1, lam, 0.0)
        tl.store(index_ptr + o, i0, mask=in_axis)
        tl.store(lam_ptr + o, lam, mask=in_axis)
        o0 += BLOCK
    tl.debug_barrier()  # phase 2 reads what phase 1 stored (one program per axis)
    a0 = 0
    while a0 <= n_in:
        a = a0 + lanes
        lo = tl.zeros([BLOCK], tl.int32)
        hi = tl.zeros([BLOCK], tl.int32) + n_out
        step = 0
        while step < search_steps:
            mid = (lo + hi) // 2
            open_range = lo < hi
            at_mid = tl.load(index_ptr + mid, mask=open_range & (mid < n_out), other=n_in)
            right = at_mid >= a
            hi = tl.where(open_range & right, mid, hi)
            lo = tl.where(open_range & (right == 0), mid + 1, lo)
            step += 1
        tl.store(start_ptr + a, lo, mask=a <= n_in)
        a0 += BLOCK


@triton.jit
def axis_table_kernel(index_ptr, lam_ptr, start_ptr, h, H, w, W, steps_y, steps_x,
                      ALIGN_CORNERS: tl.constexpr, ACC_FP64: tl.constexpr, BLOCK: tl.constexpr):
    # Program 0: rows (h -> H), entries [0, H) of index/lam and [0, h + 1) of start.
    # Program 1: columns (w -> W), entries [H, H + W) and [h + 1, h + w + 2).
    if tl.program_id(0) == 0:
        _axis_table(index_ptr, lam_ptr, start_ptr, h, H, steps_y, ALIGN_CORNERS, ACC_FP64, BLOCK)
    else:
        _axis_table(index_ptr + H, lam_ptr + H, start_ptr + h + 1, w, W, steps_x,
                    ALIGN_CORNERS, ACC_FP64, BLOCK)


@triton.jit
def _along_x(ptr, ch, ch_stride, a, a1, n, n1, s_h, s_w, tap_ok, wx0, wx1, ACC: tl.constexpr):
    # Interpolation along x of the two tap rows a and a1 = min(a + 1, h - 1), for the
    # owned pixels (channels, BLOCK_N, BLOCK_K) of owner columns n (n1 = min(n + 1, w - 1)):
    #     top = wx0 u[a, n] + wx1 u[a, n1],  bottom = wx0 u[a1, n] + wx1 u[a1, n1]
    p = ptr + ch.to(tl.int64)[:, None] * ch_stride
    r0 = a.to(tl.int64) * s_h
    r1 = a1.to(tl.int64) * s_h
    c0 = n.to(tl.int64)[None, :] * s_w
    c1 = n1.to(tl.int64)[None, :] * s_w
    u00 = tl.load(p + r0 + c0, mask=tap_ok, other=0.0).to(ACC)[:, :, None]
    u01 = tl.load(p + r0 + c1, mask=tap_ok, other=0.0).to(ACC)[:, :, None]
    u10 = tl.load(p + r1 + c0, mask=tap_ok, other=0.0).to(ACC)[:, :, None]
    u11 = tl.load(p + r1 + c1, mask=tap_ok, other=0.0).to(ACC)[:, :, None]
    top = wx0[None, :, :] * u00 + wx1[None, :, :] * u01
    bottom = wx0[None, :, :] * u10 + wx1[None, :, :] * u11
    return top, bottom


@triton.jit
def _gather_roles(wx0, wx1, dv_top, dv_bottom, s00, s01, s10, s11):
    # S_rs[c, n] += sum_k wx_s[n, k] dv_r[c, n, k], with dv_r = sum_Y wy_r(Y) dv(Y)
    s00 += tl.sum(dv_top * wx0[None, :, :], axis=2)
    s01 += tl.sum(dv_top * wx1[None, :, :], axis=2)
    s10 += tl.sum(dv_bottom * wx0[None, :, :], axis=2)
    s11 += tl.sum(dv_bottom * wx1[None, :, :], axis=2)
    return s00, s01, s10, s11


@triton.jit
def _store_roles(ptr, ch, CH, b, B, a, h, n, w, store_ok, s00, s01, s10, s11):
    # Layout (4, B, CH, h, w), contiguous, role 2 r + s.
    plane = B.to(tl.int64) * CH * h * w
    off = ((b * CH + ch.to(tl.int64)[:, None]) * h + a) * w + n.to(tl.int64)[None, :]
    tl.store(ptr + off, s00, mask=store_ok)
    tl.store(ptr + plane + off, s01, mask=store_ok)
    tl.store(ptr + 2 * plane + off, s10, mask=store_ok)
    tl.store(ptr + 3 * plane + off, s11, mask=store_ok)


@triton.jit
def _sign(v):
    # torch.sign: the derivative of |v|, sign(0) = 0 (and 0 for NaN, as torch.sign).
    return tl.where(v > 0, 1.0, 0.0) - tl.where(v < 0, 1.0, 0.0)


# One launch configuration, given as a one-entry autotune list (nothing is tuned or timed):
# 4 warps, and .maxnreg 128, without which ptxas trades a few bytes of register spills for
# occupancy (C = 19 at factor 8). As a Config it reaches the compiled kernel in eager mode
# and under torch.compile alike; the interpreter ignores it.
@triton.autotune(configs=[triton.Config({}, num_warps=4, maxnreg=128)], key=[])
@triton.jit
def upsample_loss_kernel(
    x_ptr, t_ptr, cw_ptr, px_ptr, x_sb, x_sc, x_sh, x_sw, t_sb, t_sh, t_sw, C, ignore_index,
    o_ptr, g_ptr, m_ptr, po_ptr, o_sb, o_sc, o_sh, o_sw, g_sb, g_sc, g_sh, g_sw, m_sb, m_sh, m_sw,
    d_ptr, z_ptr, pd_ptr, d_sb, d_sh, d_sw, z_sb, z_sh, z_sw,
    lam_ptr, start_ptr, part_ptr, norm_part_ptr, bad_part_ptr, B, h, w, H,
    HAS_SEM: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_INST: tl.constexpr,
    HAS_DEP: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC_FP64: tl.constexpr,
):
    # Program (image b, low-res row a, columns n in [j*BLOCK_N, (j+1)*BLOCK_N)) visits the
    # pixels it owns, X = start_x[n] + k0 + k (k < BLOCK_K) for each row Y in
    # [start_y[a], start_y[a+1]). For each pixel p and task, with
    # v_p = wy0 (wx0 u[a, n] + wx1 u[a, n1]) + wy1 (wx0 u[a1, n] + wx1 u[a1, n1]):
    #   semantic: loss_p = w_p (logsumexp_c v_pc - v_p,t_p),
    #             dv_pc = w_p (softmax(v_p)_c - [c == t_p])
    #             (valid p: t_p != ignore_index and 0 <= t_p < C; w_p = class_weight[t_p] or 1)
    #   instance: loss_p = sum_ch |v_p,ch - g_p,ch|,  dv_p,ch = sign(v_p,ch - g_p,ch)  (p in mask)
    #   depth:    loss_p = |v_p - z_p|,  dv_p = sign(v_p - z_p)  (z_p finite and > 0)
    # and 0 for the other pixels. Per program: partial sums part/norm_part[slot, pid] of the
    # losses and normalisers, bad_part[0, pid] the count of labels outside [0, C) that are
    # not ignore_index; with WRITE_GRAD, dv (unscaled) gathered into the S_rs buffers.
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n_blocks = tl.cdiv(w, BLOCK_N)
    a = (pid // n_blocks) % h
    b = (pid // n_blocks // h).to(tl.int64)
    a1 = tl.minimum(a + 1, h - 1)
    n = (pid % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    column_in_image = n < w
    n1 = tl.minimum(n + 1, w - 1)
    y_begin = tl.load(start_ptr + a)
    y_end = tl.load(start_ptr + a + 1)
    x_begin = tl.load(start_ptr + h + 1 + n, mask=column_in_image, other=0)
    x_end = tl.load(start_ptr + h + 2 + n, mask=column_in_image, other=0)
    k_end = tl.max(x_end - x_begin, axis=0)  # owned columns of the widest owner
    k = tl.arange(0, BLOCK_K)
    classes = tl.arange(0, BLOCK_C)
    class_in_range = classes < C
    offset_ch = tl.arange(0, 2)
    depth_ch = tl.arange(0, 1)

    sem_loss = tl.zeros([BLOCK_N, BLOCK_K], ACC)
    sem_norm = tl.zeros([BLOCK_N, BLOCK_K], ACC)
    inst_loss = tl.zeros([BLOCK_N, BLOCK_K], ACC)
    inst_norm = tl.zeros([BLOCK_N, BLOCK_K], ACC)
    dep_loss = tl.zeros([BLOCK_N, BLOCK_K], ACC)
    dep_norm = tl.zeros([BLOCK_N, BLOCK_K], ACC)
    n_bad = tl.zeros([BLOCK_N, BLOCK_K], tl.int32)
    sx00 = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    sx01 = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    sx10 = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    sx11 = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    so00 = tl.zeros([2, BLOCK_N], ACC)
    so01 = tl.zeros([2, BLOCK_N], ACC)
    so10 = tl.zeros([2, BLOCK_N], ACC)
    so11 = tl.zeros([2, BLOCK_N], ACC)
    sd00 = tl.zeros([1, BLOCK_N], ACC)
    sd01 = tl.zeros([1, BLOCK_N], ACC)
    sd10 = tl.zeros([1, BLOCK_N], ACC)
    sd11 = tl.zeros([1, BLOCK_N], ACC)
    k0 = 0
    while k0 < k_end:
        X = x_begin[:, None] + k0 + k[None, :]
        pixel_owned = X < x_end[:, None]
        lx = tl.load(lam_ptr + H + X, mask=pixel_owned, other=0.0)
        wx0 = 1.0 - lx
        wx1 = lx
        X = X.to(tl.int64)
        if HAS_SEM:
            x_top, x_bottom = _along_x(x_ptr + b * x_sb, classes, x_sc, a, a1, n, n1, x_sh, x_sw,
                                       class_in_range[:, None] & column_in_image[None, :],
                                       wx0, wx1, ACC)
            dx_top = tl.zeros([BLOCK_C, BLOCK_N, BLOCK_K], ACC)
            dx_bottom = tl.zeros([BLOCK_C, BLOCK_N, BLOCK_K], ACC)
        if HAS_INST:
            o_top, o_bottom = _along_x(o_ptr + b * o_sb, offset_ch, o_sc, a, a1, n, n1, o_sh,
                                       o_sw, column_in_image[None, :], wx0, wx1, ACC)
            do_top = tl.zeros([2, BLOCK_N, BLOCK_K], ACC)
            do_bottom = tl.zeros([2, BLOCK_N, BLOCK_K], ACC)
        if HAS_DEP:
            d_top, d_bottom = _along_x(d_ptr + b * d_sb, depth_ch, 0, a, a1, n, n1, d_sh, d_sw,
                                       column_in_image[None, :], wx0, wx1, ACC)
            dd_top = tl.zeros([1, BLOCK_N, BLOCK_K], ACC)
            dd_bottom = tl.zeros([1, BLOCK_N, BLOCK_K], ACC)
        Y = y_begin
        while Y < y_end:
            wy1 = tl.load(lam_ptr + Y)
            wy0 = 1.0 - wy1
            Yl = Y.to(tl.int64)
            if HAS_SEM:
                v = wy0 * x_top + wy1 * x_bottom
                v = tl.where(class_in_range[:, None, None], v, float("-inf"))
                t = tl.load(t_ptr + b * t_sb + Yl * t_sh + X * t_sw, mask=pixel_owned,
                            other=0).to(tl.int64)
                labelled = pixel_owned & (t != ignore_index)
                label_valid = labelled & (t >= 0) & (t < C)
                n_bad += (labelled & (label_valid == 0)).to(tl.int32)
                label = tl.where(label_valid, t, 0).to(tl.int32)
                if HAS_WEIGHT:
                    wt = tl.load(cw_ptr + label, mask=label_valid, other=0.0).to(ACC)
                else:
                    wt = label_valid.to(ACC)
                v_max = tl.max(v, axis=0)
                e = tl.exp(v - v_max[None, :, :])
                denom = tl.sum(e, axis=0)
                is_target = classes[:, None, None] == label[None, :, :]
                v_target = tl.sum(tl.where(is_target, v, 0.0), axis=0)
                sem_loss += tl.where(label_valid, wt * (tl.log(denom) + v_max - v_target), 0.0)
                sem_norm += wt
                if WRITE_GRAD:
                    p = e * (1.0 / denom)[None, :, :]
                    dv = tl.where(is_target, p - 1.0, p) * wt[None, :, :]
                    dv = tl.where(label_valid[None, :, :], dv, 0.0)
                    dx_top += wy0 * dv
                    dx_bottom += wy1 * dv
            if HAS_INST:
                in_mask = pixel_owned & (tl.load(m_ptr + b * m_sb + Yl * m_sh + X * m_sw,
                                                 mask=pixel_owned, other=0) != 0)
                target = tl.load(g_ptr + b * g_sb + offset_ch[:, None, None].to(tl.int64) * g_sc
                                 + Yl * g_sh + X[None, :, :] * g_sw,
                                 mask=in_mask[None, :, :], other=0.0).to(ACC)
                diff = wy0 * o_top + wy1 * o_bottom - target
                inst_loss += tl.where(in_mask, tl.sum(tl.abs(diff), axis=0), 0.0)
                inst_norm += in_mask.to(ACC)
                if WRITE_GRAD:
                    dv = tl.where(in_mask[None, :, :], _sign(diff), 0.0)
                    do_top += wy0 * dv
                    do_bottom += wy1 * dv
            if HAS_DEP:
                z = tl.load(z_ptr + b * z_sb + Yl * z_sh + X * z_sw, mask=pixel_owned,
                            other=0.0).to(ACC)
                measured = pixel_owned & (z > 0) & (z < float("inf"))
                diff = wy0 * d_top + wy1 * d_bottom - tl.where(measured, z, 0.0)[None, :, :]
                dep_loss += tl.where(measured, tl.sum(tl.abs(diff), axis=0), 0.0)
                dep_norm += measured.to(ACC)
                if WRITE_GRAD:
                    dv = tl.where(measured[None, :, :], _sign(diff), 0.0)
                    dd_top += wy0 * dv
                    dd_bottom += wy1 * dv
            Y += 1
        if WRITE_GRAD:
            if HAS_SEM:
                sx00, sx01, sx10, sx11 = _gather_roles(wx0, wx1, dx_top, dx_bottom,
                                                       sx00, sx01, sx10, sx11)
            if HAS_INST:
                so00, so01, so10, so11 = _gather_roles(wx0, wx1, do_top, do_bottom,
                                                       so00, so01, so10, so11)
            if HAS_DEP:
                sd00, sd01, sd10, sd11 = _gather_roles(wx0, wx1, dd_top, dd_bottom,
                                                       sd00, sd01, sd10, sd11)
        k0 += BLOCK_K

    if WRITE_GRAD:
        if HAS_SEM:
            _store_roles(px_ptr, classes, C, b, B, a, h, n, w,
                         class_in_range[:, None] & column_in_image[None, :],
                         sx00, sx01, sx10, sx11)
        if HAS_INST:
            _store_roles(po_ptr, offset_ch, 2, b, B, a, h, n, w, column_in_image[None, :],
                         so00, so01, so10, so11)
        if HAS_DEP:
            _store_roles(pd_ptr, depth_ch, 1, b, B, a, h, n, w, column_in_image[None, :],
                         sd00, sd01, sd10, sd11)
    # Each launch writes the slots of its tasks (the wrapper may split the tasks over launches).
    if HAS_SEM:
        tl.store(part_ptr + SLOT_SEMANTIC * nprog + pid, tl.sum(tl.sum(sem_loss, 1), 0))
        tl.store(norm_part_ptr + SLOT_SEMANTIC * nprog + pid, tl.sum(tl.sum(sem_norm, 1), 0))
        # bad_part rows as prepare_kernel (normalisers.py) reads them: count, first flat index,
        # value. Only the count is kept; the caller names a bad label from the targets.
        tl.store(bad_part_ptr + pid, tl.sum(tl.sum(n_bad, 1), 0).to(tl.int64))
        tl.store(bad_part_ptr + nprog + pid, 9223372036854775807)
        tl.store(bad_part_ptr + 2 * nprog + pid, 0)
    if HAS_INST:
        tl.store(part_ptr + SLOT_INSTANCE * nprog + pid, tl.sum(tl.sum(inst_loss, 1), 0))
        tl.store(norm_part_ptr + SLOT_INSTANCE * nprog + pid, tl.sum(tl.sum(inst_norm, 1), 0))
    if HAS_DEP:
        tl.store(part_ptr + SLOT_DEPTH * nprog + pid, tl.sum(tl.sum(dep_loss, 1), 0))
        tl.store(norm_part_ptr + SLOT_DEPTH * nprog + pid, tl.sum(tl.sum(dep_norm, 1), 0))


@triton.jit
def upsample_grad_kernel(p_ptr, state_ptr, du_ptr, n_cells, CH, h, w, du_sb, du_sc, du_sh, du_sw,
                         SLOT: tl.constexpr, BLOCK: tl.constexpr, ACC_FP64: tl.constexpr):
    # BLOCK low-resolution cells q = ((b * CH + c) * h + i) * w + j of the n_cells = B*CH*h*w:
    #     du[b, c, i, j] = scale * (S_00[i, j] + S_01[i, j-1] + S_10[i-1, j] + S_11[i-1, j-1])
    # added in this order; scale = state[ROW_RSCALE, SLOT] (incoming gradient / N).
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    cell_exists = q < n_cells
    j = q % w
    i = (q // w) % h
    bc = q // w // h
    has_left = cell_exists & (j > 0)
    has_above = cell_exists & (i > 0)
    s = tl.load(p_ptr + q, mask=cell_exists, other=0.0)
    s += tl.load(p_ptr + n_cells + q - 1, mask=has_left, other=0.0)
    s += tl.load(p_ptr + 2 * n_cells + q - w, mask=has_above, other=0.0)
    s += tl.load(p_ptr + 3 * n_cells + q - w - 1, mask=has_left & has_above, other=0.0)
    scale = tl.load(state_ptr + ROW_RSCALE * SLOTS + SLOT).to(ACC)
    du = (s.to(ACC) * scale).to(du_ptr.dtype.element_ty)
    tl.store(du_ptr + (bc // CH) * du_sb + (bc % CH) * du_sc + i * du_sh + j * du_sw, du,
             mask=cell_exists)
