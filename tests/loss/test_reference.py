"""The reference path against an independent oracle built from F.cross_entropy and F.l1_loss."""
import itertools

import pytest
import torch

import fastmtl
from helpers import leaf_copies, make_inputs
from oracle import oracle_losses, oracle_total

TASK_SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(fastmtl.TASK_ORDER, r)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12),
       torch.bfloat16: dict(rtol=1e-5, atol=1e-6)}


def as_layout(t, layout):
    if layout == "contiguous":
        return t
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    # A strided view into a larger buffer: every dimension sliced.
    B, C, H, W = t.shape
    big = torch.zeros(B + 1, C + 2, H + 1, 2 * W, dtype=t.dtype)
    view = big[1:, 1:-1, :-1, ::2]
    view.copy_(t)
    return view


def check_against_oracle(pred, tgt, log_vars=None, weights=None, class_weight=None, tol=None):
    mine = leaf_copies(pred)
    theirs = leaf_copies(pred)
    s_mine = None if log_vars is None else log_vars.clone().requires_grad_(True)
    s_theirs = None if log_vars is None else log_vars.clone().requires_grad_(True)

    out = fastmtl.multitask_loss(mine, tgt, s_mine, weights, class_weight=class_weight,
                                 backend="reference")
    ref = oracle_losses(theirs, tgt, class_weight=class_weight)
    for name, loss in ref.items():
        expected = torch.zeros(()) if loss is None else loss.detach()
        torch.testing.assert_close(out.losses[name].detach(), expected.to(out.losses[name].dtype),
                                   **tol)
    ref_total = oracle_total(ref, s_theirs, weights)
    torch.testing.assert_close(out.total.detach(), torch.as_tensor(ref_total).detach().to(out.total.dtype), **tol)

    out.total.backward()
    if torch.is_tensor(ref_total) and ref_total.requires_grad:
        ref_total.backward()
    for name in pred:
        expected = theirs[name].grad if theirs[name].grad is not None else torch.zeros_like(pred[name])
        got = mine[name].grad if mine[name].grad is not None else torch.zeros_like(pred[name])
        assert got.dtype == pred[name].dtype
        torch.testing.assert_close(got, expected, **tol)
    if log_vars is not None:
        expected = s_theirs.grad if s_theirs.grad is not None else torch.zeros_like(log_vars)
        torch.testing.assert_close(s_mine.grad, expected, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.int32, torch.uint8])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (2, 19, 7, 9), (3, 4, 1, 1)])
def test_matches_oracle_over_grid(dtype, target_dtype, layout, shape):
    B, C, H, W = shape
    pred, tgt = make_inputs(B, C, H, W, dtype=dtype, target_dtype=target_dtype, seed=sum(shape))
    pred = {k: as_layout(v, layout) for k, v in pred.items()}
    log_vars = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    check_against_oracle(pred, tgt, log_vars=log_vars, tol=TOL[dtype])


@pytest.mark.parametrize("tasks", TASK_SUBSETS)
@pytest.mark.parametrize("weighting", ["uncertainty", "fixed", "default"])
def test_every_task_subset(tasks, weighting):
    pred, tgt = make_inputs(2, 6, 5, 7, tasks=tasks, seed=len(tasks))
    K = len(tasks)
    log_vars = torch.linspace(-0.5, 0.5, K) if weighting == "uncertainty" else None
    weights = [0.89, 0.01, 0.1][:K] if weighting == "fixed" else None
    check_against_oracle(pred, tgt, log_vars=log_vars, weights=weights, tol=TOL[torch.float32])


def test_class_weights_are_a_weighted_mean():
    pred, tgt = make_inputs(2, 7, 6, 6, seed=3)
    w = torch.rand(7) + 0.1
    check_against_oracle(pred, tgt, log_vars=torch.zeros(3), class_weight=w, tol=TOL[torch.float32])


@pytest.mark.parametrize("empty", ["semantic", "instance", "depth", "all"])
def test_empty_task_adds_nothing_and_never_nan(empty):
    pred, tgt = make_inputs(2, 4, 5, 5, seed=9)
    if empty in ("semantic", "all"):
        tgt["semantic"].fill_(255)
    if empty in ("instance", "all"):
        tgt["instance_mask"].fill_(False)
    if empty in ("depth", "all"):
        tgt["depth"][0].fill_(0.0)
        tgt["depth"][1].fill_(float("nan"))
    log_vars = torch.tensor([0.4, -0.3, 0.2], requires_grad=True)
    leaves = leaf_copies(pred)
    out = fastmtl.multitask_loss(leaves, tgt, log_vars)
    out.total.backward()
    emptied = fastmtl.TASK_ORDER if empty == "all" else (empty,)
    for k, name in enumerate(fastmtl.TASK_ORDER):
        assert torch.isfinite(leaves[name].grad).all()
        if name in emptied:
            assert out.losses[name].item() == 0.0
            assert log_vars.grad[k].item() == 0.0
            assert not leaves[name].grad.any()
        else:
            assert log_vars.grad[k].item() != 0.0
    # The total is exactly the sum over the non-empty tasks.
    ref = oracle_losses(pred, tgt)
    torch.testing.assert_close(out.total.detach(), torch.as_tensor(oracle_total(ref, log_vars.detach())).float())


def test_zero_class_weight_on_every_valid_pixel_counts_as_empty():
    pred, tgt = make_inputs(1, 3, 4, 4, tasks=("semantic",), ignore_frac=0.0)
    tgt["semantic"].fill_(1)
    x = pred["semantic"].requires_grad_(True)
    out = fastmtl.multitask_loss(pred, tgt, torch.zeros(1), class_weight=torch.tensor([1.0, 0.0, 1.0]))
    out.total.backward()
    assert out.total.item() == 0.0 and not x.grad.any()


def test_uint8_targets_with_default_ignore_index():
    pred, tgt = make_inputs(2, 19, 4, 4, target_dtype=torch.uint8, ignore_frac=0.5, seed=4)
    assert (tgt["semantic"] == 255).any()
    check_against_oracle(pred, tgt, tol=TOL[torch.float32])


def test_depth_target_without_channel_dim_and_nan_invalid():
    pred, tgt = make_inputs(2, 3, 4, 5, tasks=("depth",), seed=5)
    z = tgt["depth"][:, 0].clone()
    z[0, 0, 0] = float("nan")
    z[1, 1, 1] = float("inf")
    z[1, 2, 2] = -1.0
    out_a = fastmtl.multitask_loss(pred, {"depth": z})
    out_b = fastmtl.multitask_loss(pred, {"depth": z[:, None]})
    assert torch.isfinite(out_a.total)
    assert out_a.total.item() == out_b.total.item()
    check_against_oracle(pred, {"depth": z}, tol=TOL[torch.float32])


def test_sign_of_zero_residual_gives_zero_gradient():
    d = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
    z = torch.tensor([[[[0.5, 0.7], [0.2, 0.5]]]])
    fastmtl.multitask_loss({"depth": d}, {"depth": z}).total.backward()
    torch.testing.assert_close(d.grad, torch.tensor([[[[0.0, -0.25], [0.25, 0.0]]]]))


def test_nan_prediction_propagates_to_the_loss():
    pred, tgt = make_inputs(1, 3, 4, 4, tasks=("depth",), depth_invalid_frac=0.0)
    pred["depth"][0, 0, 1, 1] = float("nan")
    assert torch.isnan(fastmtl.multitask_loss(pred, tgt).total)


def test_gradcheck_fp64_total_wrt_all_predictions_and_log_vars():
    pred, tgt = make_inputs(2, 4, 3, 4, dtype=torch.float64, seed=11)
    # Keep residuals away from 0 so the L1 kinks stay outside the finite-difference step.
    tgt["instance"] = pred["instance"] + torch.where(torch.rand_like(pred["instance"]) > 0.5, 0.3, -0.3)
    tgt["depth"] = (pred["depth"] + 0.2).abs() + 0.05
    names = list(pred)
    log_vars = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    inputs = [pred[n].clone().requires_grad_(True) for n in names]
    w = torch.rand(4, dtype=torch.float64) + 0.5

    def total(*args):
        *preds, s = args
        return fastmtl.multitask_loss(dict(zip(names, preds)), tgt, s, class_weight=w).total

    assert torch.autograd.gradcheck(total, (*inputs, log_vars))


def test_module_matches_functional():
    pred, tgt = make_inputs(2, 5, 4, 4)
    crit = fastmtl.MultiTaskLoss()
    with torch.no_grad():
        crit.weighting.log_vars.copy_(torch.tensor([0.2, 0.1, -0.4]))
    a = crit(pred, tgt)
    b = fastmtl.multitask_loss(pred, tgt, torch.tensor([0.2, 0.1, -0.4]))
    torch.testing.assert_close(a.total, b.total)
    assert list(crit.parameters()) == [crit.weighting.log_vars]


def test_module_selects_log_vars_of_the_tasks_present():
    pred, tgt = make_inputs(2, 5, 4, 4, tasks=("semantic", "depth"))
    crit = fastmtl.MultiTaskLoss()
    with torch.no_grad():
        crit.weighting.log_vars.copy_(torch.tensor([0.2, 0.1, -0.4]))
    out = crit(pred, tgt)
    out.total.backward()
    b = fastmtl.multitask_loss(pred, tgt, torch.tensor([0.2, -0.4]))
    torch.testing.assert_close(out.total.detach(), b.total)
    assert crit.weighting.log_vars.grad[1].item() == 0.0
