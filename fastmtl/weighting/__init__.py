"""How per-task losses become one total.

Uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018, eq. 7 and 10) with
s_k = log sigma_k^2 learned per task::

    total = sum_k  c_k * exp(-s_k) * L_k + r_k * s_k

The paper's convention ("kendall", the default) has c = 1 for classification,
c = 1/2 for regression and r = 1/2 for both. Two variants seen in other code
are available by name: "half" (c = r = 1/2 for every task, as LibMTL and MTAN)
and "unit" (c = r = 1: ``exp(-s) L + s``).

A negative total is normal under uncertainty weighting: for a fixed L_k the
term is smallest at s_k = log(c_k L_k / r_k), where it equals
r_k (1 + log(c_k L_k / r_k)), below zero once c_k L_k < r_k / e (a
cross-entropy under 0.18, an L1 loss under 0.37 in the paper's convention).
Watch the per-task losses, not the total. ``clamp=(lo, hi)`` bounds the
log-variances the loss uses (the gradient is zero beyond the bounds).

Fixed weighting is ``total = sum_k w_k L_k``: equal, single-task or any set.
"Equal" means equal weights summing to 1 (thirds for three tasks) everywhere
in fastmtl: the paper's "unweighted sum of losses".

The field's other weightings sit beside them, each ``sum_k w_k L_k`` with
weights summing to 1 by default: Dynamic Weight Average
(``DynamicWeightAverage``, Liu et al., CVPR 2019), Random Loss Weighting
(``RandomLossWeighting``, Lin et al., 2022) and GradNorm (``GradNorm``, Chen
et al., ICML 2018; ``fastmtl.weighting.gradnorm`` says how it gets the
per-task gradients through the fused loss). ``fastmtl.weighting.base``
describes the interface a trainer uses.

A task with nothing valid in the batch (``present`` false) adds nothing: no
loss, no gradient, no ``r_k s_k`` term.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from fastmtl.tasks import TASK_ORDER, TASKS, canonical_tasks
from fastmtl.weighting.base import WeightedSum, Weighting
from fastmtl.weighting.dynamic import DynamicWeightAverage, RandomLossWeighting
from fastmtl.weighting.gradnorm import GradNorm

CONVENTIONS = {
    # name: (factor for classification, factor for regression, regulariser)
    "kendall": (1.0, 0.5, 0.5),
    "half": (0.5, 0.5, 0.5),
    "unit": (1.0, 1.0, 1.0),
}


def uncertainty_factors(tasks: Sequence[str], convention: str = "kendall"):
    """(c_k, r_k) for each task under a named convention."""
    if convention not in CONVENTIONS:
        raise ValueError(
            f"unknown uncertainty convention {convention!r}; choose from {list(CONVENTIONS)}"
        )
    return _factors(tuple(tasks), convention)


@functools.lru_cache(maxsize=None)  # a few task subsets and conventions: made once each
def _factors(tasks: tuple[str, ...], convention: str):
    cls, reg, r = CONVENTIONS[convention]
    factors = tuple(cls if TASKS[t].kind == "classification" else reg for t in tasks)
    return factors, tuple(r for _ in tasks)


def combine(losses: torch.Tensor, present: torch.Tensor, *, log_vars=None, weights=None,
            factors=None, regulariser=None) -> torch.Tensor:
    """Total of stacked per-task losses (K,) given which tasks are present (K,) bool.

    Pure tensor arithmetic on the losses' device: no host synchronisation.
    """
    if log_vars is not None:
        f = torch.tensor(factors, dtype=losses.dtype, device=losses.device)
        r = torch.tensor(regulariser, dtype=losses.dtype, device=losses.device)
        s = log_vars.to(losses.dtype)
        terms = f * torch.exp(-s) * losses + r * s
    else:
        w = torch.ones_like(losses) if weights is None else weights.to(losses.dtype)
        terms = w * losses
    return torch.where(present, terms, torch.zeros_like(terms)).sum()


def weights_tensor(weights, tasks: Sequence[str], device, dtype=torch.float32) -> torch.Tensor:
    """Fixed weights as a (K,) tensor from a sequence, tensor or task-name dict."""
    if isinstance(weights, Mapping):
        unknown = [k for k in weights if k not in TASKS]
        if unknown:
            raise ValueError(f"weights name unknown task(s) {unknown}; known: {list(TASK_ORDER)}")
        missing = [t for t in tasks if t not in weights]
        if missing:
            raise ValueError(f"weights has no entry for task(s) {missing} present in the predictions")
        weights = [float(weights[t]) for t in tasks]
    w = torch.as_tensor(weights, dtype=dtype, device=device)
    if w.shape != (len(tasks),):
        raise ValueError(
            f"weights has shape {tuple(w.shape)} but {len(tasks)} task(s) are present {list(tasks)}"
        )
    return w


class UncertaintyWeighting(nn.Module):
    """Learned homoscedastic uncertainty, one log-variance s_k = log sigma_k^2 per task.

    Args:
        tasks: task names (canonical order is used whatever order is given).
        init: initial s_k (the paper starts at 0, i.e. sigma = 1).
        convention: "kendall" (paper), "half" or "unit"; see the module docstring.
        clamp: optional (lo, hi): the loss uses s_k clamped to [lo, hi]; beyond
            the bounds s_k gets no gradient from the loss.

    The total can be negative; see the module docstring.
    """

    def __init__(self, tasks: Sequence[str] = TASK_ORDER, init: float = 0.0,
                 convention: str = "kendall", clamp: tuple[float, float] | None = None):
        super().__init__()
        self.tasks = canonical_tasks(tasks)
        self.convention = convention
        self.factors, self.regulariser = uncertainty_factors(self.tasks, convention)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init)))
        if clamp is not None:
            clamp = (float(clamp[0]), float(clamp[1]))
            if not clamp[0] < clamp[1]:
                raise ValueError(f"clamp must be (lo, hi) with lo < hi, got {clamp}")
        self.clamp = clamp

    def used_log_vars(self) -> torch.Tensor:
        """The log-variances the loss uses (clamped when ``clamp`` is set)."""
        return self.log_vars if self.clamp is None else self.log_vars.clamp(*self.clamp)

    def loss_kwargs(self, tasks: Sequence[str]) -> dict:
        """Arguments for fastmtl.multitask_loss for the tasks present."""
        return {"log_vars": self.used_log_vars()[self._index(tasks)], "uncertainty": self.convention}

    def _index(self, tasks):
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise ValueError(f"UncertaintyWeighting has no log-variance for task(s) {missing}; "
                             f"it was built for {list(self.tasks)}")
        return [self.tasks.index(t) for t in tasks]

    def sigmas(self) -> dict[str, float]:
        """sigma_k = exp(s_k / 2) per task, for logging."""
        return {t: float(v) for t, v in zip(self.tasks, torch.exp(self.used_log_vars().detach() / 2))}

    def effective_weights(self) -> dict[str, float]:
        """c_k exp(-s_k): the weight each task loss currently gets."""
        s = self.used_log_vars().detach()
        return {t: float(f * torch.exp(-v)) for t, f, v in zip(self.tasks, self.factors, s)}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weigh already-computed per-task losses (a missing task counts as absent)."""
        tasks = canonical_tasks(losses)
        idx = self._index(tasks)
        stacked = torch.stack([losses[t] for t in tasks])
        f = tuple(self.factors[i] for i in idx)
        r = tuple(self.regulariser[i] for i in idx)
        return combine(stacked, torch.ones_like(stacked, dtype=torch.bool),
                       log_vars=self.used_log_vars()[idx], factors=f, regulariser=r)

    def extra_repr(self) -> str:
        clamp = "" if self.clamp is None else f", clamp={self.clamp}"
        return f"tasks={list(self.tasks)}, convention={self.convention!r}{clamp}"


class FixedWeighting(nn.Module):
    """total = sum_k w_k L_k with constant weights (the paper's Table 1 baselines)."""

    def __init__(self, weights: Mapping[str, float]):
        super().__init__()
        self.tasks = canonical_tasks(weights)
        self.weights = {t: float(weights[t]) for t in self.tasks}
        bad = {t: w for t, w in self.weights.items() if not math.isfinite(w)}
        if bad:
            raise ValueError(f"FixedWeighting weights must be finite, got {bad}")

    @classmethod
    def equal(cls, tasks: Sequence[str] = TASK_ORDER) -> "FixedWeighting":
        """Equal weights summing to 1 (equal thirds for three tasks): what "equal" means in fastmtl."""
        tasks = canonical_tasks(tasks)
        return cls({t: 1.0 / len(tasks) for t in tasks})

    @classmethod
    def single(cls, task: str) -> "FixedWeighting":
        return cls({task: 1.0})

    def loss_kwargs(self, tasks: Sequence[str]) -> dict:
        self._check_tasks(tasks)
        return {"weights": {t: self.weights[t] for t in tasks}}

    def _check_tasks(self, tasks) -> None:
        missing = [t for t in canonical_tasks(tasks) if t not in self.weights]
        if missing:
            raise ValueError(f"FixedWeighting has no weight for task(s) {missing}; it was built for "
                             f"{list(self.tasks)} (give each predicted task a weight, 0 to leave it out)")

    def effective_weights(self) -> dict[str, float]:
        return dict(self.weights)

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self._check_tasks(losses)
        return sum(self.weights[t] * v for t, v in losses.items())

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


__all__ = [
    "CONVENTIONS", "DynamicWeightAverage", "FixedWeighting", "GradNorm", "RandomLossWeighting",
    "UncertaintyWeighting", "WeightedSum", "Weighting", "combine", "uncertainty_factors", "weights_tensor",
]
