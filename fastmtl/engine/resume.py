"""What a resumed run may change, and how a change is applied.

A checkpoint records the configuration it was trained with; a resumed run's
configuration (config.json, the next checkpoints) must describe what the run
really does. So every setting is either applied from the resume on or refused:

- ``APPLIED``: optimiser settings (``lr``, ``log_var_lr``, ``momentum``,
  ``nesterov``, ``weight_decay``: written into the restored optimiser and
  learning-rate schedule, so the new rate follows the same poly decay from the
  current step) and settings that hold no state (where the data lies, workers,
  device, loss backend, where the upsampling happens, bookkeeping intervals).
- everything else is refused, with each changed key and its old and new value:
  what shapes the model, the loss weighting, the data order and augmentation,
  the schedule's length and shape, the precision, the seed. Settings a checkpoint
  does not know (newer options) are refused when they differ from their default.
"""
from __future__ import annotations

import dataclasses
import warnings

import torch

OPTIMISER_KEYS = ("lr", "log_var_lr", "momentum", "nesterov", "weight_decay")
APPLIED = OPTIMISER_KEYS + (
    "out", "data", "num_workers", "device", "backend", "backbone", "upsample_in_loss", "sync_bn",
    "checkpoint_every", "eval_every", "val_limit", "log_every", "progress", "resume", "overwrite",
    "max_bad_steps")


class ResumeError(ValueError):
    """The run asks to change settings that a resume cannot honour."""


def changes(saved: dict, current) -> dict[str, tuple]:
    """{key: (checkpoint's value, this run's value)} for every setting that differs."""
    now = current.to_dict()
    defaults = _defaults(current)
    out = {}
    for key, new in now.items():
        old = saved.get(key, defaults.get(key))
        if _norm(old) != _norm(new):
            out[key] = (old, new)
    return out


def _defaults(cfg) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def check(saved: dict, current, path) -> dict[str, tuple]:
    """Refuse the changes a resume cannot apply; return those it applies."""
    changed = changes(saved, current)
    refused = {k: v for k, v in changed.items() if k not in APPLIED}
    if refused:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ResumeError(
            f"cannot resume from {path} with changed settings (checkpoint -> this run): {listed}; "
            f"resume with the checkpoint's values, or start a new run (--overwrite, or another --out). "
            f"A resume may change {', '.join(OPTIMISER_KEYS)} and the options that hold no state")
    applied = {k: v for k, v in changed.items() if k not in ("resume", "overwrite")}
    if applied:
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in applied.items())
        warnings.warn(f"resuming from {path} with changed settings, applied from here on: {listed}",
                      stacklevel=3)
    return applied


def apply_optimiser_settings(optimizer: torch.optim.Optimizer, scheduler, cfg, step: int) -> None:
    """Write ``cfg``'s optimiser settings into a restored optimiser and poly schedule.

    Group 0 holds the network (weight decay ``cfg.weight_decay``), group 1, if any,
    the loss's parameters (no weight decay, rate ``log_var_lr`` or ``lr``). The rate
    at ``step`` is base * (1 - step / steps) ** power, where the schedule continues.
    """
    bases = [cfg.lr, cfg.log_var_lr or cfg.lr]
    decay = (1.0 - min(step, cfg.steps) / cfg.steps) ** cfg.poly_power
    for i, group in enumerate(optimizer.param_groups):
        base = bases[min(i, 1)]
        group.update(initial_lr=base, lr=base * decay, momentum=cfg.momentum, nesterov=cfg.nesterov)
        if i == 0:
            group["weight_decay"] = cfg.weight_decay
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
