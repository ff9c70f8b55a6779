"""Uncertainty and fixed weighting against closed forms."""
import math

import pytest
import torch

import fastmtl
from fastmtl.weighting import uncertainty_factors
from helpers import make_inputs
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
