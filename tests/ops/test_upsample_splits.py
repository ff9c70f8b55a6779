"""The cases the upsampling kernel's work split makes risky, against F.interpolate + the loss.

A program takes one image, a band of low-resolution rows and a strip of columns, and
recomputes the row and the run of columns it shares with its neighbours; a strip wider
than a window is walked in several windows whose cells add up. The split is forced small
here (``tiles`` patched) so that the interpreter's small inputs cross every kind of
border. Also: heads one row or column high, non-integer factors, offsets past 2**31
elements, infinite and NaN logits where labels are ignored, an empty batch, zero-size
heads, a second backward through a retained graph, and what the launch plan allocates
and reduces at full size (meta tensors, no kernel runs).
"""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastmtl
from fastmtl.kernels import upsample_loss, upsample_regressions
from fastmtl.ops import upsample
from fastmtl.ops.upsample_tiles import run_starts, use
from helpers import launch_recorder, leaf_copies, low_res_inputs, random_class_weight
from oracle import check_upsampled

LOG_VARS = torch.tensor([0.3, -0.4, 0.8])


def forced_split(monkeypatch, strip_cells, band_rows, block_x=None):
    """Make every launch use the given strip, band and (optionally) window width."""
    plan_of = upsample.tiles

    def tiles(B, C, h, w, H, W, align_corners, semantic, capped=False):
        plan = plan_of(B, C, h, w, H, W, align_corners, semantic, capped=capped)
        cells, rows = min(strip_cells, w), min(band_rows, h)
        nrun = max(plan.nrun, 1 << cells.bit_length())
        width = block_x or plan.block_x
        return dataclasses.replace(plan, block_x=width, strip_cells=cells, n_strips=-(-w // cells),
                                   band_rows=rows, n_bands=-(-h // rows), nrun=nrun,
                                   kc=max(1, width // nrun), windows=2 if block_x else 1)

    monkeypatch.setattr(upsample, "tiles", tiles)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("strip_cells,band_rows,block_x", [(1, 1, None), (2, 3, None), (3, 2, 4)])
def test_strip_band_and_window_borders(monkeypatch, strip_cells, band_rows, block_x,
                                       align_corners):
    forced_split(monkeypatch, strip_cells, band_rows, block_x)
    pred, tgt = low_res_inputs(B=1, C=5, h=5, w=6, H=13, W=17, seed=30 + strip_cells)
    check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS, class_weight=random_class_weight(5))


@pytest.mark.parametrize("strip_cells,band_rows,block_x,align_corners",
                         [(1, 1, None, True), (3, 2, 4, False)])
def test_many_classes_strip_band_and_window_borders(class_chunks, monkeypatch, strip_cells,
                                                    band_rows, block_x, align_corners):
    """The layouts of C > 32 across every kind of border, several windows included (each
    split with one align_corners: the tables behind both are tested at C <= 32 above)."""
    forced_split(monkeypatch, strip_cells, band_rows, block_x)
    pred, tgt = low_res_inputs(B=1, C=35, h=5, w=6, H=13, W=17, seed=40 + strip_cells,
                               tasks=("semantic",))
    check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS[:1],
                    class_weight=random_class_weight(35))


def test_many_classes_split_gradcheck_fp64(class_chunks, monkeypatch):
    forced_split(monkeypatch, 2, 1, 4)
    pred, tgt = low_res_inputs(B=1, C=33, h=2, w=3, H=5, W=8, dtype=torch.float64, seed=41,
                               tasks=("semantic",))

    def total(x):
        return fastmtl.multitask_loss({"semantic": x}, tgt, backend="triton",
                                      upsample="bilinear", check_labels=False).total

    inputs = [pred["semantic"].clone().requires_grad_(True)]
    assert torch.autograd.gradcheck(total, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_split_gradcheck_fp64(monkeypatch):
    forced_split(monkeypatch, 2, 1, 4)
    pred, tgt = low_res_inputs(B=1, C=3, h=2, w=3, H=5, W=8, dtype=torch.float64, seed=31,
                               tasks=("semantic", "depth"))
    names = list(pred)

    def total(*args):
        *preds, log_vars = args
        return fastmtl.multitask_loss(dict(zip(names, preds)), tgt, log_vars, backend="triton",
                                      upsample="bilinear", check_labels=False).total

    inputs = [*leaf_copies(pred).values(), LOG_VARS[:2].double().requires_grad_(True)]
    assert torch.autograd.gradcheck(total, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("h,w,H,W", [(1, 5, 4, 13), (4, 1, 9, 6), (1, 1, 3, 5), (2, 1, 3, 300)])
def test_heads_one_row_or_column_high(h, w, H, W, align_corners):
    pred, tgt = low_res_inputs(B=1, C=4, h=h, w=w, H=H, W=W, seed=h * 10 + w)
    check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("h,w,H,W", [(3, 4, 10, 11), (6, 9, 7, 10), (2, 3, 19, 29)])
def test_non_integer_factors(h, w, H, W, align_corners):
    pred, tgt = low_res_inputs(B=1, C=6, h=h, w=w, H=H, W=W, seed=H + W)
    check_upsampled(pred, tgt, align_corners=align_corners, weights=[1.0, 0.5, 2.0])


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("rows,band_rows,h,w,H,W", [
    (8, 2, 3, 4, 40, 19),   # factor 13.3: runs of 13-14 rows, two chunks each
    (8, 1, 2, 3, 34, 7),    # factor 17
    (2, 2, 4, 3, 21, 10),   # chunks of 2 rows, runs of 5-6: three chunks, the last partial
    (4, 1, 7, 5, 9, 11),    # factor 1.3: rows owning no full-resolution row
    (2, 3, 1, 3, 13, 9),    # a head one row high
])
def test_regression_row_chunks(monkeypatch, rows, band_rows, h, w, H, W, align_corners):
    """The regressions' kernel reads the rows of a run ``rows`` at a time, and the next
    chunk (of the run or of the next one) before it reduces the current one: runs longer
    than a chunk, H not a multiple of it, runs of no row, heads one row high, bands of 1 to
    3 rows (each program walks the row before its band)."""
    with use(regression_rows=rows):
        forced_split(monkeypatch, 2, band_rows)
        pred, tgt = low_res_inputs(B=2, C=3, h=h, w=w, H=H, W=W, tasks=("instance", "depth"),
                                   seed=H + W + rows)
        check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS[:2])


def test_capped_regressions_take_one_column_where_the_cap_applies():
    """Where the launch takes a register cap, the regressions' launch is one column per thread
    capped at 128 registers (``Config.capped_regressions``); inside a torch.compile graph,
    or where the cap does not apply (a factor of 2: more runs per window than
    ``capped_runs``), the two uncapped columns."""
    benchmark = dict(B=8, C=1, h=128, w=256, H=1024, W=2048, align_corners=False,
                     semantic=False)
    capped = upsample.tiles(**benchmark, capped=True)
    plain = upsample.tiles(**benchmark)
    assert (capped.block_x // (32 * capped.num_warps), capped.max_registers) == (1, 128)
    assert (plain.block_x // (32 * plain.num_warps), plain.max_registers) == (2, None)
    factor_2 = dict(benchmark, h=512, w=1024)
    assert upsample.tiles(**factor_2, capped=True) == upsample.tiles(**factor_2)
    with use(capped_regressions=None):
        assert upsample.tiles(**benchmark, capped=True) == plain


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("h,w,H,W", [(5, 6, 40, 48), (3, 7, 13, 50)])
def test_one_column_regressions_match_the_reference(h, w, H, W, align_corners):
    """The split of the capped regressions' launch (one column per thread; the cap itself
    is a compile option the interpreter has no use for), against F.interpolate + the loss."""
    with use(regression_columns=1):
        pred, tgt = low_res_inputs(B=2, C=3, h=h, w=w, H=H, W=W, tasks=("instance", "depth"),
                                   seed=h * W)
        check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS[:2])


@pytest.mark.parametrize("tasks", [("instance",), ("depth",), ("instance", "depth")])
def test_regression_chunks_across_windows(monkeypatch, tasks):
    """A strip walked in several windows (block_x forced to 4), with chunks of 2 rows."""
    with use(regression_rows=2):
        forced_split(monkeypatch, 3, 2, 4)
        pred, tgt = low_res_inputs(B=1, C=3, h=5, w=6, H=23, W=17, tasks=tasks, seed=len(tasks))
        check_upsampled(pred, tgt, log_vars=LOG_VARS[:len(tasks)])


def _nonfinite_regression_inputs(finite_predictions):
    pred, tgt = low_res_inputs(B=1, C=3, h=4, w=5, H=29, W=37, tasks=("instance", "depth"),
                               seed=35)
    if not finite_predictions:
        pred["instance"][0, 1, 2, 3] = float("nan")
        pred["instance"][0, 0, 0, 4] = float("inf")
        pred["depth"][0, 0, 3, 1] = float("-inf")
    tgt["instance"][0, :, 0:5, 0:9] = float("nan")
    tgt["instance_mask"][0, 0:5, 0:9] = False
    tgt["instance"][0, 1, 20:23, 30:33] = float("inf")
    tgt["instance_mask"][0, 20:23, 30:33] = False
    tgt["depth"][0, 0, 10:14, 0:5] = float("inf")
    tgt["depth"][0, 0, 14:16, 0:5] = float("nan")
    tgt["depth"][0, 0, 16:18, 0:5] = -1.0
    return pred, tgt


@pytest.mark.parametrize("align_corners", [False, True])
def test_nonfinite_regression_targets_follow_the_reference(align_corners):
    """Targets that are NaN or inf outside the mask, or not finite and positive, count for
    nothing."""
    pred, tgt = _nonfinite_regression_inputs(finite_predictions=True)
    check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS[:2])


@pytest.mark.parametrize("align_corners", [False, True])
def test_regressions_kernel_matches_the_single_pass_kernel(align_corners):
    """``upsample_regressions_kernel`` gives what ``upsample_loss_kernel`` gives for the
    regressions (its launch before the row chunks), NaN and inf predictions included:
    the same gradients and partial sums, to the rounding of the sums over a column's rows."""
    pred, tgt = _nonfinite_regression_inputs(finite_predictions=False)
    calls = []
    args = [None, None, None, pred["instance"], tgt["instance"], tgt["instance_mask"],
            pred["depth"], tgt["depth"]]
    upsample._forward(launch_recorder(calls), *args, torch.zeros(2), [-1, 0, 1], [1.0, 0.5, 0.5],
                      [0.5, 0.5, 0.5], True, 255, align_corners, True)
    (table_args, table_kw), = [(a, k) for kernel, a, k in calls
                               if kernel is upsample.T.axis_table_kernel]
    upsample.T.axis_table_kernel[(2,)](*table_args, **table_kw)
    (a, kw), = [(a, k) for kernel, a, k in calls
                if kernel is upsample_regressions.upsample_regressions_kernel]
    n_parts = a[35]
    grid = (n_parts,)
    part = a[34].zero_()
    upsample_regressions.upsample_regressions_kernel[grid](*a, **kw)
    new = (a[3].clone(), a[21].clone(), part.clone())
    bad = torch.zeros((3, n_parts), dtype=torch.int64)
    part.zero_()
    old_args = [part] * 4 + [0] * 11 + [255] + list(a[:35]) + [bad] + list(a[35:])
    upsample_loss.upsample_loss_kernel[grid](
        *old_args, C=1, HAS_SEM=False, HAS_WEIGHT=False, HAS_INST=True, HAS_DEP=True,
        WRITE_GRAD=True, BLOCK_C=1, BLOCK_X=kw["BLOCK_X"], NRUN=kw["NRUN"], KC=kw["KC"],
        ACC_FP64=False, FAST_MATH=False, COMPILED=False, num_warps=kw["num_warps"])
    assert new[2].isnan().any()  # the NaN predictions reach the losses
    for mine, theirs in zip(new, (a[3], a[21], part)):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("n_in,n_out", [(1, 9), (4, 32), (5, 17), (7, 23), (13, 50), (32, 33)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_run_starts_are_the_tables_boundaries(n_in, n_out, align_corners):
    index = torch.empty(n_out + 1, dtype=torch.int32)
    lam = torch.empty(n_out + 1)
    start = torch.empty(n_in + 3, dtype=torch.int32)
    upsample.T.axis_table_kernel[(2,)](index, lam, start, n_in, n_out, 1, 1,
                                       n_out.bit_length() + 1, 2, ALIGN_CORNERS=align_corners,
                                       ACC_FP64=False, BLOCK=16)
    # Equal, except that an output exactly on a boundary (src an integer in exact arithmetic)
    # may fall on either side in floating point; the split only uses these as estimates.
    for j, (device, exact) in enumerate(zip(start[:n_in + 1].tolist(),
                                            run_starts(n_in, n_out, align_corners))):
        if align_corners:
            tie = exact * (n_in - 1) == j * (n_out - 1)
        else:
            tie = (2 * exact + 1) * n_in == (2 * j + 1) * n_out
        assert device == exact or (tie and device == exact + 1), (j, device, exact)


@pytest.mark.parametrize("align_corners,C", [(False, 4), (True, 4), (False, 40)])
def test_nonfinite_logits_where_labels_are_ignored_follow_the_reference(align_corners, C):
    """F.interpolate spreads NaN and inf through the taps (0 * inf included); F.cross_entropy
    gives an ignored pixel the gradient 0 * softmax, NaN where its logits are non-finite."""
    pred, tgt = low_res_inputs(B=1, C=C, h=4, w=5, H=16, W=20, tasks=("semantic",), seed=32,
                               ignore_frac=0.0)
    pred["semantic"][0, :, 1, 2] = float("nan")
    pred["semantic"][0, 2, 3, 0] = float("inf")
    pred["semantic"][0, 1, 0, 4] = float("-inf")  # on the last column: both taps there
    tgt["semantic"][0, 0:12, 4:16] = 255
    tgt["semantic"][0, 10:16, 0:6] = 255
    results = []
    for backend in ("triton", "reference"):
        p = leaf_copies(pred)
        out = fastmtl.multitask_loss(p, tgt, backend=backend, upsample="bilinear",
                                     align_corners=align_corners)
        out.total.backward()
        results.append((out.total.detach(), p["semantic"].grad))
    (total, grad), (expected_total, expected_grad) = results
    torch.testing.assert_close(total, expected_total, equal_nan=True)
    assert torch.equal(grad.isnan(), expected_grad.isnan()) and grad.isnan().any()
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("C", [4, 40])
def test_a_minus_inf_logit_spreads_as_in_f_interpolate(C):
    """A class's -inf logit in an interior cell: the target rows between it and the row
    above take it as their bottom tap, where wy0 top + wy1 bot is -inf (the class adds
    nothing) for 0 < wy1 < 1, and NaN only where F.interpolate multiplies it by a zero
    weight. (A one-FFMA form, bot - wy0 (bot - top), gives -inf + inf = NaN there.)"""
    pred, tgt = low_res_inputs(B=1, C=C, h=4, w=5, H=16, W=20, tasks=("semantic",), seed=33,
                               ignore_frac=0.0)
    pred["semantic"][0, 3, 2, 1] = float("-inf")
    results = []
    for backend in ("triton", "reference"):
        p = leaf_copies(pred)
        out = fastmtl.multitask_loss(p, tgt, backend=backend, upsample="bilinear",
                                     check_labels=False)
        out.total.backward()
        results.append(p["semantic"].grad)
    grad, expected = results
    assert torch.equal(grad.isnan(), expected.isnan()), (grad.isnan().sum(), expected.isnan().sum())
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-7, equal_nan=True)


def test_empty_batch_gives_empty_gradients():
    pred, tgt = low_res_inputs(B=0, C=3, h=2, w=3, H=4, W=6)
    for backend in ("triton", "reference"):
        p = leaf_copies(pred)
        log_vars = LOG_VARS.clone().requires_grad_(True)
        out = fastmtl.multitask_loss(p, tgt, log_vars, backend=backend, upsample="bilinear")
        out.total.backward()
        assert out.total.item() == 0.0 and not log_vars.grad.any()
        assert all(v.grad is not None and v.grad.shape == v.shape for v in p.values()), backend


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("h,w", [(0, 3), (2, 0)])
def test_zero_size_heads_raise(backend, h, w):
    pred, _ = low_res_inputs(B=1, C=3, h=h, w=w, H=4, W=6)
    _, tgt = low_res_inputs(B=1, C=3, h=2, w=3, H=4, W=6)
    with pytest.raises(ValueError, match=rf"predictions\['semantic'\] is {h} x {w}, "
                                         r"targets\['semantic'\] is 4 x 6"):
        fastmtl.multitask_loss(pred, tgt, backend=backend, upsample="bilinear")


def test_backward_twice_through_a_retained_graph():
    pred, tgt = low_res_inputs(B=1, C=4, h=3, w=3, H=8, W=9, seed=33)
    grads = []
    for times in (1, 2):
        p = leaf_copies(pred)
        out = fastmtl.multitask_loss(p, tgt, LOG_VARS, backend="triton", upsample="bilinear")
        for _ in range(times):
            out.total.backward(retain_graph=True)
        grads.append({k: v.grad for k, v in p.items()})
    for k in pred:
        torch.testing.assert_close(grads[1][k], 2 * grads[0][k])


# ---------------------------------------------- the launch plan at full size (meta tensors)


def _plan(B, C, h, w, H, W, dtype):
    """(launches, outputs, inputs) of one forward at full size, on the meta device."""
    meta = dict(device="meta")
    pred = {"semantic": torch.empty(B, C, h, w, dtype=dtype, **meta),
            "instance": torch.empty(B, 2, h, w, dtype=dtype, **meta),
            "depth": torch.empty(B, 1, h, w, dtype=dtype, **meta)}
    tgt = {"semantic": torch.empty(B, H, W, dtype=torch.int64, **meta),
           "instance": torch.empty(B, 2, H, W, **meta),
           "instance_mask": torch.empty(B, H, W, dtype=torch.bool, **meta),
           "depth": torch.empty(B, 1, H, W, **meta)}
    calls = []
    inputs = [pred["semantic"], tgt["semantic"], None, pred["instance"], tgt["instance"],
              tgt["instance_mask"], pred["depth"], tgt["depth"]]
    outs = upsample._forward(launch_recorder(calls), *inputs, torch.zeros(3, **meta), [0, 1, 2],
                             [1.0, 0.5, 0.5], [0.5, 0.5, 0.5], True, 255, False, True)
    return calls, outs, [v for v in inputs if v is not None]


@pytest.mark.parametrize("C,size", [(19, (128, 256, 1024, 2048)), (150, (64, 128, 512, 1024))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extra_memory_is_within_ten_percent_of_the_gradients(dtype, C, size):
    """8 x 1024 x 2048 targets, heads at 1/8, C = 19 (and 8 x 512 x 1024, C = 150: classes
    in chunks, row a + 1's share carried in the gradient itself): besides the gradients
    (written once, in the prediction dtype) the forward allocates at most 10% of their size."""
    calls, outs, inputs = _plan(8, C, *size, dtype)
    gradients = outs[3:6]
    assert all(g.dtype == dtype for g in gradients)
    seen = {id(v): v for _, args, _ in calls for v in args if isinstance(v, torch.Tensor)}
    seen.update({id(v): v for v in outs})
    known = {id(v) for v in inputs + list(gradients)}
    extra = sum(v.numel() * v.element_size() for k, v in seen.items() if k not in known)
    gradient_bytes = sum(g.numel() * g.element_size() for g in gradients)
    assert extra <= gradient_bytes / 10, (extra, gradient_bytes)


def test_partial_sums_are_reduced_in_levels_of_at_most_a_block():
    """B = 64 at 1024 x 2048 (tens of thousands of programs): each reduction program and
    the final one walk at most REDUCE_BLOCK partials per row."""
    calls, _, _ = _plan(64, 19, 128, 256, 1024, 2048, torch.float32)
    (reduce_args,) = [args for kernel, args, _ in calls
                      if kernel is upsample.R.reduce_partials_kernel]
    n_parts, n_sums = reduce_args[2], reduce_args[7]
    assert n_parts > 4 * upsample.REDUCE_BLOCK
    assert n_sums == -(-n_parts // upsample.REDUCE_BLOCK) <= upsample.REDUCE_BLOCK
    (final_args,) = [args for kernel, args, _ in calls
                     if kernel is upsample.R.upsample_finalize_kernel]
    assert final_args[2] == n_sums


# ---------------------------------------- offsets past 2**31 elements (sparse files, subprocess)


@pytest.mark.parametrize("far", ["image", "channel"])
def test_offsets_past_2_31_elements(tmp_path, far):
    """Views of sparse files (no memory is allocated for the gaps) in which an offset passes
    2**31 elements: the third image's start (a 64-bit pointer; the offsets within an image
    stay 32-bit) or the logits' third channel within one image (every offset 64-bit). A
    wrapped 32-bit offset would read elsewhere."""
    env = dict(os.environ, TRITON_INTERPRET="1", TMPDIR=str(tmp_path))
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "tests"),
                                         str(Path(__file__).parent)])
    proc = subprocess.run([sys.executable, __file__, "offsets", far], env=env,
                          capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["total_error"] <= 1e-5 and report["gradient_error"] <= 1e-6, report
    assert report["offsets_32_bit_within_an_image"] == (far == "image"), report


@pytest.mark.parametrize("shape, strides, fits", [
    ((2, 150, 64, 128), None, True),                    # contiguous
    ((2, 150, 64, 128), "channels_last", True),
    ((3, 3, 2, 3), (2 ** 40, 6, 3, 1), True),           # only the batch stride is large
    ((1, 2, 1, 1), (2 ** 31, 2 ** 31 - 1, 1, 1), True),  # last offset 2**31 - 1
    ((1, 2, 1, 1), (2 ** 32, 2 ** 31, 1, 1), False),     # last offset 2**31
    ((1, 3, 2, 3), (3 * (2 ** 30 + 2 ** 20), 2 ** 30 + 2 ** 20, 3, 1), False),
    ((1, 0, 4, 4), (16, 16, 4, 1), True),               # no channel at all
])
def test_32_bit_offsets_only_where_every_offset_within_an_image_is_below_2_31(shape, strides,
                                                                               fits):
    """``within_int32_per_image``: the largest offset within one image, sum (n - 1) x stride
    over the dimensions after the batch, must be below 2**31 (meta tensors: no memory)."""
    from fastmtl.ops.common import within_int32_per_image

    if strides is None:
        t = torch.empty(shape, device="meta")
    elif strides == "channels_last":
        t = torch.empty(shape, device="meta").contiguous(memory_format=torch.channels_last)
    else:
        t = torch.empty(0, device="meta").as_strided(shape, strides)
    largest = sum(max(n - 1, 0) * s for n, s in zip(t.shape[1:], t.stride()[1:]))
    assert (largest < 2 ** 31) == fits
    assert within_int32_per_image(t) == fits


def _offsets_main(far):
    from fastmtl.ops.common import within_int32_per_image

    big = 2 ** 30 + 2 ** 20  # an int32 stride: its second multiple passes 2**31
    pred, tgt = low_res_inputs(B=3 if far == "image" else 1, C=3, h=2, w=3, H=5, W=7,
                               tasks=("semantic",), seed=34, target_dtype=torch.uint8)

    def sparse_view(value, dim):
        path = Path(os.environ["TMPDIR"]) / f"sparse-{value.dtype}.bin".replace("torch.", "")
        strides = list(value.stride())
        strides[dim] = big
        if dim == 1:  # channels far apart: the image's stride past them
            strides[0] = 3 * big
        count = 1 + sum((n - 1) * s for n, s in zip(value.shape, strides))
        with open(path, "wb") as f:
            f.truncate(count * value.element_size())
        storage = torch.from_file(str(path), shared=True, size=count, dtype=value.dtype)
        view = storage.as_strided(value.shape, strides)
        view.copy_(value)
        return view

    logits = sparse_view(pred["semantic"], 0 if far == "image" else 1)
    far = {"semantic": logits.requires_grad_(True)}  # no copy
    far_tgt = {"semantic": sparse_view(tgt["semantic"], 0) if len(tgt["semantic"]) > 1
               else tgt["semantic"]}
    results = []
    for p, t, backend in ((far, far_tgt, "triton"), (leaf_copies(pred), tgt, "reference")):
        out = fastmtl.multitask_loss(p, t, backend=backend, upsample="bilinear",
                                     class_weight=random_class_weight(3))
        out.total.backward()
        results.append((out.total.detach(), p["semantic"].grad))
    (total, grad), (expected_total, expected_grad) = results
    print(json.dumps(dict(total_error=float((total - expected_total).abs()),
                          gradient_error=float((grad - expected_grad).abs().max()),
                          offsets_32_bit_within_an_image=within_int32_per_image(logits))))


if __name__ == "__main__":
    {"offsets": _offsets_main}[sys.argv[1]](*sys.argv[2:])


@pytest.mark.parametrize("class_chunk", [16, None])
def test_16_bit_gradients_rounded_once_at_large_row_factors(class_chunk):
    # At 64 target rows per head row a run takes several groups of rows (chunk_rows); the
    # classes in chunks then keep the semantic gradient in float32 until backward, so that
    # it is rounded to float16 once, as the warps' layout does: within an ulp of the
    # float64 result (fp16: bfloat16's rounding under the interpreter is a truncation).
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 33, 2, 4, generator=g).half()
    t = torch.randint(0, 33, (1, 128, 4), generator=g)
    got, want = (leaf_copies({"semantic": x}) for _ in range(2))
    with use(class_chunk=class_chunk):
        fastmtl.multitask_loss(got, {"semantic": t}, backend="triton", upsample="bilinear",
                               align_corners=True).total.backward()
    wide = {"semantic": want["semantic"].double().detach().requires_grad_(True)}
    fastmtl.multitask_loss(wide, {"semantic": t}, backend="reference", upsample="bilinear",
                           align_corners=True).total.backward()
    r = wide["semantic"].grad
    ulp = torch.exp2(torch.floor(torch.log2(r.abs().clamp_min(2.0 ** -14))) - 10)
    assert ((got["semantic"].grad.double() - r).abs() / ulp).max() <= 1.0
