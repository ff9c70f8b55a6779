"""Weights that change during training without learning: DWA and RLW.

Both weigh ``total = sum_k w_k L_k`` with weights summing to ``total``
(default 1, so that equal weights are equal thirds as everywhere in
fastmtl; the papers' weights sum to K, which is ``total=K``: under SGD that
is the same as a K-times larger learning rate).
"""
from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import torch

from fastmtl.tasks import TASK_ORDER
from fastmtl.weighting.base import WeightedSum


class DynamicWeightAverage(WeightedSum):
    """Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019, eq. 7)::

        w_k = total * exp(r_k / T) / sum_j exp(r_j / T),   r_k = Lbar_k(e - 1) / Lbar_k(e - 2)

    where Lbar_k(e) is task k's mean training loss over period e: the paper's
    epoch, here ``period`` optimiser steps (the trainer passes its steps per
    epoch). A task whose loss falls more slowly gets more weight. The first
    two periods use equal weights. ``observe`` (the trainer calls it after
    every step) accumulates the losses; all state lives in buffers on the
    losses' device (no host synchronisation) and in the state dict (exact
    resume). A batch without a valid pixel of a task adds a loss of 0 to its
    period's mean.
    """

    def __init__(self, tasks: Sequence[str] = TASK_ORDER, period: int = 100, temperature: float = 2.0,
                 total: float = 1.0):
        super().__init__(tasks)
        if period < 1 or temperature <= 0 or total <= 0:
            raise ValueError(f"DWA needs period >= 1, temperature > 0 and total > 0; "
                             f"got {period}, {temperature}, {total}")
        self.period, self.temperature, self.total = int(period), float(temperature), float(total)
        k = len(self.tasks)
        self.register_buffer("running", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("history", torch.zeros(2, k, dtype=torch.float64))  # Lbar(e-1), Lbar(e-2)
        self.register_buffer("periods", torch.zeros((), dtype=torch.int64))
        self.register_buffer("weights", torch.full((k,), self.total / k))

    def current_weights(self) -> torch.Tensor:
        return self.weights

    @torch.no_grad()
    def observe(self, losses: Mapping[str, torch.Tensor]) -> None:
        step = torch.stack([losses[t].detach().to(self.running) for t in self.tasks])
        self.running += step
        self.count += 1
        done = self.count >= self.period
        mean = self.running / self.count
        self.history.copy_(torch.where(done, torch.stack([mean, self.history[0]]), self.history))
        self.running.copy_(torch.where(done, torch.zeros_like(self.running), self.running))
        self.count.copy_(torch.where(done, torch.zeros_like(self.count), self.count))
        self.periods += done.long()
        last, before = self.history
        ratio = torch.where(before > 0, last / before.clamp_min(1e-30), torch.ones_like(last))
        dynamic = self.total * torch.softmax(ratio / self.temperature, 0)
        self.weights.copy_(torch.where(self.periods >= 2, dynamic, torch.full_like(dynamic, self.total / len(self.tasks))))

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, period={self.period}, temperature={self.temperature}, total={self.total}"


class RandomLossWeighting(WeightedSum):
    """Random Loss Weighting (Lin, Ye, Xu, Shi and Zhang, TMLR 2022, arXiv 2111.10603)::

        w = total * softmax(z),   z ~ N(0, I_K), drawn afresh for every training step

    In training mode each ``loss_kwargs`` call (one per step) draws new
    weights; in eval mode the last draw is kept. Draw n comes from a generator
    seeded with (seed, n), so every process of a distributed run and a
    resumed run draw the same sequence; the draw count is in the state dict.
    """

    def __init__(self, tasks: Sequence[str] = TASK_ORDER, seed: int = 0, total: float = 1.0):
        super().__init__(tasks)
        if total <= 0:
            raise ValueError(f"RLW needs total > 0, got {total}")
        self.seed, self.total, self.draws = int(seed), float(total), 0
        self.register_buffer("weights", torch.full((len(self.tasks),), self.total / len(self.tasks)))

    def draw(self) -> torch.Tensor:
        """Weights of the next draw (advances the draw count)."""
        g = torch.Generator().manual_seed(zlib.crc32(f"rlw-{self.seed}-{self.draws}".encode()))
        z = torch.randn(len(self.tasks), generator=g, dtype=torch.float64)
        self.draws += 1
        self.weights.copy_(self.total * torch.softmax(z, 0))
        return self.weights

    def current_weights(self) -> torch.Tensor:
        return self.weights

    def loss_kwargs(self, tasks: Sequence[str]) -> dict:
        if self.training:
            self.draw()
        return super().loss_kwargs(tasks)

    def get_extra_state(self):
        return {"draws": self.draws}

    def set_extra_state(self, state) -> None:
        self.draws = int(state["draws"])

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, seed={self.seed}, total={self.total}"
