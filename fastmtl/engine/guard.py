"""The divergence guard: training stops on a non-finite loss or parameter.

After every step the guard reads one pair of flags back from the device (all
losses finite; every parameter and floating buffer, BatchNorm statistics
included, finite, from one multi-tensor norm), all-reduced under torchrun so
every rank stops at the same step. A parameter that is not finite stops
training at once and names the parameter. A non-finite loss stops it at once
too, except under fp16 loss scaling: ``torch.amp.GradScaler`` skips a step whose
gradients are not finite (the parameters stay as they were), so up to
``tolerate`` consecutive such steps pass before the run stops. The trainer then
writes nothing more: the last checkpoint on disk is the last good state.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or parameter (the message names the step and what)."""


def _describe(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


class DivergenceGuard:
    """``check(step, losses)`` after each optimiser step; raises DivergenceError."""

    def __init__(self, modules: dict[str, nn.Module], tolerate: int = 0, ctx=None):
        self.named = [(f"{prefix}{name}", t) for prefix, module in modules.items()
                      for name, t in (*module.named_parameters(), *module.named_buffers())
                      if t.is_floating_point() and t.numel() > 0]
        self.tolerate = tolerate
        self.ctx = ctx
        self.bad_steps = 0  # consecutive steps with a non-finite loss

    def _finite_state(self) -> torch.Tensor:
        # One multi-tensor kernel; a NaN or inf anywhere makes its tensor's norm non-finite (so
        # does a value beyond ~1e19, whose square overflows: a diverging run all the same).
        norms = torch._foreach_norm([t.detach() for _, t in self.named])
        return torch.isfinite(torch.stack([n.float() for n in norms])).all()

    def check(self, step: int, losses: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        flags = torch.stack([torch.isfinite(values).all(), self._finite_state()]).to(torch.int32)
        if self.ctx is not None and self.ctx.distributed:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
        loss_ok, state_ok = (bool(f) for f in flags.tolist())  # the one synchronisation
        if not state_ok:
            raise DivergenceError(f"training diverged at step {step}: {self._first_bad()}")
        if loss_ok:
            self.bad_steps = 0
            return
        self.bad_steps += 1
        if self.bad_steps > self.tolerate:
            bad = ", ".join(f"{k} {_describe(float(v))}" for k, v in zip(losses, values.tolist())
                            if not math.isfinite(v))
            run = f" ({self.bad_steps} consecutive steps)" if self.bad_steps > 1 else ""
            raise DivergenceError(f"training diverged at step {step}: non-finite loss {bad}{run}")

    def _first_bad(self) -> str:
        for name, t in self.named:
            t = t.detach()
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                return (f"parameter {name} holds {int(bad.sum())} non-finite value(s) "
                        f"(e.g. {_describe(float(t[bad][0]))})")
            if not torch.isfinite(torch.linalg.vector_norm(t.float())):
                return f"parameter {name} has grown to {float(t.abs().max()):.3g}, its norm overflows"
        return "a parameter is not finite on another process"
