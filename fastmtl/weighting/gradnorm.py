"""GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018).

Task weights are learned so that each task's gradient at the last shared
layer W has a norm proportional to how slowly that task trains::

    G_k   = || d(w_k L_k) / dW ||_2 = w_k || dL_k / dW ||_2,        Gbar = mean_k G_k
    r_k   = (L_k / L_k(0)) / mean_j (L_j / L_j(0))                   (inverse training rate)
    L_grad = sum_k | G_k - Gbar r_k^alpha |,   Gbar r_k^alpha held constant

and the weights follow d L_grad / d w while the network follows
``sum_k w_k L_k`` (weights held constant there). The weights are
``total * softmax(theta)`` with ``theta`` the learned parameter, so they stay
positive and sum to ``total`` (default 1, equal thirds at the start) without
the paper's renormalisation step; LibMTL parametrises them the same way.
L_k(0) is each task's loss at the first step it has one.

With the fused loss: ``fastmtl.multitask_loss`` returns per-task losses L_k
whose gradients flow through ``losses[k]`` (the fused op's backward takes a
gradient for each of them as well as for the total, and rescales the
per-pixel gradients it saved in the forward pass; no second forward). So
``balance`` asks autograd for ``dL_k / dW`` with ``torch.autograd.grad(losses[k],
W, retain_graph=True)``, one backward from the loss through task k's head to
W (not through the encoder), K in all, and the trainer then calls
``total.backward()`` on the same graph. The extra cost is K backward passes
through the heads; pick W as small as the architecture allows (the trainer
uses the ASPP's 1x1 projection, the last layer every head shares).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch

from fastmtl.tasks import TASK_ORDER
from fastmtl.weighting.base import WeightedSum


class GradNorm(WeightedSum):
    """Learned weights balancing the tasks' gradient norms at a shared layer (module docstring).

    Call ``balance(losses, shared)`` after the forward pass and before
    ``total.backward()``: it sets ``theta.grad`` and leaves the graph intact;
    the optimiser that steps the network then steps ``theta``.
    """

    needs_shared_gradients = True

    def __init__(self, tasks: Sequence[str] = TASK_ORDER, alpha: float = 1.5, total: float = 1.0):
        super().__init__(tasks)
        if total <= 0:
            raise ValueError(f"GradNorm needs total > 0, got {total}")
        self.alpha, self.total = float(alpha), float(total)
        self.theta = torch.nn.Parameter(torch.zeros(len(self.tasks)))
        self.register_buffer("initial", torch.zeros(len(self.tasks), dtype=torch.float64))

    def current_weights(self) -> torch.Tensor:
        return self.total * torch.softmax(self.theta, 0)

    def balance(self, losses: Mapping[str, torch.Tensor], shared: Iterable[torch.Tensor]) -> torch.Tensor:
        """Set ``theta.grad`` to d L_grad / d theta; return L_grad (detached)."""
        shared = list(shared)
        norms = []
        for t in self.tasks:
            loss = losses[t]
            if not loss.requires_grad:  # a task that cannot reach the shared layer
                norms.append(torch.zeros((), device=self.theta.device))
                continue
            grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
            sq = [g.float().square().sum() for g in grads if g is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else torch.zeros((), device=self.theta.device))
        norms = torch.stack(norms).to(self.theta.device)
        current = torch.stack([losses[t].detach() for t in self.tasks]).to(self.initial)
        with torch.no_grad():
            self.initial.copy_(torch.where((self.initial == 0) & (current > 0), current, self.initial))
        ratio = torch.where(self.initial > 0, current / self.initial.clamp_min(1e-30), torch.ones_like(current))
        inverse_rate = (ratio / ratio.mean()).to(norms)
        with torch.enable_grad():
            weighted = self.current_weights() * norms
            target = (weighted.mean() * inverse_rate ** self.alpha).detach()
            l_grad = (weighted - target).abs().sum()
            (self.theta.grad,) = torch.autograd.grad(l_grad, [self.theta])
        return l_grad.detach()

    def extra_repr(self) -> str:
        return f"tasks={list(self.tasks)}, alpha={self.alpha}, total={self.total}"
