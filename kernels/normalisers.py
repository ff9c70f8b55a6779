"""The pre-pass over the targets: normalisers, label check and loss coefficients.

The gradients of a mean depend on its normaliser N_k, so N_k must be known
before the fused pass writes them. The pre-pass reads only the targets (about a
tenth of the bytes) and leaves per-program partial sums on the device;
``prepare_kernel`` adds them in a fixed order and turns them into the per-task
gradient scales. Nothing is read back to the host.
"""
import triton
import triton.language as tl

__all__ = ["normaliser_kernel", "prepare_kernel", "slot_vector"]

# Lanes of the small per-task vectors: one per task, in canonical order, plus a spare.
SLOTS = tl.constexpr(4)
SLOT_SEMANTIC = tl.constexpr(0)
SLOT_INSTANCE = tl.constexpr(1)
SLOT_DEPTH = tl.constexpr(2)

# Rows of the (STATE_ROWS, SLOTS) float64 state shared by the forward and backward kernels.
ROW_N = tl.constexpr(0)        # normaliser N_k (0: task absent from this batch)
ROW_COEF = tl.constexpr(1)     # coef_k: c_k exp(-s_k) or the fixed weight w_k
ROW_SCALE = tl.constexpr(2)    # forward gradient scale carried_k / N_k (0 when absent)
ROW_CARRIED = tl.constexpr(3)  # factor carried_k the gradient buffers hold (see backward)
STATE_ROWS = 4

# carried_k = coef_k when 2^-64 <= |coef_k| <= 2^64, else 1: a factor backward can always
# divide out (a weight of 0 or exp(-s_k) underflowing would leave nothing to rescale).
CARRIED_MIN = tl.constexpr(5.421010862427522e-20)
CARRIED_MAX = tl.constexpr(1.8446744073709552e19)


@triton.jit
def slot_vector(lane, v_sem, v_inst, v_dep, v_spare):
    # Per-task scalars laid out on the SLOTS lanes.
    return tl.where(lane == SLOT_SEMANTIC, v_sem,
                    tl.where(lane == SLOT_INSTANCE, v_inst,
                             tl.where(lane == SLOT_DEPTH, v_dep, v_spare)))


@triton.jit
def store_coef_grad(g_total_ptr, dcoef_ptr, grad_coef_ptr, n_coef):
    # Backward's gradient of the log-variances (or weights): g_total * dtotal/dcoef, n_coef
    # values, multiplied in dcoef's dtype and stored in the coefficients' own (as PyTorch's
    # (g_total * dcoef).to(coef.dtype)).
    k = tl.arange(0, SLOTS)
    dcoef = tl.load(dcoef_ptr + k, mask=k < n_coef, other=0.0)
    tl.store(grad_coef_ptr + k, tl.load(g_total_ptr).to(dcoef.dtype) * dcoef, mask=k < n_coef)


@triton.jit
def tile_pixels(tile, tiles_per_image, HW, W, BLOCK_P: tl.constexpr, V: tl.constexpr,
                FLAT: tl.constexpr):
    # Tile `tile` covers pixels q = h * W + w of image b, BLOCK_P of them from
    # (tile mod tiles_per_image) * BLOCK_P; in_image guards the image's last tile.
    # Runs of V pixels start at multiples of V: with unit pixel strides a thread
    # moves its V pixels of a plane in one access of V elements (and no wider).
    # FLAT: every tensor has stride_h == W * stride_w, so h = 0 and w = q address it.
    image = tile // tiles_per_image
    q = (tile - image * tiles_per_image) * BLOCK_P + tl.arange(0, BLOCK_P)
    q = tl.max_contiguous(tl.multiple_of(q, V), V)
    in_image = q < HW
    if FLAT:
        h = 0
        w = q.to(tl.int64)
    else:
        h = (q // W).to(tl.int64)
        w = (q % W).to(tl.int64)
    return image.to(tl.int64), q, h, w, in_image


@triton.jit
def _per_thread(v, V: tl.constexpr):
    # the sum over each thread's V adjacent pixels: a vector of BLOCK_P // V values, one per
    # thread, added in registers (no value crosses threads)
    return tl.sum(tl.reshape(v, [v.shape[0] // V, V]), axis=1)


@triton.jit
def normaliser_kernel(
    t_ptr, cw_ptr, m_ptr, z_ptr, tc_ptr,
    t_sb, t_sh, t_sw, m_sb, m_sh, m_sw, z_sb, z_sh, z_sw, C, ignore_index,
    norm_part_ptr, bad_part_ptr, HW, W, tiles_per_image, n_tiles,
    HAS_SEM: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_INST: tl.constexpr,
    HAS_DEP: tl.constexpr, FLAT: tl.constexpr, V: tl.constexpr, BLOCK_P: tl.constexpr,
    ACC_FP64: tl.constexpr, COMPACT: tl.constexpr = False,
):
    # Per program, over its tiles of BLOCK_P pixels (dealt round-robin):
    #     norm[sem]  = sum_{valid p} class_weight[t_p]  (count without weights)
    #     norm[inst] = #{p : m_p}
    #     norm[dep]  = #{p : z_p finite and > 0}
    # and for labels outside [0, C) that are not ignore_index: their count, the
    # flat index b*H*W + q of the first one and its value (bad[0..2, pid]).
    # COMPACT: the labels again as one byte each, tc[b, q] = t_p if valid else 255 (C <= 255),
    # which the fused pass reads in place of the wider labels.
    # Each thread keeps one running value per quantity, not one per pixel: the registers go
    # to loads in flight (occupancy), and the first bad label's value is read again at the end.
    ACC: tl.constexpr = tl.float64 if ACC_FP64 else tl.float32
    THREADS: tl.constexpr = BLOCK_P // V
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    no_pixel = 9223372036854775807
    acc_sem = tl.zeros([THREADS], ACC)
    acc_inst = tl.zeros([THREADS], ACC)
    acc_dep = tl.zeros([THREADS], ACC)
    n_bad = tl.zeros([THREADS], tl.int32)
    first_bad = tl.full([THREADS], no_pixel, tl.int64)
    tile = pid
    while tile < n_tiles:
        b, q, h, w, in_image = tile_pixels(tile, tiles_per_image, HW, W, BLOCK_P, V, FLAT)
        # Every load of the tile before the first store (the compact labels): a store may
        # alias a later load, so the compiler keeps a load written after it after it, one
        # more round trip to memory per tile.
        if HAS_SEM:
            t = tl.load(t_ptr + b * t_sb + h * t_sh + w * t_sw, mask=in_image, other=0).to(tl.int64)
        if HAS_INST:
            in_mask = tl.load(m_ptr + b * m_sb + h * m_sh + w * m_sw, mask=in_image, other=0)
        if HAS_DEP:
            z = tl.load(z_ptr + b * z_sb + h * z_sh + w * z_sw, mask=in_image, other=0.0)
        if HAS_SEM:
            labelled = in_image & (t != ignore_index)
            in_range = (t >= 0) & (t < C)
            valid = labelled & in_range
            if HAS_WEIGHT:
                acc_sem += _per_thread(tl.load(cw_ptr + t, mask=valid, other=0.0).to(ACC), V)
            else:
                acc_sem += _per_thread(valid.to(ACC), V)
            if COMPACT:
                tl.store(tc_ptr + b * HW + q, tl.where(valid, t, 255).to(tl.uint8), mask=in_image)
            bad = labelled & (in_range == 0)
            n_bad += _per_thread(bad.to(tl.int32), V)
            # Tiles come in increasing pixel order, so a thread's first bad pixel stays first.
            first_bad = tl.minimum(first_bad, tl.min(
                tl.reshape(tl.where(bad, b * HW + q, no_pixel), [THREADS, V]), axis=1))
        if HAS_INST:
            acc_inst += _per_thread((in_image & (in_mask != 0)).to(ACC), V)
        if HAS_DEP:
            acc_dep += _per_thread((in_image & (z > 0) & (z < float("inf"))).to(ACC), V)
        tile += nprog
    tl.store(norm_part_ptr + SLOT_SEMANTIC * nprog + pid, tl.sum(acc_sem, 0))
    tl.store(norm_part_ptr + SLOT_INSTANCE * nprog + pid, tl.sum(acc_inst, 0))
    tl.store(norm_part_ptr + SLOT_DEPTH * nprog + pid, tl.sum(acc_dep, 0))
    first_index = tl.min(first_bad, 0)
    tl.store(bad_part_ptr + pid, tl.sum(n_bad.to(tl.int64), 0))
    tl.store(bad_part_ptr + nprog + pid, first_index)
    first_value = 0
    if HAS_SEM:
        found = first_index != no_pixel
        image = tl.where(found, first_index // HW, 0)
        q = tl.where(found, first_index % HW, 0)
        if FLAT:
            offset = image * t_sb + q * t_sw
        else:
            offset = image * t_sb + (q // W) * t_sh + (q % W) * t_sw
        first_value = tl.load(t_ptr + offset, mask=found, other=0).to(tl.int64)
    tl.store(bad_part_ptr + 2 * nprog + pid, first_value)


@triton.jit
def prepare_kernel(norm_part_ptr, bad_part_ptr, n_parts, coef_ptr, pos_sem, pos_inst, pos_dep,
                   f_sem, f_inst, f_dep, state_ptr, bad_ptr,
                   HAS_COEF: tl.constexpr, USE_LOG_VARS: tl.constexpr, BLOCK_R: tl.constexpr):
    # One program; partial sums are added in a fixed order, in float64.
    #     N_k = sum_pid norm[k, pid],  present_k = task given and N_k > 0
    #     coef_k = f_k exp(-s_k) (log-variances s) | w_k (weights) | 1
    #     carried_k = coef_k, or 1 where coef_k is 0, not finite or far from 1
    #     scale_k = present_k carried_k / N_k   (what the fused pass multiplies gradients by)
    # bad = (count, first flat index, its value) of out-of-range labels.
    lane = tl.arange(0, SLOTS)
    pos = slot_vector(lane, pos_sem, pos_inst, pos_dep, -1)
    rows = tl.arange(0, BLOCK_R)
    acc = tl.zeros([BLOCK_R, SLOTS], tl.float64)
    n_bad = tl.zeros([BLOCK_R], tl.int64)
    first_bad = tl.full([BLOCK_R], 9223372036854775807, tl.int64)
    first_value = tl.zeros([BLOCK_R], tl.int64)
    r0 = 0
    while r0 < n_parts:
        r = r0 + rows
        in_parts = r < n_parts
        ok = in_parts[:, None] & (pos >= 0)[None, :]
        acc += tl.load(norm_part_ptr + lane[None, :] * n_parts + r[:, None], mask=ok,
                       other=0.0).to(tl.float64)
        n_bad += tl.load(bad_part_ptr + r, mask=in_parts, other=0)
        index = tl.load(bad_part_ptr + n_parts + r, mask=in_parts, other=9223372036854775807)
        value = tl.load(bad_part_ptr + 2 * n_parts + r, mask=in_parts, other=0)
        earlier = index < first_bad
        first_value = tl.where(earlier, value, first_value)
        first_bad = tl.where(earlier, index, first_bad)
        r0 += BLOCK_R
    n = tl.sum(acc, 0)
    present = (pos >= 0) & (n > 0)
    if HAS_COEF:
        given = tl.load(coef_ptr + pos, mask=pos >= 0, other=0.0).to(tl.float64)
        if USE_LOG_VARS:
            factor = slot_vector(lane, f_sem, f_inst, f_dep, 0.0).to(tl.float64)
            coef = factor * tl.exp(-given)
        else:
            coef = given
    else:
        coef = tl.where(pos >= 0, 1.0, 0.0).to(tl.float64)
    safe = (tl.abs(coef) >= CARRIED_MIN) & (tl.abs(coef) <= CARRIED_MAX)
    carried = tl.where(present, tl.where(safe, coef, 1.0), 1.0)
    tl.store(state_ptr + ROW_N * SLOTS + lane, n)
    tl.store(state_ptr + ROW_COEF * SLOTS + lane, coef)
    tl.store(state_ptr + ROW_SCALE * SLOTS + lane,
             tl.where(present, carried / tl.where(present, n, 1.0), 0.0))
    tl.store(state_ptr + ROW_CARRIED * SLOTS + lane, carried)
    first_index = tl.min(first_bad, 0)
    tl.store(bad_ptr, tl.sum(n_bad, 0))
    tl.store(bad_ptr + 1, first_index)
    tl.store(bad_ptr + 2, tl.sum(tl.where(first_bad == first_index, first_value, 0), 0))
