"""Both backends against PyTorch where the loss contract meets PyTorch's own edge cases.

Non-finite logits at ignored pixels, targets and class weights that require
grad, and predictions of mixed precisions: what F.cross_entropy / F.l1_loss do
is the expected behaviour, and the reference and triton backends must both do it.
"""
import pytest
import torch

import fastmtl
from fastmtl.ops import fused_layout
from helpers import leaf_copies, make_inputs
from oracle import assert_match, oracle, run_both, run_both_upsampled

BACKENDS = ("reference", "triton")
TASKS = ("semantic", "instance", "depth")


def _grads(backend, pred, tgt, **kwargs):
    p = leaf_copies(pred)
    out = fastmtl.multitask_loss(p, tgt, backend=backend, **kwargs)
    out.total.backward()
    return out, {k: v.grad for k, v in p.items()}


# C = 5: the planes in registers; C = 150: one pixel per thread, the target class last
@pytest.mark.parametrize("C", [5, 150])
def test_ignored_pixels_with_non_finite_logits_get_pytorchs_gradient(C, problems):
    # F.cross_entropy's log-softmax backward gives 0 - exp(log_softmax) * 0 at an
    # ignored pixel: NaN for a row holding NaN or +inf, 0 for a row with a -inf.
    pred, tgt = make_inputs(B=2, C=C, H=3, W=4, ignore_frac=0.0, seed=30)
    x, t = pred["semantic"], tgt["semantic"]
    t[0, 1, 1] = t[0, 2, 3] = t[1, 0, 0] = 255
    x[0, 3, 1, 1] = float("nan")
    x[0, 0, 2, 3] = float("inf")
    x[1, 4, 0, 0] = float("-inf")
    p = leaf_copies(pred)
    total, _ = oracle(p, tgt)
    total.backward()
    expected = p["semantic"].grad
    assert expected[0, :, 1, 1].isnan().all() and expected[0, :, 2, 3].isnan().all()
    assert torch.equal(expected[1, :, 0, 0], torch.zeros(C))
    for backend in BACKENDS:
        out, grads = _grads(backend, pred, tgt)
        assert torch.isfinite(out.total), backend
        torch.testing.assert_close(grads["semantic"], expected, rtol=2e-5, atol=1e-6,
                                   equal_nan=True, msg=backend)
    assert problems and all(p.classes[0] == C and p.vector == (1 if C == 150 else 2)
                            for p in problems)


@pytest.mark.parametrize("C", [5, 150])
def test_valid_pixels_with_non_finite_logits_get_pytorchs_loss_and_gradient(C, problems):
    # A labelled pixel whose row holds NaN or +inf: NaN loss and NaN gradients in its row
    # (whatever its target), as F.cross_entropy; a -inf at a class that is not the target
    # adds nothing.
    pred, tgt = make_inputs(B=1, C=C, H=2, W=4, ignore_frac=0.0, seed=32)
    x, t = pred["semantic"], tgt["semantic"]
    t[0, 0, 0], t[0, 0, 1], t[0, 1, 2] = 1, 2, 3
    x[0, 1, 0, 0] = float("nan")  # at the target
    x[0, 0, 0, 1] = float("inf")  # elsewhere
    x[0, 0, 1, 2] = float("-inf")
    p = leaf_copies(pred)
    total, losses = oracle(p, tgt)
    total.backward()
    for backend in BACKENDS:
        out, grads = _grads(backend, pred, tgt)
        assert out.losses["semantic"].isnan() and losses["semantic"].isnan(), backend
        for (h, w) in ((0, 0), (0, 1)):
            assert grads["semantic"][0, :, h, w].isnan().all(), backend
        torch.testing.assert_close(grads["semantic"][0, :, 1, 2], p["semantic"].grad[0, :, 1, 2],
                                   rtol=2e-5, atol=1e-6, msg=backend)
    assert problems and all(p.classes[0] == C for p in problems)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_non_finite_regression_predictions_get_l1_loss_gradient(dtype):
    # F.l1_loss differentiates |v - target| with torch's sign: 1 at +inf, -1 at -inf and
    # 0 at NaN (not NaN); the loss is NaN or infinite either way.
    pred, tgt = make_inputs(B=1, C=4, H=2, W=4, tasks=("instance", "depth"), mask_frac=1.0,
                            depth_invalid_frac=0.0, dtype=dtype, seed=33)
    nan, inf = float("nan"), float("inf")
    pred["instance"][0, 0, 0, 0], pred["instance"][0, 1, 1, 3] = nan, -inf
    pred["depth"][0, 0, 1, 1], pred["depth"][0, 0, 0, 2] = nan, inf
    for weights in ([1.0, 2.0], [0.0, 2.0]):  # a zero weight times a NaN sign is NaN
        p = leaf_copies(pred)
        total, _ = oracle(p, tgt, weights=weights)
        total.backward()
        assert not any(p[k].grad.isnan().any() for k in p)
        for backend in BACKENDS:
            _, grads = _grads(backend, pred, tgt, weights=weights)
            for k in p:
                torch.testing.assert_close(grads[k], p[k].grad, rtol=2e-5, atol=1e-6,
                                           msg=f"{backend} {k} {weights}")


@pytest.mark.parametrize("shape", [(0, 4, 5), (2, 0, 5), (2, 4, 0)], ids=str)
@pytest.mark.parametrize("C", [3, 40, 150])  # planes in registers, chunks, one read
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_an_empty_batch_or_image_gives_zero_losses_and_zero_size_gradients(shape, C, dtype,
                                                                           problems):
    # No pixel: every task absent, as F.cross_entropy's mean over nothing is not taken.
    # Compiled, the one-read layouts load the logits' first element for lanes off the
    # image, unconditionally: an empty tensor has none, so they are not taken.
    B, H, W = shape
    pred, tgt = make_inputs(B=B or 1, C=C, H=H or 1, W=W or 1, dtype=dtype, seed=34)
    pred = {k: v[:B, ..., :H, :W] for k, v in pred.items()}
    tgt = {k: v[:B, ..., :H, :W] for k, v in tgt.items()}
    for backend in BACKENDS:
        lv = torch.tensor([0.1, 0.2, 0.3], requires_grad=True)
        p = leaf_copies(pred)
        out = fastmtl.multitask_loss(p, tgt, log_vars=lv, backend=backend)
        out.total.backward()
        assert out.total.item() == 0 and all(v.item() == 0 for v in out.losses.values())
        assert all(v.grad.shape == v.shape and v.grad.dtype == v.dtype for v in p.values())
        assert torch.equal(lv.grad, torch.zeros(3)), backend
    assert problems and not any(p.one_read or p.pairs or p.asm_planes for p in problems)


def test_images_past_the_32_bit_pixel_index_raise_before_any_launch():
    # Meta tensors: the shapes of a 2**31-pixel image without its memory.
    from fastmtl.ops.fused_layout import MAX_PIXELS, Problem

    def problem(H, W):
        d = torch.empty(1, 1, H, W, device="meta")
        return Problem(None, None, None, None, None, None, d, d, None, None, d, 255, 32)

    assert problem(1, MAX_PIXELS).HW == MAX_PIXELS
    with pytest.raises(ValueError, match=r"at most 2\*\*31 - 2\*\*16 pixels, got 46341 x 46341"):
        problem(46341, 46341)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_labels_outside_the_classes_get_no_target_gradient(dtype, problems):
    """At C = 150 the target class is stored after the class loops (one pixel per thread in
    fp32, pixel pairs in bf16): a label that is not a class (check off) is ignored there
    too, as by the reference with ignore_index."""
    C, H, W = 150, 4, 6
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, C, H, W, generator=g) * 3).to(dtype)
    t = torch.randint(0, C, (2, H, W), generator=g)
    flat = t.view(-1)
    flat[::5] = torch.tensor([C, 300, -5, 255, C + 1]).repeat(flat[::5].numel())[: flat[::5].numel()]
    ignored = torch.where((t >= 0) & (t < C), t, 255)
    grads = []
    for labels in (t, ignored):
        leaf = x.clone().requires_grad_(True)
        fastmtl.multitask_loss({"semantic": leaf}, {"semantic": labels}, backend="triton",
                               check_labels=False).total.backward()
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1])
    ref_x = x.float().requires_grad_(True)
    torch.nn.functional.cross_entropy(ref_x, ignored, ignore_index=255).backward()
    tol = dict(rtol=1e-2, atol=1e-4) if dtype == torch.bfloat16 else dict(rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(grads[0].float(), ref_x.grad, **tol)
    assert problems and all(p.classes[0] == C and p.pairs == (dtype == torch.bfloat16)
                            for p in problems)


# fp32: one pixel per thread, its exponentials kept, or each pixel split between two threads
# (fused_layout.SPLIT_PLANES); bf16: pixel pairs, their exponentials taken again or kept as
# float16, each pair in one thread or split between two (all one read, one max then one sum
# by default, or a running one over steps of 16 planes, which the splits do not take); fp64:
# the sweeps
@pytest.mark.parametrize("dtype,kept_pairs,split", [
    (torch.float32, False, False), (torch.float32, False, True), (torch.bfloat16, False, False),
    (torch.bfloat16, True, False), (torch.bfloat16, False, True), (torch.bfloat16, True, True),
    (torch.float64, False, False)],
    ids=["float32", "float32-split", "bfloat16", "bfloat16-kept", "bfloat16-split",
         "bfloat16-kept-split", "float64"])
@pytest.mark.parametrize("sum_chunk", [256, 16])
def test_running_sum_over_chunks_of_classes_gets_pytorchs_loss_and_gradient(
        dtype, kept_pairs, split, sum_chunk, problems, monkeypatch):
    """At C = 150 the exponentials are summed chunk by chunk of classes with a running max
    (the one-read layouts with ``fused_layout.SUM_CHUNK`` < C, the sweeps' chunks) or after
    one max (the one-read default), and must give the same: rows whose first
    chunks are all -inf (then finite, or so negative that an empty sum's rescaling would
    overflow, and so would a kept exponential's factor), whose max comes in the last chunk,
    or whose last chunk holds +inf or NaN, and an ignored row of -inf only, against
    F.cross_entropy."""
    monkeypatch.setattr(fused_layout, "SUM_CHUNK", sum_chunk)
    monkeypatch.setattr(fused_layout, "KEPT_PAIRS", kept_pairs)
    monkeypatch.setattr(fused_layout, "SPLIT_PAIRS", split)
    monkeypatch.setattr(fused_layout, "SPLIT_PLANES", split)
    C, H, W = 150, 2, 4
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, C, H, W, generator=g) * 2
    t = torch.randint(40, C, (1, H, W), generator=g)
    inf, nan = float("inf"), float("nan")
    x[0, :16, 0, 0] = -inf                           # a first chunk of -inf
    x[0, :40, 0, 1], x[0, 40:, 0, 1] = -inf, -1000.0  # then -1000: shift -1443 after 0
    x[0, 149, 0, 2] = 60.0                            # the max in the last chunk
    x[0, :, 0, 3] = -inf                              # -inf only, ignored
    t[0, 0, 3] = 255
    x[0, 149, 1, 0], t[0, 1, 0] = 30.0, 149            # the target is the max
    x[0, 145, 1, 1] = inf                             # +inf in the last chunk
    x[0, 140, 1, 2] = nan                             # NaN in the last chunk
    x = x.to(dtype)
    finite_rows = t.clone()
    finite_rows[0, 1, 1:3] = 255  # the rows of +inf and NaN ignored: a finite loss
    tol = {torch.float32: dict(rtol=2e-5, atol=1e-7), torch.bfloat16: dict(rtol=1e-2, atol=1e-4),
           torch.float64: dict(rtol=1e-9, atol=1e-12)}[dtype]
    for labels in (finite_rows, t):
        leaf = x.clone().requires_grad_(True)
        out = fastmtl.multitask_loss({"semantic": leaf}, {"semantic": labels}, backend="triton",
                                     check_labels=False)
        out.total.backward()
        ref_x = x.to(torch.float64 if dtype == torch.float64 else torch.float32).clone()
        ref = torch.nn.functional.cross_entropy(ref_x.requires_grad_(True), labels,
                                                ignore_index=255)
        ref.backward()
        torch.testing.assert_close(out.losses["semantic"].to(ref.dtype), ref.detach(),
                                   equal_nan=True, **tol)
        torch.testing.assert_close(leaf.grad.to(ref.dtype), ref_x.grad, equal_nan=True, **tol)
    assert ref.isnan() and ref_x.grad[0, :, 0, 3].isnan().all()
    assert torch.isfinite(ref_x.grad[0, :, 0, :3]).all()
    one_read = dtype != torch.float64
    assert problems and all((p.classes[0] == C) == one_read
                            and p.pairs == (dtype == torch.bfloat16)
                            and p.kept == (dtype == torch.float32 or kept_pairs)
                            and p.split == (split and sum_chunk >= C // 2)
                            for p in problems)
    assert all(p.sum_chunk == sum_chunk for p in problems if p.one_read)


@pytest.mark.parametrize("predictions_require_grad", [True, False])
def test_regression_targets_requiring_grad_are_differentiated_as_by_l1_loss(
        predictions_require_grad):
    pred, tgt = make_inputs(B=2, C=4, H=3, W=5, seed=31)
    tgt["depth"] = tgt["depth"][:, 0]  # a (B,H,W) depth target
    lv = torch.tensor([0.2, -0.3, 0.4])
    results = []
    for backend in (None, *BACKENDS):
        p = {k: v.detach().clone().requires_grad_(predictions_require_grad)
             for k, v in pred.items()}
        targets = {k: v.detach().clone().requires_grad_(v.is_floating_point())
                   for k, v in tgt.items()}
        if backend is None:  # F.cross_entropy and F.l1_loss
            total, _ = oracle(p, {**targets, "depth": targets["depth"][:, None]}, lv)
        else:
            total = fastmtl.multitask_loss(p, targets, log_vars=lv, backend=backend).total
        total.backward()
        results.append([targets["instance"].grad, targets["depth"].grad]
                       + [v.grad for v in p.values()])
    expected, *got = results
    assert expected[0].abs().sum() > 0 and expected[1].abs().sum() > 0
    for backend, grads in zip(BACKENDS, got):
        for g, r in zip(grads, expected):
            assert (g is None) == (r is None), backend
            if r is not None:
                assert g.shape == r.shape and g.dtype == r.dtype, backend
                torch.testing.assert_close(g, r, rtol=2e-5, atol=1e-6, msg=backend)


def test_class_weight_requiring_grad_raises_as_in_cross_entropy():
    pred, tgt = make_inputs(B=1, C=4, H=2, W=3, seed=32)
    cw = torch.rand(4, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        torch.nn.functional.cross_entropy(pred["semantic"], tgt["semantic"].clamp(max=3),
                                          weight=cw)
    for backend in BACKENDS:
        with pytest.raises(RuntimeError, match="not differentiable"):
            fastmtl.multitask_loss(pred, tgt, class_weight=cw, backend=backend)
    with torch.no_grad():  # nothing is differentiated: both accept it, as PyTorch does
        totals = [fastmtl.multitask_loss(pred, tgt, class_weight=cw, backend=b).total
                  for b in BACKENDS]
    torch.testing.assert_close(totals[1], totals[0], rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("wide", [("depth",), ("semantic", "instance")])
def test_loss_dtypes_with_mixed_fp32_and_fp64_predictions(wide):
    pred, tgt = make_inputs(B=2, C=4, H=3, W=4, seed=33)
    pred = {k: v.double() if k in wide else v for k, v in pred.items()}
    lv = torch.tensor([0.1, 0.2, -0.3])
    ref, tri = (fastmtl.multitask_loss(pred, tgt, log_vars=lv, backend=b) for b in BACKENDS)
    assert tri.total.dtype == ref.total.dtype == torch.float64
    for name, loss in ref.losses.items():
        assert loss.dtype == (torch.float64 if name in wide else torch.float32)
        assert tri.losses[name].dtype == loss.dtype, name
        torch.testing.assert_close(tri.losses[name], loss, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(tri.total, ref.total, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("narrow", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("upsample", [False, True])
def test_16_bit_gradients_beside_a_float64_prediction(narrow, upsample):
    # A float64 prediction makes every task accumulate in float64: the 16-bit gradients are
    # cast down from it (bfloat16 through float32, see kernels/casts.py).
    pred, tgt = make_inputs(B=2, C=5, H=6, W=8, seed=36)
    if upsample:
        pred, _ = make_inputs(B=2, C=5, H=3, W=5, seed=37)
    for wide in TASKS:
        mixed = {k: v.double() if k == wide else v.to(narrow) for k, v in pred.items()}
        run = run_both_upsampled if upsample else run_both
        kernel, expected = run(mixed, tgt, log_vars=torch.tensor([0.1, 0.2, -0.3],
                                                                 dtype=torch.float64))
        assert_match(kernel, expected, narrow)
