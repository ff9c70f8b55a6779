"""The fused pass over the predictions, its finalize and the backward kernels.

Tasks occupy fixed slots of the small per-task vectors (``SLOT_*``): semantic
0, instance 1, depth 2, one lane spare. Each task is two ``@triton.jit``
helpers called from constexpr branches of ``fused_loss_kernel``: one issues
the task's loads for a tile, the other computes its per-pixel losses and
stores its gradients. All loads of a tile are issued before the first store
(the compiler may not move a load above a store that might alias it), so a
tile costs one DRAM round trip. A fourth task is one more pair of helpers, two
more branches and one more partial-sum row (docs/kernel.md).

Runtime loops of the small kernels are ``while`` loops: the Triton interpreter
cannot use a runtime value as a ``range`` bound with NumPy >= 2.4. The fused
pass loops over a constexpr number of tiles instead.
"""
import triton
import triton.language as tl

from .casts import to_element
from .normalisers import (ROW_CARRIED, ROW_COEF, ROW_N, ROW_SCALE, SLOT_DEPTH, SLOT_INSTANCE,
                          SLOT_SEMANTIC, SLOTS, slot_vector, store_coef_grad, tile_pixels)
from .semantic import (ONLINE_CHUNK, TARGET_LAST, labels_and_weights, pairs_step, pairs_words,
                       planes_load, planes_step, resident_step, sweeps_step, target_logit,
                       tile_pairs, tile_split_pairs, tile_split_pixels)

__all__ = ["fused_loss_kernel", "partial_sums_kernel", "finalize_kernel", "output_grad_kernel"]


@triton.jit
def _sign(v):
    # The derivative of |v| as torch computes it (F.l1_loss): sign(0) = 0, and 0 for NaN.
    # Both comparisons are already false at NaN; the select keeps the SASS of the NaN-
    # propagating form this replaced (without it ptxas spills 16 bytes at C = 150 fp32).
    s = tl.where(v > 0, 1.0, 0.0) - tl.where(v < 0, 1.0, 0.0)
    return tl.where(v == v, s, 0.0)


@triton.jit
def _instance_load(o_ptr, g_ptr, m_ptr, o_off, g_off, m_off, o_sc, g_sc, in_image):
    # Channels (dy, dx) of the offsets and their targets, and the instance mask.
    return (tl.load(m_ptr + m_off, mask=in_image, other=0),
            tl.load(o_ptr + o_off, mask=in_image, other=0.0),
            tl.load(o_ptr + o_off + o_sc, mask=in_image, other=0.0),
            tl.load(g_ptr + g_off, mask=in_image, other=0.0),
            tl.load(g_ptr + g_off + g_sc, mask=in_image, other=0.0))


@triton.jit
def _instance_step(in_mask, o0, o1, g0, g1, scale, go_ptr, go_off, go_sc, in_image,
                   WRITE_GRAD: tl.constexpr, ACC: tl.constexpr):
    # Offset L1 over the instance mask:
    #     loss_p = |o_p0 - g_p0| + |o_p1 - g_p1|             (p in mask)
    #     do_pk  = scale * sign(o_pk - g_pk)                  (p in mask, else 0)
    in_mask = in_image & (in_mask != 0)
    dy = o0.to(ACC) - g0.to(ACC)
    dx = o1.to(ACC) - g1.to(ACC)
    if WRITE_GRAD:
        tl.store(go_ptr + go_off, to_element(tl.where(in_mask, _sign(dy) * scale, 0.0), go_ptr),
                 mask=in_image)
        tl.store(go_ptr + go_off + go_sc,
                 to_element(tl.where(in_mask, _sign(dx) * scale, 0.0), go_ptr), mask=in_image)
    return tl.where(in_mask, tl.abs(dy) + tl.abs(dx), 0.0)


@triton.jit
def _depth_load(d_ptr, z_ptr, d_off, z_off, in_image):
    return (tl.load(z_ptr + z_off, mask=in_image, other=0.0),
            tl.load(d_ptr + d_off, mask=in_image, other=0.0))


@triton.jit
def _depth_step(z, d, scale, gd_ptr, gd_off, in_image, WRITE_GRAD: tl.constexpr,
                ACC: tl.constexpr):
    # Depth L1 where the target is a measurement (finite and > 0):
    #     loss_p = |d_p - z_p|,  dd_p = scale * sign(d_p - z_p)   (valid p, else 0)
    z = z.to(ACC)
    measured = in_image & (z > 0) & (z < float("inf"))
    diff = d.to(ACC) - z
    if WRITE_GRAD:
        tl.store(gd_ptr + gd_off,
                 to_element(tl.where(measured, _sign(diff) * scale, 0.0), gd_ptr),
                 mask=in_image)
    return tl.where(measured, tl.abs(diff), 0.0)


@triton.jit
def _split_round(tile, tiles_per_image, HW, n_tiles, ROUND: tl.constexpr, b, t_ptr, t_sb, t_sw,
                 x_ptr, x_sb, x_sw, x_sc, WORDS: tl.constexpr, BLOCK_P: tl.constexpr,
                 ASM: tl.constexpr, after=None):
    # (q, in_sem, half, labels, planes) of one round of the split fp32 pixels
    # (``tile_split_pixels``). ``after``: a value the round's loads wait for, their pixel
    # index carrying it ANDed with a run-time 0 (the loads are pure asm, free to move).
    q, in_sem, half = tile_split_pixels(tile, tiles_per_image, HW, BLOCK_P, ROUND)
    if after is not None:
        zero = tl.cast(x_sc, tl.int64) >> 62  # no class stride reaches 2^62
        q = q + (after.to(tl.int32, bitcast=True).to(tl.int64) & zero)
    in_sem = in_sem & (tile < n_tiles)
    t_raw = tl.load(t_ptr + b * t_sb + q * t_sw, mask=in_sem, other=0)
    x_half = half.to(tl.int64) * WORDS * tl.cast(x_sc, tl.int64)
    xs = planes_load(x_ptr, b * x_sb + q * x_sw + x_half, x_sc, in_sem, WORDS, ASM)
    return q, in_sem, half, t_raw, xs


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
    HAS_DEP: tl.constexpr, WRITE_GRAD: tl.constexpr,
    FLAT: tl.constexpr, CLASSES: tl.constexpr, CHUNK: tl.constexpr, NUM_CHUNKS: tl.constexpr,
    V: tl.constexpr, BLOCK_P: tl.constexpr, TILES_PER_PROGRAM: tl.constexpr,
    ACC_FP64: tl.constexpr, SWEEP_STAGES: tl.constexpr, ASM_PLANES: tl.constexpr = False,
    PAIRS: tl.constexpr = False, TILE_STAGES: tl.constexpr = 1,
    SUM_CHUNK: tl.constexpr = ONLINE_CHUNK, KEPT: tl.constexpr = False,
    SPLIT: tl.constexpr = False,
):
    # One pass over the predictions. Program pid takes tiles pid, pid + programs,
    # ... (TILES_PER_PROGRAM of them, the last ones masked past n_tiles), each
    # BLOCK_P = V x 32 x num_warps pixels (q = h * W + w) of one image; a thread
    # owns V adjacent pixels and all their classes. Per task k the program sums
    # its per-pixel losses and stores part[k, pid] (finalize_kernel adds them
    # in a fixed order). Gradients are written already multiplied by
    # scale_k = state[ROW_SCALE, k] = carried_k / N_k.
    # Semantic: CLASSES > 0 holds the tile's CLASSES class planes in registers;
    # ASM_PLANES (compiled, V = 1, large C): the planes' loads and stores through inline PTX.
    # PAIRS (16-bit logits, V = 2): the planes as 32-bit words of two pixels each, the
    # semantic values one per pixel pair (SEM_P of them per tile); SPLIT (V = 1): each pair
    # shared by two neighbouring threads, half its class planes each; SPLIT without PAIRS
    # (float32, FLAT): each pixel so shared, the tile's pixels in two rounds. The tile loop is
    # pipelined TILE_STAGES deep. The one-read layouts sum the
    # exponentials over chunks of SUM_CHUNK planes with a running max (semantic._lse2; one
    # max then one sum where SUM_CHUNK >= CLASSES); KEPT (float32 logits, or the bf16
    # pairs as float16): those exponentials stay in the logits' registers for the gradient.
    # CLASSES == 0 makes two sweeps over NUM_CHUNKS chunks of CHUNK classes, their chunk
    # loops pipelined SWEEP_STAGES deep (1: not pipelined).
    # FLAT: every tensor has stride_h == W * stride_w, so pixel q sits at q * stride_w.
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    scale_ptr = state_ptr + ROW_SCALE * SLOTS
    scale_sem = tl.load(scale_ptr + SLOT_SEMANTIC).to(ACC)
    scale_inst = tl.load(scale_ptr + SLOT_INSTANCE).to(ACC)
    scale_dep = tl.load(scale_ptr + SLOT_DEPTH).to(ACC)
    SEM_P: tl.constexpr = BLOCK_P // 2 if PAIRS and not SPLIT else BLOCK_P
    WORDS: tl.constexpr = CLASSES // 2 if SPLIT else CLASSES  # planes per thread
    acc_sem = tl.zeros([SEM_P], ACC)
    acc_inst = tl.zeros([BLOCK_P], ACC)
    acc_dep = tl.zeros([BLOCK_P], ACC)
    if pid < n_tiles:
        for i in tl.range(TILES_PER_PROGRAM, num_stages=TILE_STAGES):
            tile = pid + i * nprog
            b, _, h, w, in_image = tile_pixels(tile, tiles_per_image, HW, W, BLOCK_P, V, FLAT)
            in_image = in_image & (tile < n_tiles)
            # Every load of the tile first (masked by pixel only): one DRAM round trip.
            if HAS_SEM and PAIRS:  # FLAT, x_sw = gx_sw = 1
                if SPLIT:
                    q, in_pair, half = tile_split_pairs(tile, tiles_per_image, HW, BLOCK_P)
                    x_half = half.to(tl.int64) * WORDS * tl.cast(x_sc, tl.int64)
                    g_half = half.to(tl.int64) * WORDS * tl.cast(gx_sc, tl.int64)
                else:
                    q, in_pair = tile_pairs(tile, tiles_per_image, HW, BLOCK_P)
                    half, x_half, g_half = 0, 0, 0
                in_pair = in_pair & (tile < n_tiles)
                t_lo = tl.load(t_ptr + b * t_sb + q * t_sw, mask=in_pair, other=0)
                t_hi = tl.load(t_ptr + b * t_sb + (q + 1) * t_sw, mask=in_pair, other=0)
                xs = pairs_words(x_ptr, b * x_sb + q + x_half, x_sc, in_pair, WORDS, ASM_PLANES)
            elif HAS_SEM and SPLIT:  # FLAT; the first round's planes (the second's come later)
                q, in_sem, half, t_raw, xs = _split_round(
                    tile, tiles_per_image, HW, n_tiles, 0, b, t_ptr, t_sb, t_sw, x_ptr, x_sb,
                    x_sw, x_sc, WORDS, BLOCK_P, ASM_PLANES)
            elif HAS_SEM:
                x_off = b * x_sb + h * x_sh + w * x_sw
                t_raw = tl.load(t_ptr + b * t_sb + h * t_sh + w * t_sw, mask=in_image, other=0)
                if CLASSES > 0:
                    xs = planes_load(x_ptr, x_off, x_sc, in_image, CLASSES, ASM_PLANES)
            if HAS_INST:
                in_mask, o0, o1, g0, g1 = _instance_load(
                    o_ptr, g_ptr, m_ptr, b * o_sb + h * o_sh + w * o_sw,
                    b * g_sb + h * g_sh + w * g_sw, b * m_sb + h * m_sh + w * m_sw, o_sc, g_sc,
                    in_image)
            if HAS_DEP:
                z, dv = _depth_load(d_ptr, z_ptr, b * d_sb + h * d_sh + w * d_sw,
                                    b * z_sb + h * z_sh + w * z_sw, in_image)
            # Then the arithmetic and the stores. With the class planes in registers, the
            # regressions first: that frees their registers before the softmax needs the
            # most (bf16: 128 registers instead of 228). The sweeps hold few values and go
            # first (the other way round, ptxas spills one register at C = 150 in bf16).
            if HAS_SEM and not PAIRS and not SPLIT:
                t, wt = labels_and_weights(t_raw, cw_ptr, in_image, C, ignore_index, HAS_WEIGHT,
                                           ACC)
                g_off = b * gx_sb + h * gx_sh + w * gx_sw
                if CLASSES == 0:
                    x_t = target_logit(x_ptr, x_off, x_sc, t, in_image)
                    acc_sem += sweeps_step(x_ptr, x_off, x_sc, x_t, t, wt, scale_sem, gx_ptr,
                                           g_off, gx_sc, in_image, C, CHUNK, NUM_CHUNKS,
                                           BLOCK_P, WRITE_GRAD, ACC, STAGES=SWEEP_STAGES)
            if HAS_INST:
                acc_inst += _instance_step(in_mask, o0, o1, g0, g1, scale_inst, go_ptr,
                                           b * go_sb + h * go_sh + w * go_sw, go_sc, in_image,
                                           WRITE_GRAD, ACC)
            if HAS_DEP:
                acc_dep += _depth_step(z, dv, scale_dep, gd_ptr, b * gd_sb + h * gd_sh + w * gd_sw,
                                       in_image, WRITE_GRAD, ACC)
            if HAS_SEM and PAIRS:
                t_lo, w_lo = labels_and_weights(t_lo, cw_ptr, in_pair, C, ignore_index,
                                                HAS_WEIGHT, ACC)
                t_hi, w_hi = labels_and_weights(t_hi, cw_ptr, in_pair, C, ignore_index,
                                                HAS_WEIGHT, ACC)
                acc_sem += pairs_step(xs, t_lo, w_lo, t_hi, w_hi, scale_sem, x_ptr,
                                      b * x_sb + q, x_sc, gx_ptr, b * gx_sb + q + g_half, gx_sc,
                                      in_pair,
                                      CLASSES, WRITE_GRAD, x_ptr.dtype.element_ty, SUM_CHUNK,
                                      ASM_PLANES, KEPT, half, SPLIT)
            elif HAS_SEM and SPLIT:
                last = scale_sem  # (the first round's last value, once it has one)
                for r in tl.static_range(2):
                    if r == 1:  # the second round's pixels, their loads (pure asm) held
                        # after the first round's last store by an address that depends on it
                        q, in_sem, half, t_raw, xs = _split_round(
                            tile, tiles_per_image, HW, n_tiles, 1, b, t_ptr, t_sb, t_sw, x_ptr,
                            x_sb, x_sw, x_sc, WORDS, BLOCK_P, ASM_PLANES, last)
                    t, wt = labels_and_weights(t_raw, cw_ptr, in_sem, C, ignore_index,
                                               HAS_WEIGHT, ACC)
                    losses, last = resident_step(xs, t, wt, scale_sem, x_ptr,
                                                 b * x_sb + q * x_sw, x_sc, gx_ptr,
                                                 b * gx_sb + q * gx_sw, gx_sc, in_sem, WORDS,
                                                 WRITE_GRAD, ACC, SUM_CHUNK, ASM_PLANES, KEPT,
                                                 half, True)
                    acc_sem += losses
            elif HAS_SEM and CLASSES > TARGET_LAST:
                acc_sem += resident_step(xs, t, wt, scale_sem, x_ptr, x_off, x_sc, gx_ptr, g_off,
                                         gx_sc, in_image, CLASSES, WRITE_GRAD, ACC, SUM_CHUNK,
                                         ASM_PLANES, KEPT)[0]
            elif HAS_SEM and CLASSES > 0:
                acc_sem += planes_step(xs, t, wt, scale_sem, gx_ptr, g_off, gx_sc, in_image,
                                       CLASSES, WRITE_GRAD, ACC, ASM_PLANES)
    tl.store(part_ptr + SLOT_SEMANTIC * nprog + pid, tl.sum(acc_sem, 0))
    tl.store(part_ptr + SLOT_INSTANCE * nprog + pid, tl.sum(acc_inst, 0))
    tl.store(part_ptr + SLOT_DEPTH * nprog + pid, tl.sum(acc_dep, 0))


@triton.jit
def partial_sums_kernel(part_ptr, n_parts, sums_ptr, BLOCK_R: tl.constexpr):
    # The first of two fixed-order levels of a large reduction: program r adds
    # partials [r BLOCK_R, (r + 1) BLOCK_R) of each task row (float64) into
    # sums[k, r]; finalize_kernel then adds the programs' sums.
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    r = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    for k in tl.static_range(SLOT_DEPTH + 1):
        v = tl.load(part_ptr + k * n_parts + r, mask=r < n_parts, other=0.0).to(tl.float64)
        tl.store(sums_ptr + k * nprog + pid, tl.sum(v, 0))


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
def _ratio(state_ptr, g_total_ptr, g_losses_ptr, pos, SLOT: tl.constexpr,
           HAS_G_TOTAL: tl.constexpr, HAS_G_LOSSES: tl.constexpr):
    # The buffer of task k holds unit_k * carried_k / N_k; the incoming gradient asks for
    # f_k = g_total coef_k + g_L_k in place of carried_k: ratio_k = f_k / carried_k
    # (carried_k is finite and non-zero by construction: normalisers.prepare_kernel).
    # 1 for a task absent from the batch, whose buffer holds zeros.
    n = tl.load(state_ptr + ROW_N * SLOTS + SLOT)
    f = tl.zeros([], tl.float64)  # a gradient that does not arrive is 0, not 0 * coef_k
    if HAS_G_TOTAL:
        f += tl.load(g_total_ptr).to(tl.float64) * tl.load(state_ptr + ROW_COEF * SLOTS + SLOT)
    if HAS_G_LOSSES:
        f += tl.load(g_losses_ptr + pos).to(tl.float64)
    return tl.where(n > 0, f / tl.load(state_ptr + ROW_CARRIED * SLOTS + SLOT), 1.0)


@triton.jit
def _rescale_buffer(src_ptr, dst_ptr, n, ratio, pid, nprog, COPY: tl.constexpr,
                    BLOCK: tl.constexpr, ACC: tl.constexpr):
    # dst <- ratio * src over a dense buffer; nothing to do in place when ratio == 1.
    if COPY:
        n_active = n
    else:
        n_active = tl.where(ratio != 1.0, n, 0)
    start = pid.to(tl.int64) * BLOCK
    while start < n_active:
        offs = start + tl.arange(0, BLOCK)
        in_buffer = offs < n
        g = tl.load(src_ptr + offs, mask=in_buffer).to(ACC)
        tl.store(dst_ptr + offs, to_element(g * ratio.to(ACC), dst_ptr), mask=in_buffer)
        start += nprog.to(tl.int64) * BLOCK


@triton.jit
def output_grad_kernel(gx_ptr, gx_out, n_x, go_ptr, go_out, n_o, gd_ptr, gd_out, n_d, state_ptr,
                       g_total_ptr, g_losses_ptr, pos_sem, pos_inst, pos_dep,
                       dcoef_ptr, grad_coef_ptr, n_coef,
                       HAS_SEM: tl.constexpr, HAS_INST: tl.constexpr, HAS_DEP: tl.constexpr,
                       HAS_G_TOTAL: tl.constexpr, HAS_G_LOSSES: tl.constexpr,
                       COPY: tl.constexpr, BLOCK: tl.constexpr, ACC_FP64: tl.constexpr,
                       HAS_GRAD_COEF: tl.constexpr = False):
    # Backward in one launch: every program works out the ratios (a few scalars) and
    # rescales its share of each task's buffer, in place (COPY: into a new buffer, leaving
    # the saved one for another backward of a retained graph). With total.backward()
    # every ratio is exactly 1 and a program reads a few scalars and touches no gradient.
    # HAS_GRAD_COEF: program 0 also writes d/dcoef = g_total * dtotal/dcoef (n_coef values,
    # in dcoef's dtype, stored in the log-variances' or weights' own).
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    if HAS_GRAD_COEF:
        if pid == 0:
            store_coef_grad(g_total_ptr, dcoef_ptr, grad_coef_ptr, n_coef)
    if HAS_SEM:
        ratio = _ratio(state_ptr, g_total_ptr, g_losses_ptr, pos_sem, SLOT_SEMANTIC, HAS_G_TOTAL,
                       HAS_G_LOSSES)
        _rescale_buffer(gx_ptr, gx_out, n_x, ratio, pid, nprog, COPY, BLOCK, ACC)
    if HAS_INST:
        ratio = _ratio(state_ptr, g_total_ptr, g_losses_ptr, pos_inst, SLOT_INSTANCE, HAS_G_TOTAL,
                       HAS_G_LOSSES)
        _rescale_buffer(go_ptr, go_out, n_o, ratio, pid, nprog, COPY, BLOCK, ACC)
    if HAS_DEP:
        ratio = _ratio(state_ptr, g_total_ptr, g_losses_ptr, pos_dep, SLOT_DEPTH, HAS_G_TOTAL,
                       HAS_G_LOSSES)
        _rescale_buffer(gd_ptr, gd_out, n_d, ratio, pid, nprog, COPY, BLOCK, ACC)
