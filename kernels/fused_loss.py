"""The fused pass over the predictions, its finalize and the backward kernels.

Tasks occupy fixed slots of the small per-task vectors (``SLOT_*``): semantic
0, instance 1, depth 2, one lane spare. Each task's per-pixel work is one
``@triton.jit`` helper (``_semantic_tile``, ``_instance_tile``,
``_depth_tile``) called from one constexpr branch of ``fused_loss_kernel``; a
fourth task is one more helper, one more branch and one more partial-sum row.

Runtime loops are ``while`` loops: the Triton interpreter cannot use a runtime
value as a ``range`` bound with NumPy >= 2.4, and the compiled code is the same.
"""
import triton
import triton.language as tl

from .normalisers import (ROW_APPLIED, ROW_COEF, ROW_GUARD, ROW_N, ROW_RATIO, ROW_RSCALE,
                          ROW_SCALE, SLOT_DEPTH, SLOT_INSTANCE, SLOT_SEMANTIC, SLOTS, slot_vector,
                          tile_pixels)

__all__ = ["fused_loss_kernel", "finalize_kernel", "backward_prepare_kernel", "rescale_kernel"]


@triton.jit
def _sign(v):
    # torch.sign, NaN propagating: the derivative of |v| with sign(0) = 0.
    s = tl.where(v > 0, 1.0, 0.0) - tl.where(v < 0, 1.0, 0.0)
    return tl.where(v == v, s, v)


@triton.jit
def _semantic_tile(x_ptr, gx_ptr, t_ptr, cw_ptr, b, h, w, in_image, scale, C, ignore_index,
                   x_sb, x_sc, x_sh, x_sw, gx_sb, gx_sc, gx_sh, gx_sw, t_sb, t_sh, t_sw,
                   HAS_WEIGHT: tl.constexpr, WRITE_GRAD: tl.constexpr,
                   NUM_CHUNKS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                   ACC: tl.constexpr):
    # Softmax cross-entropy of BLOCK_P pixels, all C classes. For a valid pixel p
    # (t_p != ignore_index, 0 <= t_p < C) with weight w_p = class_weight[t_p] (or 1):
    #     loss_p = w_p * (logsumexp_c x_pc - x_p,t_p)
    #     dx_pc  = scale * w_p * (softmax(x_p)_c - [c == t_p])     (0 for other pixels)
    # softmax - 1 is formed in ACC before the store rounds to the gradient's dtype.
    # C <= BLOCK_C: the class column stays in registers (one read of x).
    # C >  BLOCK_C: online softmax over NUM_CHUNKS chunks (running max m and sum
    # s, rescaled by exp(m_old - m_new)), then a second sweep writes dx.
    t = tl.load(t_ptr + b * t_sb + h * t_sh + w * t_sw, mask=in_image, other=0).to(tl.int64)
    valid = in_image & (t != ignore_index) & (t >= 0) & (t < C)
    t = tl.where(valid, t, -1)  # no class is the target of an ignored pixel
    if HAS_WEIGHT:
        wt = tl.load(cw_ptr + t, mask=valid, other=0.0).to(ACC)
    else:
        wt = valid.to(ACC)
    x_pix = b * x_sb + h * x_sh + w * x_sw
    g_pix = b * gx_sb + h * gx_sh + w * gx_sw
    classes = tl.arange(0, BLOCK_C)
    if NUM_CHUNKS == 1:
        class_ok = classes < C
        tile_ok = class_ok[:, None] & in_image[None, :]
        x = tl.load(x_ptr + x_pix[None, :] + classes[:, None].to(tl.int64) * x_sc,
                    mask=tile_ok, other=0.0).to(ACC)
        x = tl.where(class_ok[:, None], x, float("-inf"))
        m = tl.max(x, 0)
        e = tl.exp(x - m[None, :])
        s = tl.sum(e, 0)
        is_target = classes[:, None] == t[None, :]
        x_t = tl.sum(tl.where(is_target, x, 0.0), 0)
        loss = tl.log(s) + m - x_t
        if WRITE_GRAD:
            p = e * (1.0 / s)[None, :]
            g = tl.where(is_target, p - 1.0, p) * (wt * scale)[None, :]
            g = tl.where(valid[None, :], g, 0.0)
            tl.store(gx_ptr + g_pix[None, :] + classes[:, None].to(tl.int64) * gx_sc,
                     g.to(gx_ptr.dtype.element_ty), mask=tile_ok)
    else:
        m = tl.full([BLOCK_P], float("-inf"), ACC)
        s = tl.zeros([BLOCK_P], ACC)
        x_t = tl.zeros([BLOCK_P], ACC)
        for k in range(NUM_CHUNKS):
            c = k * BLOCK_C + classes
            class_ok = c < C
            tile_ok = class_ok[:, None] & in_image[None, :]
            x = tl.load(x_ptr + x_pix[None, :] + c[:, None].to(tl.int64) * x_sc,
                        mask=tile_ok, other=0.0).to(ACC)
            x = tl.where(class_ok[:, None], x, float("-inf"))
            m_new = tl.maximum(m, tl.max(x, 0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[None, :]), 0)
            x_t += tl.sum(tl.where(c[:, None] == t[None, :], x, 0.0), 0)
            m = m_new
        lse = tl.log(s) + m
        loss = lse - x_t
        if WRITE_GRAD:
            for k in range(NUM_CHUNKS):
                c = k * BLOCK_C + classes
                class_ok = c < C
                tile_ok = class_ok[:, None] & in_image[None, :]
                x = tl.load(x_ptr + x_pix[None, :] + c[:, None].to(tl.int64) * x_sc,
                            mask=tile_ok, other=0.0).to(ACC)
                p = tl.exp(x - lse[None, :])
                g = tl.where(c[:, None] == t[None, :], p - 1.0, p) * (wt * scale)[None, :]
                g = tl.where(valid[None, :], g, 0.0)
                tl.store(gx_ptr + g_pix[None, :] + c[:, None].to(tl.int64) * gx_sc,
                         g.to(gx_ptr.dtype.element_ty), mask=tile_ok)
    return tl.where(valid, wt * loss, 0.0)


@triton.jit
def _instance_tile(o_ptr, go_ptr, g_ptr, m_ptr, b, h, w, in_image, scale,
                   o_sb, o_sc, o_sh, o_sw, go_sb, go_sc, go_sh, go_sw,
                   g_sb, g_sc, g_sh, g_sw, m_sb, m_sh, m_sw,
                   WRITE_GRAD: tl.constexpr, ACC: tl.constexpr):
    # Offset L1 over the instance mask, channels (dy, dx):
    #     loss_p = |o_p0 - g_p0| + |o_p1 - g_p1|             (p in mask)
    #     do_pk  = scale * sign(o_pk - g_pk)                  (p in mask, else 0)
    in_mask = in_image & (tl.load(m_ptr + b * m_sb + h * m_sh + w * m_sw, mask=in_image,
                                  other=0) != 0)
    o_off = b * o_sb + h * o_sh + w * o_sw
    g_off = b * g_sb + h * g_sh + w * g_sw
    dy = (tl.load(o_ptr + o_off, mask=in_mask, other=0.0).to(ACC)
          - tl.load(g_ptr + g_off, mask=in_mask, other=0.0).to(ACC))
    dx = (tl.load(o_ptr + o_off + o_sc, mask=in_mask, other=0.0).to(ACC)
          - tl.load(g_ptr + g_off + g_sc, mask=in_mask, other=0.0).to(ACC))
    if WRITE_GRAD:
        go_off = b * go_sb + h * go_sh + w * go_sw
        ty = go_ptr.dtype.element_ty
        tl.store(go_ptr + go_off, tl.where(in_mask, _sign(dy) * scale, 0.0).to(ty), mask=in_image)
        tl.store(go_ptr + go_off + go_sc, tl.where(in_mask, _sign(dx) * scale, 0.0).to(ty),
                 mask=in_image)
    return tl.where(in_mask, tl.abs(dy) + tl.abs(dx), 0.0)


@triton.jit
def _depth_tile(d_ptr, gd_ptr, z_ptr, b, h, w, in_image, scale,
                d_sb, d_sh, d_sw, gd_sb, gd_sh, gd_sw, z_sb, z_sh, z_sw,
                WRITE_GRAD: tl.constexpr, ACC: tl.constexpr):
    # Depth L1 where the target is a measurement (finite and > 0):
    #     loss_p = |d_p - z_p|,  dd_p = scale * sign(d_p - z_p)   (valid p, else 0)
    z = tl.load(z_ptr + b * z_sb + h * z_sh + w * z_sw, mask=in_image, other=0.0).to(ACC)
    measured = in_image & (z > 0) & (z < float("inf"))
    diff = tl.load(d_ptr + b * d_sb + h * d_sh + w * d_sw, mask=measured, other=0.0).to(ACC) - z
    if WRITE_GRAD:
        tl.store(gd_ptr + b * gd_sb + h * gd_sh + w * gd_sw,
                 tl.where(measured, _sign(diff) * scale, 0.0).to(gd_ptr.dtype.element_ty),
                 mask=in_image)
    return tl.where(measured, tl.abs(diff), 0.0)


@triton.jit
def fused_loss_kernel(
    x_ptr, gx_ptr, t_ptr, cw_ptr,
    x_sb, x_sc, x_sh, x_sw, gx_sb, gx_sc, gx_sh, gx_sw, t_sb, t_sh, t_sw, C, ignore_index,
    o_ptr, go_ptr, g_ptr, m_ptr,
    o_sb, o_sc, o_sh, o_sw, go_sb, go_sc, go_sh, go_sw, g_sb, g_sc, g_sh, g_sw, m_sb, m_sh, m_sw,
    d_ptr, gd_ptr, z_ptr,
    d_sb, d_sh, d_sw, gd_sb, gd_sh, gd_sw, z_sb, z_sh, z_sw,
    state_ptr, part_ptr, HW, W, tiles_per_image, n_tiles,
    HAS_SEM: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_INST: tl.constexpr,
    HAS_DEP: tl.constexpr, WRITE_GRAD: tl.constexpr, RECOMPUTE: tl.constexpr,
    FLAT: tl.constexpr, NUM_CHUNKS: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr, ACC_FP64: tl.constexpr,
):
    # One pass over the predictions. Tiles of BLOCK_P pixels of one image (pixel
    # q = h * W + w) are dealt round-robin to the programs; each program sums, per
    # task k, the per-pixel losses of its tiles and stores that partial sum in
    # part[k, pid] (finalize_kernel adds them in a fixed order). Gradients are
    # written already multiplied by scale_k = state[ROW_SCALE, k] = coef_k / N_k.
    # RECOMPUTE: backward's rewrite of the gradients with scale state[ROW_RSCALE];
    # every program returns at once unless state[ROW_GUARD, 0] is set.
    # FLAT: every tensor has stride_h == W * stride_w, so pixel q sits at q * stride_w.
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if RECOMPUTE:
        scale_ptr = state_ptr + ROW_RSCALE * SLOTS
        n_active = tl.where(tl.load(state_ptr + ROW_GUARD * SLOTS) != 0, n_tiles, 0)
    else:
        scale_ptr = state_ptr + ROW_SCALE * SLOTS
        n_active = n_tiles
    scale_sem = tl.load(scale_ptr + SLOT_SEMANTIC).to(ACC)
    scale_inst = tl.load(scale_ptr + SLOT_INSTANCE).to(ACC)
    scale_dep = tl.load(scale_ptr + SLOT_DEPTH).to(ACC)
    acc_sem = tl.zeros([BLOCK_P], ACC)
    acc_inst = tl.zeros([BLOCK_P], ACC)
    acc_dep = tl.zeros([BLOCK_P], ACC)
    tile = pid
    while tile < n_active:
        b, _, h, w, in_image = tile_pixels(tile, tiles_per_image, HW, W, BLOCK_P, FLAT)
        if HAS_SEM:
            acc_sem += _semantic_tile(
                x_ptr, gx_ptr, t_ptr, cw_ptr, b, h, w, in_image, scale_sem, C, ignore_index,
                x_sb, x_sc, x_sh, x_sw, gx_sb, gx_sc, gx_sh, gx_sw, t_sb, t_sh, t_sw,
                HAS_WEIGHT, WRITE_GRAD, NUM_CHUNKS, BLOCK_C, BLOCK_P, ACC)
        if HAS_INST:
            acc_inst += _instance_tile(
                o_ptr, go_ptr, g_ptr, m_ptr, b, h, w, in_image, scale_inst,
                o_sb, o_sc, o_sh, o_sw, go_sb, go_sc, go_sh, go_sw,
                g_sb, g_sc, g_sh, g_sw, m_sb, m_sh, m_sw, WRITE_GRAD, ACC)
        if HAS_DEP:
            acc_dep += _depth_tile(
                d_ptr, gd_ptr, z_ptr, b, h, w, in_image, scale_dep,
                d_sb, d_sh, d_sw, gd_sb, gd_sh, gd_sw, z_sb, z_sh, z_sw, WRITE_GRAD, ACC)
        tile += nprog
    if not RECOMPUTE:
        tl.store(part_ptr + SLOT_SEMANTIC * nprog + pid, tl.sum(acc_sem, 0))
        tl.store(part_ptr + SLOT_INSTANCE * nprog + pid, tl.sum(acc_inst, 0))
        tl.store(part_ptr + SLOT_DEPTH * nprog + pid, tl.sum(acc_dep, 0))


@triton.jit
def finalize_kernel(part_ptr, n_parts, state_ptr, coef_ptr, pos_sem, pos_inst, pos_dep,
                    r_sem, r_inst, r_dep, total_ptr, losses_ptr, dcoef_ptr,
                    USE_LOG_VARS: tl.constexpr, BLOCK_R: tl.constexpr):
    # One program. Per task k (fp64, partials added in a fixed order):
    #     L_k = sum_pid part[k, pid] / N_k      (0 when N_k = 0: task absent)
    # log-variances s:  total = sum_k present_k (coef_k L_k + r_k s_k),
    #                   dcoef_k = d total / d s_k = present_k (r_k - coef_k L_k)
    # fixed weights w:  total = sum_k w_k L_k,  dcoef_k = d total / d w_k = L_k
    # losses and dcoef are stored at the task's position in the caller's order.
    lane = tl.arange(0, SLOTS)
    pos = slot_vector(lane, pos_sem, pos_inst, pos_dep, -1)
    rows = tl.arange(0, BLOCK_R)
    acc = tl.zeros([BLOCK_R, SLOTS], tl.float64)
    r0 = 0
    while r0 < n_parts:
        r = r0 + rows
        ok = (r < n_parts)[:, None] & (pos >= 0)[None, :]
        acc += tl.load(part_ptr + lane[None, :] * n_parts + r[:, None], mask=ok,
                       other=0.0).to(tl.float64)
        r0 += BLOCK_R
    sums = tl.sum(acc, 0)
    n = tl.load(state_ptr + ROW_N * SLOTS + lane)
    coef = tl.load(state_ptr + ROW_COEF * SLOTS + lane)
    present = (pos >= 0) & (n > 0)
    loss = tl.where(present, sums / tl.where(present, n, 1.0), 0.0)
    if USE_LOG_VARS:
        s = tl.load(coef_ptr + pos, mask=pos >= 0, other=0.0).to(tl.float64)
        reg = slot_vector(lane, r_sem, r_inst, r_dep, 0.0).to(tl.float64)
        terms = tl.where(present, coef * loss + reg * s, 0.0)
        dcoef = tl.where(present, reg - coef * loss, 0.0)
    else:
        terms = tl.where(present, coef * loss, 0.0)
        dcoef = loss
    tl.store(total_ptr, tl.sum(terms, 0).to(total_ptr.dtype.element_ty))
    tl.store(losses_ptr + pos, loss.to(losses_ptr.dtype.element_ty), mask=pos >= 0)
    tl.store(dcoef_ptr + pos, dcoef.to(dcoef_ptr.dtype.element_ty), mask=pos >= 0)


@triton.jit
def backward_prepare_kernel(state_ptr, g_total_ptr, g_losses_ptr, pos_sem, pos_inst, pos_dep):
    # One program. The gradient buffer of task k holds base_k * applied_k / N_k
    # (forward: applied_k = coef_k). The incoming gradient asks for
    #     f_k = g_total * coef_k + g_L_k.
    # ratio_k = f_k / applied_k when applied_k is finite and non-zero (1: untouched);
    # otherwise, if f_k != 0 or applied_k is not finite, the buffers cannot be
    # rescaled and the guard asks the fused kernel to rewrite them with
    # rscale_k = f_k / N_k. Then applied_k = f_k (so retain_graph reruns stay exact).
    lane = tl.arange(0, SLOTS)
    pos = slot_vector(lane, pos_sem, pos_inst, pos_dep, -1)
    n = tl.load(state_ptr + ROW_N * SLOTS + lane)
    coef = tl.load(state_ptr + ROW_COEF * SLOTS + lane)
    applied = tl.load(state_ptr + ROW_APPLIED * SLOTS + lane)
    present = (pos >= 0) & (n > 0)
    g_total = tl.load(g_total_ptr).to(tl.float64)
    g_loss = tl.load(g_losses_ptr + pos, mask=pos >= 0, other=0.0).to(tl.float64)
    f = tl.where(present, g_total * coef + g_loss, 0.0)
    scalable = (applied != 0) & (tl.abs(applied) < float("inf"))
    ratio = tl.where(present & scalable, f / tl.where(scalable, applied, 1.0), 1.0)
    rewrite = present & (scalable == 0) & ((f != 0) | (applied != 0))
    tl.store(state_ptr + ROW_RATIO * SLOTS + lane, ratio)
    rscale = tl.where(present, f / tl.where(present, n, 1.0), 0.0)
    guard = tl.max(rewrite.to(tl.float64), 0)
    tl.store(state_ptr + ROW_RSCALE * SLOTS + lane, rscale)
    tl.store(state_ptr + ROW_GUARD * SLOTS + lane, tl.where(lane == 0, guard, 0.0))
    tl.store(state_ptr + ROW_APPLIED * SLOTS + lane, f)


@triton.jit
def _rescale_buffer(ptr, n, ratio, pid, nprog, BLOCK: tl.constexpr, ACC: tl.constexpr):
    n_active = tl.where(ratio != 1.0, n, 0)
    start = pid.to(tl.int64) * BLOCK
    while start < n_active:
        offs = start + tl.arange(0, BLOCK)
        in_buffer = offs < n
        g = tl.load(ptr + offs, mask=in_buffer).to(ACC)
        tl.store(ptr + offs, (g * ratio.to(ACC)).to(ptr.dtype.element_ty), mask=in_buffer)
        start += nprog.to(tl.int64) * BLOCK


@triton.jit
def rescale_kernel(gx_ptr, n_x, go_ptr, n_o, gd_ptr, n_d, state_ptr,
                   HAS_SEM: tl.constexpr, HAS_INST: tl.constexpr, HAS_DEP: tl.constexpr,
                   BLOCK: tl.constexpr, ACC_FP64: tl.constexpr):
    # g_k <- ratio_k * g_k over each task's (dense) gradient buffer. A program
    # whose ratio_k == 1 (loss.backward(), the usual case) reads one scalar and
    # touches no gradient memory.
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if HAS_SEM:
        _rescale_buffer(gx_ptr, n_x, tl.load(state_ptr + ROW_RATIO * SLOTS + SLOT_SEMANTIC),
                        pid, nprog, BLOCK, ACC)
    if HAS_INST:
        _rescale_buffer(go_ptr, n_o, tl.load(state_ptr + ROW_RATIO * SLOTS + SLOT_INSTANCE),
                        pid, nprog, BLOCK, ACC)
    if HAS_DEP:
        _rescale_buffer(gd_ptr, n_d, tl.load(state_ptr + ROW_RATIO * SLOTS + SLOT_DEPTH),
                        pid, nprog, BLOCK, ACC)
