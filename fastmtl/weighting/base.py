"""The interface of a weighting, and the base of those that weigh with a (K,) tensor of weights.

A weighting is an ``nn.Module`` that ``fastmtl.MultiTaskLoss`` holds:

- ``loss_kwargs(tasks)``: the arguments of ``fastmtl.multitask_loss`` for the
  tasks present (``log_vars`` or ``weights``), so the fused kernel applies
  the weighting in its one pass;
- ``forward(losses)``: the total of already-computed per-task losses;
- ``effective_weights()``: the weight each task loss gets now, for logs;
- ``observe(losses)``: called by the trainer after each optimiser step with
  the step's detached losses (a weighting that learns from the loss history
  updates itself here; the default does nothing).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from fastmtl.tasks import TASK_ORDER, canonical_tasks


class Weighting(nn.Module):
    """Base of the weightings: a fixed task list and the trainer's hooks (see the module docstring)."""

    def __init__(self, tasks: Sequence[str] = TASK_ORDER):
        super().__init__()
        self.tasks = canonical_tasks(tasks)

    def _index(self, tasks: Sequence[str]) -> list[int]:
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise ValueError(f"{type(self).__name__} has no weight for task(s) {missing}; "
                             f"it was built for {list(self.tasks)}")
        return [self.tasks.index(t) for t in tasks]

    def observe(self, losses: Mapping[str, torch.Tensor]) -> None:
        """Called after each optimiser step with that step's detached per-task losses."""


class WeightedSum(Weighting):
    """``total = sum_k w_k L_k`` with weights that ``current_weights()`` returns as a (K,) tensor."""

    def current_weights(self) -> torch.Tensor:
        raise NotImplementedError

    def loss_kwargs(self, tasks: Sequence[str]) -> dict:
        return {"weights": self.current_weights().detach()[self._index(tasks)]}

    def effective_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.current_weights().detach().cpu().tolist()))

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tasks = canonical_tasks(losses)
        w = self.current_weights().detach()[self._index(tasks)]
        return (w.to(losses[tasks[0]].dtype) * torch.stack([losses[t] for t in tasks])).sum()
