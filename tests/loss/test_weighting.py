"""Uncertainty and fixed weighting against closed forms."""
import math

import pytest
import torch

import fastmtl
from fastmtl.weighting import uncertainty_factors
from helpers import leaf_copies, make_inputs
from oracle import oracle_losses


@pytest.mark.parametrize("c", [1.0, 0.5])
@pytest.mark.parametrize("L", [0.05, 1.0, 7.5])
def test_minimum_of_weighted_term_is_at_log_2cL(c, L):
    # d/ds (c exp(-s) L + s/2) = 0  <=>  s = log(2 c L)
    s = torch.tensor(math.log(2 * c * L), dtype=torch.float64, requires_grad=True)
    term = c * torch.exp(-s) * L + s / 2
    (grad,) = torch.autograd.grad(term, s)
    assert abs(grad.item()) < 1e-12
    for ds in (-1e-3, 1e-3):
        assert (c * math.exp(-(s.item() + ds)) * L + (s.item() + ds) / 2) > term.item()


def test_sgd_on_log_vars_alone_reaches_the_closed_form():
    # Fixed predictions: the per-task losses are constants, only s is trained.
    pred, tgt = make_inputs(2, 5, 6, 6, seed=2)
    weighting = fastmtl.UncertaintyWeighting()
    crit = fastmtl.MultiTaskLoss(weighting=weighting)
    opt = torch.optim.SGD(crit.parameters(), lr=0.2)
    for _ in range(600):
        opt.zero_grad()
        out = crit(pred, tgt)
        out.total.backward()
        opt.step()
    losses = oracle_losses(pred, tgt)
    c = {"semantic": 1.0, "instance": 0.5, "depth": 0.5}
    expected = torch.tensor([math.log(2 * c[n] * losses[n].item()) for n in fastmtl.TASK_ORDER])
    torch.testing.assert_close(weighting.log_vars.detach(), expected, rtol=0, atol=1e-4)
    # At the optimum every effective weight c exp(-s) equals 1 / (2 L).
    for n, w in weighting.effective_weights().items():
        assert w == pytest.approx(1 / (2 * losses[n].item()), rel=1e-3)


def test_conventions_are_named_not_silent():
    assert uncertainty_factors(fastmtl.TASK_ORDER, "kendall") == ((1.0, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert uncertainty_factors(fastmtl.TASK_ORDER, "half") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert uncertainty_factors(fastmtl.TASK_ORDER, "unit") == ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="unknown uncertainty convention"):
        uncertainty_factors(fastmtl.TASK_ORDER, "kendal")


@pytest.mark.parametrize("convention", ["kendall", "half", "unit"])
def test_total_under_each_convention(convention):
    pred, tgt = make_inputs(2, 5, 4, 4, seed=6)
    s = torch.tensor([0.3, -0.1, 0.5])
    out = fastmtl.multitask_loss(pred, tgt, s, uncertainty=convention)
    L = oracle_losses(pred, tgt)
    c, r = {"kendall": ((1, .5, .5), .5), "half": ((.5, .5, .5), .5), "unit": ((1, 1, 1), 1.0)}[convention]
    expected = sum(ck * torch.exp(-sk) * L[n] + r * sk
                   for ck, sk, n in zip(c, s, fastmtl.TASK_ORDER))
    torch.testing.assert_close(out.total, expected)


def test_uncertainty_accessors():
    w = fastmtl.UncertaintyWeighting(init=math.log(4.0))
    assert w.sigmas() == pytest.approx({"semantic": 2.0, "instance": 2.0, "depth": 2.0})
    assert w.effective_weights() == pytest.approx({"semantic": 0.25, "instance": 0.125, "depth": 0.125})


def test_uncertainty_weighting_forward_on_own_losses():
    w = fastmtl.UncertaintyWeighting(("depth", "semantic"))
    assert w.tasks == ("semantic", "depth")
    L = {"depth": torch.tensor(2.0), "semantic": torch.tensor(3.0)}
    torch.testing.assert_close(w(L), torch.tensor(3.0 + 0.5 * 2.0))


def test_fixed_weightings():
    pred, tgt = make_inputs(2, 5, 4, 4, seed=7)
    L = oracle_losses(pred, tgt)
    cases = {
        "equal": (fastmtl.FixedWeighting.equal(), sum(L.values()) / 3),
        "single": (fastmtl.FixedWeighting.single("depth"), L["depth"]),
        "tuned": (fastmtl.FixedWeighting({"semantic": 0.89, "instance": 0.01, "depth": 0.1}),
                  0.89 * L["semantic"] + 0.01 * L["instance"] + 0.1 * L["depth"]),
    }
    for name, (weighting, expected) in cases.items():
        tasks = weighting.tasks  # a fixed weighting scores exactly the tasks it weighs
        out = fastmtl.MultiTaskLoss(weighting=weighting)({t: pred[t] for t in tasks}, tgt)
        torch.testing.assert_close(out.total, expected, msg=name)
        assert list(weighting.parameters()) == []


def test_weights_as_dict_in_functional_api():
    pred, tgt = make_inputs(2, 5, 4, 4, tasks=("semantic", "depth"), seed=8)
    L = oracle_losses(pred, tgt)
    out = fastmtl.multitask_loss(pred, tgt, weights={"depth": 2.0, "semantic": 0.5})
    torch.testing.assert_close(out.total, 0.5 * L["semantic"] + 2.0 * L["depth"])


# --- clamp and the sign of the total -------------------------------------------------------------

def test_log_var_clamp_bounds_the_values_used_and_stops_their_gradient():
    pred, tgt = make_inputs(2, 5, 4, 4, seed=9)
    w = fastmtl.UncertaintyWeighting(clamp=(-1.0, 1.0))
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([3.0, 0.5, -2.0]))
    out = fastmtl.MultiTaskLoss(weighting=w)(pred, tgt)
    L = oracle_losses(pred, tgt)
    used = torch.tensor([1.0, 0.5, -1.0])
    c = torch.tensor([1.0, 0.5, 0.5])
    expected = sum(c[i] * torch.exp(-used[i]) * L[n] + 0.5 * used[i] for i, n in enumerate(fastmtl.TASK_ORDER))
    torch.testing.assert_close(out.total, expected)
    out.total.backward()
    assert w.log_vars.grad[0] == 0 and w.log_vars.grad[2] == 0  # beyond the bounds
    torch.testing.assert_close(w.log_vars.grad[1], -0.5 * math.exp(-0.5) * L["instance"] + 0.5)
    assert w.sigmas()["semantic"] == pytest.approx(math.exp(0.5))
    with pytest.raises(ValueError, match="lo < hi"):
        fastmtl.UncertaintyWeighting(clamp=(1.0, 1.0))


@pytest.mark.parametrize("c, L", [(1.0, 0.1), (0.5, 0.3), (1.0, 2.0)])
def test_total_at_balance_is_r_times_one_plus_log_and_negative_for_small_losses(c, L):
    # min_s c exp(-s) L + s/2 = (1 + log(2 c L)) / 2, below zero once c L < 1 / (2 e).
    s = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([s], lr=0.5)
    for _ in range(400):
        opt.zero_grad()
        (c * torch.exp(-s) * L + s / 2).backward()
        opt.step()
    value = c * math.exp(-s.item()) * L + s.item() / 2
    assert value == pytest.approx((1 + math.log(2 * c * L)) / 2, abs=1e-9)
    assert (value < 0) == (c * L < 1 / (2 * math.e))


# --- Dynamic Weight Average ----------------------------------------------------------------------

def _losses(*values):
    return dict(zip(fastmtl.TASK_ORDER, (torch.tensor(float(v)) for v in values)))


def test_dwa_against_a_hand_computation():
    dwa = fastmtl.DynamicWeightAverage(period=2, temperature=2.0)
    thirds = torch.full((3,), 1 / 3)
    torch.testing.assert_close(dwa.current_weights(), thirds)
    for values in ((1, 2, 3), (3, 2, 1)):  # period 1: means 2, 2, 2
        dwa.observe(_losses(*values))
    torch.testing.assert_close(dwa.current_weights(), thirds)  # fewer than two periods seen
    dwa.observe(_losses(1, 1, 1))
    torch.testing.assert_close(dwa.current_weights(), thirds)  # mid-period: unchanged
    dwa.observe(_losses(1, 1, 2))  # period 2: means 1, 1, 1.5
    e = [math.exp(r / 2.0) for r in (1 / 2, 1 / 2, 1.5 / 2)]
    expected = torch.tensor([v / sum(e) for v in e])
    torch.testing.assert_close(dwa.current_weights(), expected)
    for values in ((2, 1, 3), (2, 1, 3)):  # period 3: means 2, 1, 3 over 1, 1, 1.5
        dwa.observe(_losses(*values))
    e = [math.exp(r / 2.0) for r in (2.0, 1.0, 2.0)]
    torch.testing.assert_close(dwa.current_weights(), torch.tensor([v / sum(e) for v in e]))


def test_dwa_total_and_state_round_trip():
    pred, tgt = make_inputs(2, 5, 4, 4, seed=10)
    dwa = fastmtl.DynamicWeightAverage(period=1, temperature=1.0, total=3.0)
    for values in ((1, 1, 1), (1, 2, 4)):
        dwa.observe(_losses(*values))
    e = [math.exp(r) for r in (1.0, 2.0, 4.0)]
    w = [3 * v / sum(e) for v in e]
    L = oracle_losses(pred, tgt)
    out = fastmtl.MultiTaskLoss(weighting=dwa)(pred, tgt)
    torch.testing.assert_close(out.total, sum(wk * L[n] for wk, n in zip(w, fastmtl.TASK_ORDER)))
    assert sum(dwa.effective_weights().values()) == pytest.approx(3.0)
    copy = fastmtl.DynamicWeightAverage(period=1, temperature=1.0, total=3.0)
    copy.load_state_dict(dwa.state_dict())
    for m in (dwa, copy):
        m.observe(_losses(2, 2, 2))
    torch.testing.assert_close(copy.current_weights(), dwa.current_weights())
    with pytest.raises(ValueError, match="period"):
        fastmtl.DynamicWeightAverage(period=0)


# --- Random Loss Weighting -----------------------------------------------------------------------

def test_rlw_weights_are_a_softmax_of_standard_normals():
    rlw = fastmtl.RandomLossWeighting(seed=3)
    draws = torch.stack([rlw.draw().clone() for _ in range(4000)])
    assert torch.allclose(draws.sum(1), torch.ones(4000, dtype=draws.dtype))
    assert (draws > 0).all()
    # softmax(z): log(w_i / w_j) = z_i - z_j ~ N(0, 2); the mean weight is 1/3 by symmetry.
    diff = (draws[:, 0] / draws[:, 1]).log()
    assert diff.mean().item() == pytest.approx(0.0, abs=0.1)
    assert diff.var().item() == pytest.approx(2.0, rel=0.1)
    torch.testing.assert_close(draws.mean(0), torch.full((3,), 1 / 3, dtype=draws.dtype), atol=0.02, rtol=0)


def test_rlw_draws_once_per_training_step_and_resumes_its_sequence():
    pred, tgt = make_inputs(2, 5, 4, 4, seed=11)
    L = oracle_losses(pred, tgt)
    crit = fastmtl.MultiTaskLoss(weighting=fastmtl.RandomLossWeighting(seed=1))
    totals, weights = [], []
    for _ in range(3):
        totals.append(crit(pred, tgt).total)
        weights.append(crit.weighting.current_weights().clone())
    assert not torch.equal(weights[0], weights[1])
    for total, w in zip(totals, weights):
        torch.testing.assert_close(total, sum(w[i].float() * L[n] for i, n in enumerate(fastmtl.TASK_ORDER)))
    crit.eval()
    torch.testing.assert_close(crit(pred, tgt).total, totals[-1])  # eval mode keeps the last draw
    again = fastmtl.RandomLossWeighting(seed=1)
    again.load_state_dict(fastmtl.RandomLossWeighting(seed=1).state_dict())
    again.draw()
    resumed = fastmtl.RandomLossWeighting(seed=1)
    resumed.load_state_dict(again.state_dict())  # one draw made: continues with the second
    torch.testing.assert_close(resumed.draw(), weights[1])


# --- GradNorm --------------------------------------------------------------------------------------

def _linear_losses(W):
    # dL_k/dW is constant: norms 2, 3 and 1.
    return {"semantic": 2 * W[0], "instance": 3 * W[1], "depth": W[0] + 0 * W[1]}


def test_gradnorm_against_a_hand_computation():
    gn = fastmtl.GradNorm(alpha=1.5)
    W = torch.tensor([1.0, 1.0], requires_grad=True)
    # First call: L(0) = L, every inverse rate is 1. With w = 1/3: G = (2, 3, 1) / 3, target mean(G) = 2/3,
    # dL_grad/dw = sign(G - target) * norm = (0, 3, -1); through w = softmax(theta):
    # dL/dtheta_j = w_j (g_j - sum_i w_i g_i) = ((0, 3, -1) - 2/3) / 3.
    l_grad = gn.balance(_linear_losses(W), [W])
    assert l_grad.item() == pytest.approx(2 / 3)
    torch.testing.assert_close(gn.theta.grad, torch.tensor([-2 / 9, 7 / 9, -5 / 9]))
    # Second call with W = (0.5, 2): L = (1, 6, 0.5), ratios to L(0) = (0.5, 2, 0.5), inverse rates the same.
    W2 = torch.tensor([0.5, 2.0], requires_grad=True)
    gn.balance(_linear_losses(W2), [W2])
    G = torch.tensor([2.0, 3.0, 1.0]) / 3
    target = G.mean() * torch.tensor([0.5, 2.0, 0.5]) ** 1.5
    g = torch.sign(G - target) * torch.tensor([2.0, 3.0, 1.0])
    torch.testing.assert_close(gn.theta.grad, (g - g.mean()) / 3)
    assert W.grad is None and W2.grad is None  # the network's gradients are left to total.backward()


def test_gradnorm_weights_enter_the_total_as_constants():
    pred, tgt = make_inputs(2, 5, 4, 4, seed=12)
    gn = fastmtl.GradNorm(total=3.0)
    with torch.no_grad():
        gn.theta.copy_(torch.tensor([0.2, -0.1, 0.4]))
    w = 3.0 * torch.softmax(gn.theta.detach(), 0)
    L = oracle_losses(pred, tgt)
    pred = leaf_copies(pred)
    out = fastmtl.MultiTaskLoss(weighting=gn)(pred, tgt)
    torch.testing.assert_close(out.total, sum(w[i] * L[n] for i, n in enumerate(fastmtl.TASK_ORDER)))
    out.total.backward()
    assert gn.theta.grad is None  # only balance() moves the weights
    assert sum(gn.effective_weights().values()) == pytest.approx(3.0)


def _tiny_net(seed):
    torch.manual_seed(seed)
    shared = torch.nn.Conv2d(3, 4, 1)
    heads = torch.nn.ModuleDict({"semantic": torch.nn.Conv2d(4, 5, 1), "instance": torch.nn.Conv2d(4, 2, 1),
                                 "depth": torch.nn.Conv2d(4, 1, 1)})
    return shared, heads


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_gradnorm_through_the_loss_matches_per_task_autograd(backend):
    # The per-task gradients at the shared layer come through losses[k] of the (fused) loss; the
    # oracle differentiates each PyTorch per-task loss on its own graph.
    _, tgt = make_inputs(2, 5, 4, 6, seed=13)
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    shared, heads = _tiny_net(0)
    gn = fastmtl.GradNorm(alpha=1.0)
    crit = fastmtl.MultiTaskLoss(weighting=gn, backend=backend)
    feats = shared(x)
    out = crit({k: h(feats) for k, h in heads.items()}, tgt)
    gn.balance(out.losses, [shared.weight])
    out.total.backward()  # the graph survives the per-task gradients

    norms = []
    for t in fastmtl.TASK_ORDER:
        f = shared(x)
        loss = oracle_losses({t: heads[t](f)}, tgt)[t]
        (g,) = torch.autograd.grad(loss, shared.weight)
        norms.append(g.norm())
    norms = torch.stack(norms).detach()
    theta = torch.zeros(3, requires_grad=True)
    G = torch.softmax(theta, 0) * norms
    l_grad = (G - G.mean().detach()).abs().sum()  # first step: every inverse rate is 1
    (expected,) = torch.autograd.grad(l_grad, theta)
    torch.testing.assert_close(gn.theta.grad, expected, rtol=1e-4, atol=1e-6)

    ref_shared, ref_heads = _tiny_net(0)
    f = ref_shared(x)
    L = oracle_losses({k: h(f) for k, h in ref_heads.items()}, tgt)
    (sum(L.values()) / 3).backward()
    torch.testing.assert_close(shared.weight.grad, ref_shared.weight.grad, rtol=1e-4, atol=1e-6)
