"""The loss on low-resolution predictions with bilinear upsampling fused into the kernel.

``multitask_loss(..., upsample="bilinear", backend="triton")`` (on CPU through the
Triton interpreter) against ``F.interpolate`` of the predictions followed by the
loss written with F.cross_entropy / F.l1_loss (tests/oracle.py),
differentiated by autograd: total, per-task losses and the gradients of the
low-resolution predictions and log-variances. Shapes are small: the interpreter
runs one program at a time. The cases the kernel's work split makes risky are in
test_upsample_splits.py, the compiled kernels in test_upsample_compile.py.
"""
import pytest
import torch
import torch.nn.functional as F

import fastmtl
from fastmtl.kernels import upsample_loss, upsample_regressions
from fastmtl.ops import upsample as ops_upsample
from fastmtl.ops.common import interpreted
from helpers import LateLabelChecks, launch_recorder, leaf_copies, low_res_inputs, random_class_weight
from oracle import check_upsampled, oracle, run_both_upsampled

ALL = ("semantic", "instance", "depth")
LOG_VARS = torch.tensor([0.3, -0.4, 0.8])


# ------------------------------------------------------------------ bilinear weights


@pytest.mark.parametrize("align_corners", [False, True])
def test_axis_tables_are_pytorch_bilinear_weights(align_corners):
    """Per output index, the two taps and weights equal those of F.interpolate (read off by
    interpolating the identity; on the last cell both taps are that cell); each input index
    owns the outputs whose first tap it is."""
    U = ops_upsample.T
    pairs = [(1, 1), (1, 7), (2, 3), (3, 5), (4, 4), (5, 17), (7, 23), (4, 32), (16, 128),
             (3, 24), (13, 50), (32, 33), (9, 64)]
    for n_in, n_out in pairs:
        index = torch.empty(n_out + 1, dtype=torch.int32)
        lam = torch.empty(n_out + 1)
        start = torch.empty(n_in + 3, dtype=torch.int32)
        U.axis_table_kernel[(2,)](index, lam, start, n_in, n_out, 1, 1,
                                  n_out.bit_length() + 1, 2, ALIGN_CORNERS=align_corners,
                                  ACC_FP64=False, BLOCK=16)
        i0, lam1 = index[:n_out].long(), lam[:n_out]
        i1 = (i0 + 1).clamp(max=n_in - 1)
        mine = torch.zeros(n_in, n_out)
        o = torch.arange(n_out)
        mine.index_put_((i0, o), 1 - lam1, accumulate=True)
        mine.index_put_((i1, o), lam1, accumulate=True)
        eye = torch.eye(n_in).reshape(1, n_in, 1, n_in)
        theirs = F.interpolate(eye, size=(1, n_out), mode="bilinear",
                               align_corners=align_corners)[0, :, 0, :]
        torch.testing.assert_close(mine, theirs, rtol=0, atol=2e-6 * n_in,
                                   msg=f"{n_in} -> {n_out}")
        owners = torch.searchsorted(i0.contiguous(), torch.arange(n_in + 1, dtype=torch.long))
        assert start[:n_in + 1].tolist() == owners.tolist(), (n_in, n_out)


# --------------------------------------------------------- the loss against PyTorch


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("scale,h,w", [(1, 3, 5), (2, 3, 4), (4, 2, 3), (8, 2, 2)])
def test_integer_scale_factors(scale, h, w, align_corners):
    pred, tgt = low_res_inputs(B=2 if scale < 8 else 1, C=19, h=h, w=w, H=scale * h,
                               W=scale * w, seed=scale)
    check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS, class_weight=random_class_weight(19))


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("h,w,H,W", [(3, 5, 17, 23), (4, 3, 9, 7), (1, 3, 5, 10), (5, 1, 6, 9)])
def test_odd_and_non_integer_output_sizes(h, w, H, W, align_corners):
    pred, tgt = low_res_inputs(B=1, C=5, h=h, w=w, H=H, W=W, seed=H)
    check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_dtypes(dtype):
    pred, tgt = low_res_inputs(B=1, C=7, h=3, w=3, H=10, W=12, dtype=dtype, seed=3)
    log_vars = LOG_VARS.double() if dtype == torch.float64 else LOG_VARS
    kernel = check_upsampled(pred, tgt, dtype, log_vars=log_vars, class_weight=random_class_weight(7))
    assert kernel[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


@pytest.mark.parametrize("tasks", [("semantic",), ("instance",), ("depth",),
                                   ("semantic", "instance"), ("semantic", "depth"),
                                   ("instance", "depth")])
def test_task_subsets(tasks):
    pred, tgt = low_res_inputs(B=2, C=4, h=2, w=3, H=7, W=11, tasks=tasks, seed=len(tasks))
    check_upsampled(pred, tgt, align_corners=len(tasks) == 2, log_vars=LOG_VARS[:len(tasks)])


@pytest.mark.parametrize("target_dtype,ignore_index", [(torch.uint8, 255), (torch.int32, -1)])
def test_ignored_labels_class_weights_and_label_dtypes(target_dtype, ignore_index):
    pred, tgt = low_res_inputs(B=2, C=6, h=3, w=2, H=12, W=8, seed=5, target_dtype=target_dtype,
                               ignore_frac=0.4, ignore_index=ignore_index)
    check_upsampled(pred, tgt, weights=[0.2, 1.5, 0.7], class_weight=random_class_weight(6),
          ignore_index=ignore_index)


def test_strided_inputs():
    pred, tgt = low_res_inputs(B=2, C=5, h=3, w=4, H=9, W=13, seed=7)
    pred = {k: v.contiguous(memory_format=torch.channels_last) for k, v in pred.items()}
    tgt = {k: v.transpose(-1, -2).contiguous().transpose(-1, -2) for k, v in tgt.items()}
    tgt["depth"] = tgt["depth"][:, 0]  # (B, H, W) depth target
    check_upsampled(pred, tgt, align_corners=True, log_vars=LOG_VARS)


def test_gradient_through_task_losses_and_zero_weight():
    pred, tgt = low_res_inputs(B=1, C=5, h=3, w=3, H=8, W=9, seed=8)
    step = lambda out: (out[0] + 2 * out[1]["semantic"] - out[1]["depth"]).backward()  # noqa: E731
    check_upsampled(pred, tgt, weights=[0.0, 1.0, 0.5], backward=step)


def test_gradient_through_task_losses_alone():
    # No gradient reaches total: the log-variances get none (as from the oracle), and the
    # predictions get each task loss's own, not 0 * coef_k of an absent one.
    pred, tgt = low_res_inputs(B=1, C=5, h=3, w=3, H=8, W=9, seed=10)
    step = lambda out: (out[1]["semantic"] - 2 * out[1]["depth"]).backward()  # noqa: E731
    kernel = check_upsampled(pred, tgt, log_vars=torch.tensor([0.3, -0.4, -200.0]),
                             backward=step)
    assert kernel[2]["log_vars"] is None
    assert not kernel[2]["instance"].any() and kernel[2]["semantic"].abs().sum() > 0


def test_empty_tasks_add_nothing():
    pred, tgt = low_res_inputs(B=1, C=3, h=2, w=2, H=5, W=6, seed=9)
    tgt["semantic"].fill_(255)
    tgt["instance_mask"].fill_(False)
    tgt["depth"].fill_(0.0)
    p = leaf_copies(pred)
    lv = LOG_VARS.clone().requires_grad_(True)
    out = fastmtl.multitask_loss(p, tgt, lv, backend="triton", upsample="bilinear")
    out.total.backward()
    assert out.total.item() == 0.0 and all(v.item() == 0.0 for v in out.losses.values())
    assert all(not v.grad.any() for v in p.values()) and not lv.grad.any()


def test_gradcheck_fp64():
    pred, tgt = low_res_inputs(B=1, C=3, h=2, w=2, H=5, W=7, dtype=torch.float64, seed=10)
    names = list(pred)

    def total(*args):
        *preds, log_vars = args
        return fastmtl.multitask_loss(dict(zip(names, preds)), tgt, log_vars, backend="triton",
                                      upsample="bilinear", class_weight=random_class_weight(3).double(),
                                      check_labels=False).total

    inputs = [*leaf_copies(pred).values(), LOG_VARS.double().requires_grad_(True)]
    assert torch.autograd.gradcheck(total, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_deterministic():
    pred, tgt = low_res_inputs(B=1, C=5, h=3, w=2, H=11, W=7, seed=11)
    (a, _), (b, _) = (run_both_upsampled(pred, tgt, log_vars=LOG_VARS) for _ in range(2))
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_without_grad_no_gradient_buffers():
    pred, tgt = low_res_inputs(B=1, C=4, h=2, w=3, H=6, W=9, seed=12)
    with torch.no_grad():
        out = fastmtl.multitask_loss(pred, tgt, LOG_VARS, backend="triton", upsample="bilinear")
    expected = fastmtl.multitask_loss(pred, tgt, LOG_VARS, backend="reference",
                                      upsample="bilinear")
    torch.testing.assert_close(out.total, expected.total, rtol=2e-5, atol=1e-6)
    calls = []
    args = [pred["semantic"], tgt["semantic"], None, pred["instance"], tgt["instance"],
            tgt["instance_mask"], pred["depth"], tgt["depth"]]
    outs = ops_upsample._forward(launch_recorder(calls), *args, None, [0, 1, 2], [1.0, 0.5, 0.5],
                                 [0.5, 0.5, 0.5], False, 255, False, False)
    assert all(outs[i].numel() == 0 for i in (3, 4, 5))
    assert [kw["WRITE_GRAD"] for kernel, _, kw in calls
            if kernel in (upsample_loss.upsample_loss_kernel,
                          upsample_regressions.upsample_regressions_kernel)] == [False, False]


def test_regression_targets_requiring_grad_get_l1_loss_gradient():
    """A target's gradient is full-resolution (minus that of the upsampled prediction, as
    F.l1_loss gives it): the call scores F.interpolate's predictions with the fused op."""
    pred, tgt = low_res_inputs(B=2, C=4, h=2, w=3, H=5, W=7, seed=14)
    tgt["depth"] = tgt["depth"][:, 0]  # a (B,H,W) depth target
    results = []
    for backend in (None, "reference", "triton"):
        p = leaf_copies(pred)
        t = {k: v.clone().requires_grad_(k in ("instance", "depth")) for k, v in tgt.items()}
        if backend is None:  # F.interpolate, F.cross_entropy and F.l1_loss
            up = {k: F.interpolate(v, size=(5, 7), mode="bilinear") for k, v in p.items()}
            total, _ = oracle(up, {**t, "depth": t["depth"][:, None]}, LOG_VARS)
        else:
            total = fastmtl.multitask_loss(p, t, LOG_VARS, backend=backend,
                                           upsample="bilinear").total
        total.backward()
        results.append([t["instance"].grad, t["depth"].grad] + [v.grad for v in p.values()])
    expected, *got = results
    assert expected[0].abs().sum() > 0 and expected[1].abs().sum() > 0
    for grads in got:
        for g, r in zip(grads, expected):
            assert g.shape == r.shape and g.dtype == r.dtype
            torch.testing.assert_close(g, r, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("bad_value,C", [(7, 5), (-2, 5), (40, 40)])
def test_bad_label(bad_value, C):
    pred, tgt = low_res_inputs(B=2, C=C, h=2, w=2, H=4, W=6, seed=13, target_dtype=torch.int32)
    tgt["semantic"][1, 3, 4] = bad_value
    tgt["semantic"][1, 3, 5] = bad_value + 1  # a later one
    with pytest.raises(ValueError, match=rf"label {bad_value} outside .* at "
                                         rf"targets\['semantic'\]\[1, 3, 4\]$"):
        fastmtl.multitask_loss(pred, tgt, backend="triton", upsample="bilinear")
    check_upsampled(pred, tgt, check_labels=False)  # then it counts as ignored


def test_bad_label_on_cuda_is_raised_by_the_next_call(monkeypatch):
    """The CUDA path of the label check_upsampled (read back one call late, as the fused op's),
    forced on CPU tensors."""
    from fastmtl.ops import label_check

    LateLabelChecks(monkeypatch)
    pred, tgt = low_res_inputs(B=2, C=5, h=2, w=3, H=5, W=7, seed=14)
    tgt["semantic"][0, 4, 2] = 9
    out = fastmtl.multitask_loss(pred, tgt, backend="triton", upsample="bilinear")
    with pytest.raises(ValueError, match=r"label 9 .* at targets\['semantic'\]\[0, 4, 2\] "
                                         r"\(in the targets of an earlier call"):
        fastmtl.multitask_loss(*low_res_inputs(B=1, C=5, h=2, w=3, H=5, W=7, seed=15),
                               backend="triton", upsample="bilinear")
    tgt["semantic"][0, 4, 2] = 255  # the call that saw it treated it as ignored
    expected = fastmtl.multitask_loss(pred, tgt, backend="reference", upsample="bilinear")
    torch.testing.assert_close(out.total, expected.total, rtol=2e-5, atol=1e-6)
    label_check.raise_pending_label_errors()  # reported once


@pytest.mark.parametrize("C", [19, 40], ids=["classes in registers", "classes in chunks"])
@pytest.mark.parametrize("h,w,H,W", [(4, 3, 4, 10), (3, 5, 11, 5), (3, 4, 9, 10)],
                         ids=["rows kept", "columns kept", "both scaled"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_non_finite_predictions_spread_as_in_pytorch(C, h, w, H, W, align_corners):
    """PyTorch's second tap on an axis the upsampling keeps is the first one (both weights on
    one cell): a NaN or infinity there reaches the pixels and cells it reaches in
    F.interpolate and no others. Elsewhere the second tap is the next cell, with weight 0
    where the pixel sits on the first one exactly."""
    pred, tgt = low_res_inputs(B=1, C=C, h=h, w=w, H=H, W=W, seed=C + H + W, ignore_frac=0.0)
    nan, inf = float("nan"), float("inf")
    pred["semantic"][0, 3, 1, 1] = nan
    pred["semantic"][0, :, 2, w - 1] = -inf
    pred["instance"][0, 1, 1, 2] = nan
    pred["depth"][0, 0, 0, 1] = nan
    (total, losses, grads), (r_total, r_losses, r_grads) = run_both_upsampled(
        pred, tgt, align_corners=align_corners, log_vars=LOG_VARS)
    for task in ("semantic", "instance", "depth"):
        assert losses[task].isnan() and r_losses[task].isnan()  # some pixel sees each value
        g, r = grads[task], r_grads[task]
        assert torch.equal(g.isnan(), r.isnan()), task
        assert torch.isfinite(r).any(), task
        torch.testing.assert_close(g[~r.isnan()], r[~r.isnan()], rtol=2e-5, atol=1e-6,
                                   msg=task)


# ----------------------------------------- many classes (C > 32): classes in chunks


@pytest.mark.parametrize("C,h,w,H,W,align_corners", [
    (33, 3, 4, 13, 17, False),   # one class past the full chunks
    (48, 2, 3, 16, 24, True),    # chunks divide C: no partial last chunk
    (40, 2, 3, 41, 9, True),     # runs of about 40 rows: several groups of rows per run
    (150, 2, 2, 16, 16, False),  # ADE20k's classes, a partial last chunk
])
def test_many_classes_in_chunks(class_chunks, C, h, w, H, W, align_corners):
    assert ops_upsample.tiles(2, C, h, w, H, W, align_corners, True).class_chunks == (
        class_chunks is not None)
    pred, tgt = low_res_inputs(B=2, C=C, h=h, w=w, H=H, W=W, seed=C + H,
                               tasks=("semantic", "depth"))
    check_upsampled(pred, tgt, align_corners=align_corners, log_vars=LOG_VARS[:2],
                    class_weight=random_class_weight(C))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_many_classes_dtypes(class_chunks, dtype):
    pred, tgt = low_res_inputs(B=1, C=40, h=3, w=3, H=10, W=12, dtype=dtype, seed=3,
                               tasks=("semantic",))
    log_vars = LOG_VARS[:1].double() if dtype == torch.float64 else LOG_VARS[:1]
    check_upsampled(pred, tgt, dtype, log_vars=log_vars, class_weight=random_class_weight(40))


@pytest.mark.parametrize("target_dtype,ignore_index", [(torch.uint8, 255), (torch.int32, -1)])
def test_many_classes_ignored_labels_and_small_groups(target_dtype, ignore_index):
    """Chunks of 16 classes and groups of 2 rows (a run in several groups) at a factor of 4."""
    from fastmtl.ops.upsample_tiles import use

    pred, tgt = low_res_inputs(B=2, C=37, h=3, w=2, H=12, W=8, seed=5, target_dtype=target_dtype,
                               ignore_frac=0.4, ignore_index=ignore_index, tasks=("semantic",))
    with use(class_chunk=16, chunk_rows=2):
        assert ops_upsample.tiles(2, 37, 3, 2, 12, 8, False, True).rows == 2
        check_upsampled(pred, tgt, class_weight=random_class_weight(37),
                        ignore_index=ignore_index)


def test_many_classes_gradcheck_fp64_and_deterministic(class_chunks):
    pred, tgt = low_res_inputs(B=1, C=34, h=2, w=2, H=5, W=7, dtype=torch.float64, seed=10,
                               tasks=("semantic",))

    def total(x, log_vars):
        return fastmtl.multitask_loss({"semantic": x}, tgt, log_vars, backend="triton",
                                      upsample="bilinear", check_labels=False,
                                      class_weight=random_class_weight(34).double()).total

    inputs = [pred["semantic"].clone().requires_grad_(True),
              LOG_VARS[:1].double().requires_grad_(True)]
    assert torch.autograd.gradcheck(total, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)
    pred, tgt = low_res_inputs(B=1, C=40, h=3, w=2, H=11, W=7, seed=11, tasks=("semantic",))
    (a, _), (b, _) = (run_both_upsampled(pred, tgt, log_vars=LOG_VARS[:1]) for _ in range(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2]["semantic"], b[2]["semantic"])


def test_many_classes_without_grad(class_chunks):
    pred, tgt = low_res_inputs(B=1, C=40, h=2, w=3, H=6, W=9, seed=12, tasks=("semantic",))
    with torch.no_grad():
        out = fastmtl.multitask_loss(pred, tgt, backend="triton", upsample="bilinear")
    expected = fastmtl.multitask_loss(pred, tgt, backend="reference", upsample="bilinear")
    torch.testing.assert_close(out.total, expected.total, rtol=2e-5, atol=1e-6)


# ------------------------------------------------- API, reference backend, validation


def test_reference_backend_and_module():
    pred, tgt = low_res_inputs(B=2, C=5, h=3, w=4, H=10, W=15, seed=14)
    for align_corners in (False, True):
        out = fastmtl.multitask_loss(pred, tgt, LOG_VARS, backend="reference",
                                     upsample="bilinear", align_corners=align_corners)
        up = {k: F.interpolate(v, size=(10, 15), mode="bilinear", align_corners=align_corners)
              for k, v in pred.items()}
        total, _ = oracle(up, tgt, LOG_VARS)
        torch.testing.assert_close(out.total, total, rtol=1e-5, atol=1e-6)
    criterion = fastmtl.MultiTaskLoss(backend="reference", upsample="bilinear", align_corners=True)
    out = criterion(pred, tgt)
    expected = fastmtl.multitask_loss(pred, tgt, torch.zeros(3), backend="reference",
                                      upsample="bilinear", align_corners=True)
    torch.testing.assert_close(out.total, expected.total)


def test_validation():
    pred, tgt = low_res_inputs(B=1, C=3, h=3, w=4, H=6, W=8, seed=15)
    with pytest.raises(ValueError, match="unknown upsample mode 'nearest'"):
        fastmtl.multitask_loss(pred, tgt, upsample="nearest")
    with pytest.raises(ValueError, match="expected"):  # low resolution needs upsample=
        fastmtl.multitask_loss(pred, tgt)
    big, _ = low_res_inputs(B=1, C=3, h=7, w=8, H=6, W=8, seed=15)
    with pytest.raises(ValueError, match="no larger than the targets"):
        fastmtl.multitask_loss(big, tgt, upsample="bilinear")
    small = dict(tgt, depth=tgt["depth"][..., :7])
    with pytest.raises(ValueError, match=r"targets\['depth'\] has shape"):
        fastmtl.multitask_loss(pred, small, upsample="bilinear")


# ------------------------------------------------ on a GPU (TRITON_INTERPRET=0 pytest -m cuda)


def on_gpu(test):
    for mark in reversed([
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            pytest.mark.skipif(interpreted(), reason="TRITON_INTERPRET=1 is set: "
                               "run with TRITON_INTERPRET=0 to test the compiled kernels")]):
        test = mark(test)
    return test


@on_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("align_corners", [False, True])
def test_matches_pytorch_on_gpu(dtype, align_corners):
    pred, tgt = low_res_inputs(B=2, C=19, h=33, w=64, H=257, W=512, dtype=dtype, seed=20)
    pred = {k: v.cuda() for k, v in pred.items()}
    tgt = {k: v.cuda() for k, v in tgt.items()}
    check_upsampled(pred, tgt, dtype, align_corners=align_corners, log_vars=LOG_VARS.cuda(),
          class_weight=random_class_weight(19).cuda())


@on_gpu
def test_deterministic_and_small_on_gpu():
    pred, tgt = low_res_inputs(B=4, C=19, h=64, w=128, H=512, W=1024, seed=21)
    pred = {k: v.cuda() for k, v in pred.items()}
    tgt = {k: v.cuda() for k, v in tgt.items()}
    runs = []
    for _ in range(2):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        p = leaf_copies(pred)
        out = fastmtl.multitask_loss(p, tgt, LOG_VARS.cuda(), upsample="bilinear",
                                     check_labels=False)
        out.total.backward()
        torch.cuda.synchronize()
        runs.append((out.total, {k: v.grad for k, v in p.items()},
                     torch.cuda.max_memory_allocated() - before))
    (a, ga, peak), (b, gb, _) = runs
    assert torch.equal(a, b) and all(torch.equal(ga[k], gb[k]) for k in ga)
    # Beyond the inputs (the leaf copies): the gradients and at most 10% more (partial
    # sums, tables); nothing of full-resolution size.
    gradients = sum(g.numel() * g.element_size() for g in ga.values())
    assert peak <= 2 * gradients + gradients // 10


@on_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_launch_is_bitwise_the_two_launches_on_gpu(dtype):
    """``Config(one_launch=True)``: the semantic and regressions' programs in one grid under
    the semantic launch's register cap give exactly the two launches' results (an eager
    CUDA call launches the regressions in one column per thread, as the joint grid does)."""
    from fastmtl.ops.upsample_tiles import use

    pred, tgt = low_res_inputs(B=2, C=19, h=64, w=128, H=512, W=1024, dtype=dtype, seed=23)
    pred = {k: v.cuda() for k, v in pred.items()}
    tgt = {k: v.cuda() for k, v in tgt.items()}
    runs = []
    for one_launch in (False, True):
        with use(one_launch=one_launch):
            p = leaf_copies(pred)
            lv = LOG_VARS.clone().cuda().requires_grad_(True)
            out = fastmtl.multitask_loss(p, tgt, lv, upsample="bilinear",
                                         class_weight=random_class_weight(19).cuda())
            out.total.backward()
            runs.append([out.total] + [p[k].grad for k in sorted(p)] + [lv.grad])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    with use(one_launch=True):
        check_upsampled(pred, tgt, dtype, log_vars=LOG_VARS.cuda(),
                        class_weight=random_class_weight(19).cuda())


@on_gpu
def test_bad_label_written_to_pinned_memory_and_raised_by_a_later_call_on_gpu():
    from fastmtl.ops import label_check

    label_check.raise_pending_label_errors()
    pred, tgt = low_res_inputs(B=2, C=19, h=9, w=17, H=65, W=129, seed=22)
    pred = {k: v.cuda() for k, v in pred.items()}
    tgt = {k: v.cuda() for k, v in tgt.items()}
    bad = dict(tgt, semantic=tgt["semantic"].clone())
    bad["semantic"][1, 60, 100] = 19
    fastmtl.multitask_loss(pred, tgt, upsample="bilinear")  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:  # good labels then bad ones: neither call nor the first one's read waits
        fastmtl.multitask_loss(pred, tgt, upsample="bilinear")
        fastmtl.multitask_loss(pred, bad, upsample="bilinear")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    with pytest.raises(ValueError, match=r"label 19 .* at targets\['semantic'\]\[1, 60, 100\]"):
        fastmtl.multitask_loss(pred, tgt, upsample="bilinear")
    label_check.raise_pending_label_errors()
