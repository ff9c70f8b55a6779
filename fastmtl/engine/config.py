"""The configuration of a training run and the builders that turn it into parts.

``TrainConfig`` holds everything that defines a run (it is stored in every
checkpoint); ``build_weighting``, ``resolve_data``, ``build_datasets`` and
``model_from_config`` make the loss weighting, the data and the network from it.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fastmtl.engine import distributed
from fastmtl.tasks import TASK_ORDER, canonical_tasks
from fastmtl.weighting import (CONVENTIONS, DynamicWeightAverage, FixedWeighting, GradNorm,
                               RandomLossWeighting, UncertaintyWeighting)

# "equal": equal weights summing to 1 (thirds); weights 1, 1, 1 are "fixed" with --weights 1,1,1.
WEIGHTINGS = ("uncertainty", "equal", "fixed", "single", "dwa", "rlw", "gradnorm")
AMP_MODES = ("none", "bf16", "fp16")
AUGMENTATIONS = ("none", "flip", "full")
TARGET_KEYS = ("semantic", "instance", "instance_mask", "depth")


@dataclass
class TrainConfig:
    """Everything that defines a run (stored in its checkpoints)."""

    out: str = "runs/train"
    # data
    data: str = "synthetic"          # "synthetic" (generated and cached) or a Cityscapes root
    synthetic_n: int = 200           # synthetic: train scenes (val: n // 4)
    synthetic_seed: int = 0
    size: str = "tiny"               # "tiny" 128x256, "half", "full", "HxW" or "native"
    augment: str = "flip"            # "none", "flip", "full" (random scale 0.5-2, crop to size, flip)
    num_workers: int = 0
    # model and loss
    model: str = "tiny"              # fastmtl.models preset
    width: int | None = None
    backbone: str | None = None      # local torchvision-format ResNet weights
    tasks: tuple[str, ...] = TASK_ORDER
    weighting: str = "uncertainty"   # one of WEIGHTINGS
    weights: tuple[float, ...] | None = None  # "fixed": one weight per task, in task order
    convention: str = "kendall"      # uncertainty convention (fastmtl.weighting.CONVENTIONS)
    init_log_var: float = 0.0
    log_var_clamp: tuple[float, float] | None = None  # uncertainty: bounds of the s_k the loss uses
    dwa_temperature: float = 2.0     # "dwa": softmax temperature T (its period is one epoch)
    gradnorm_alpha: float = 1.5      # "gradnorm": strength of the pull towards equal training rates
    backend: str = "auto"            # loss backend
    upsample_in_loss: bool = True    # heads at 1/8 resolution, bilinear upsampling fused into the loss
    # optimisation (the paper's by default)
    steps: int = 2000
    batch_size: int = 8
    lr: float = 2.5e-3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    log_var_lr: float | None = None  # default: lr
    amp: str = "none"                # "none", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    sync_bn: bool = False            # SyncBatchNorm under DDP (CUDA)
    device: str = "auto"
    seed: int = 0
    # bookkeeping
    checkpoint_every: int = 500      # 0: only on exit
    eval_every: int = 0              # 0: only at the end; -1: never
    val_limit: int | None = None     # evaluate on the first N validation images
    log_every: int = 10
    progress: bool = True
    resume: bool = False             # continue from out/checkpoint.pt when it exists
    overwrite: bool = False          # start afresh in an out that holds a run (removes that run's files)
    max_bad_steps: int = 10          # amp="fp16": consecutive non-finite-loss steps GradScaler may skip

    def __post_init__(self):
        self.tasks = canonical_tasks(self.tasks)
        if self.weights is not None:
            self.weights = tuple(float(w) for w in self.weights)
        if self.log_var_clamp is not None:
            self.log_var_clamp = _bounds(self.log_var_clamp)
        for name, value, choices in (("weighting", self.weighting, WEIGHTINGS), ("amp", self.amp, AMP_MODES),
                                     ("augment", self.augment, AUGMENTATIONS),
                                     ("convention", self.convention, tuple(CONVENTIONS))):
            if value not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
        if self.weighting == "fixed" and (self.weights is None or len(self.weights) != len(self.tasks)):
            raise ValueError(f"weighting 'fixed' needs one weight per task {list(self.tasks)}, got {self.weights}")
        if self.weighting == "single" and len(self.tasks) != 1:
            raise ValueError(f"weighting 'single' trains one task, got tasks {list(self.tasks)}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        check_settings(self)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"] = list(self.tasks)
        d["weights"] = None if self.weights is None else list(self.weights)
        d["log_var_clamp"] = None if self.log_var_clamp is None else list(self.log_var_clamp)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


def build_weighting(cfg: TrainConfig, steps_per_epoch: int | None = None) -> nn.Module:
    """The weighting of ``cfg``; DWA averages the losses over periods of ``steps_per_epoch`` steps."""
    if cfg.weighting == "uncertainty":
        return UncertaintyWeighting(cfg.tasks, init=cfg.init_log_var, convention=cfg.convention,
                                    clamp=cfg.log_var_clamp)
    if cfg.weighting == "equal":
        return FixedWeighting.equal(cfg.tasks)  # the paper's unweighted sum: equal thirds
    if cfg.weighting == "fixed":
        return FixedWeighting(dict(zip(cfg.tasks, cfg.weights)))
    if cfg.weighting == "dwa":
        return DynamicWeightAverage(cfg.tasks, period=steps_per_epoch or 100, temperature=cfg.dwa_temperature)
    if cfg.weighting == "rlw":
        return RandomLossWeighting(cfg.tasks, seed=cfg.seed)
    if cfg.weighting == "gradnorm":
        return GradNorm(cfg.tasks, alpha=cfg.gradnorm_alpha)
    return FixedWeighting.single(cfg.tasks[0])


def shared_layer(model: nn.Module) -> list:
    """GradNorm's W: the weight of the last layer every head shares (the ASPP's 1x1 projection)."""
    return [model.aspp.project[0].weight]


def resolve_data(cfg: TrainConfig, ctx: distributed.Context | None = None) -> Path:
    """The Cityscapes-layout root of ``cfg.data``, generating the synthetic city on first use."""
    if cfg.data != "synthetic":
        root = Path(cfg.data)
        if not root.is_dir():
            raise FileNotFoundError(f"data root not found: {root}")
        return root
    from fastmtl.data.synth import DEFAULT_SIZE, ensure_synthetic_city

    ctx = ctx or distributed.Context()
    kwargs = dict(n=cfg.synthetic_n, seed=cfg.synthetic_seed, size=DEFAULT_SIZE)
    if ctx.is_main:
        root = ensure_synthetic_city(**kwargs)
    distributed.barrier(ctx)
    if not ctx.is_main:
        root = ensure_synthetic_city(**kwargs)
    return root


def build_datasets(cfg: TrainConfig, root: Path):
    from fastmtl.data.cityscapes import Cityscapes

    train = Cityscapes(root, "train", size=cfg.size, tasks=cfg.tasks)
    val = Cityscapes(root, "val", size=cfg.size, tasks=cfg.tasks)
    return train, val


def model_from_config(cfg: TrainConfig, size: tuple[int, int] | None):
    """The network of ``cfg`` (a ``fastmtl.models`` preset) for images of ``size``."""
    from fastmtl.models import build_model

    return build_model(cfg.model, num_classes=19, tasks=cfg.tasks, width=cfg.width, resolution=size,
                 backbone=cfg.backbone)


def _bounds(value) -> tuple[float, float]:
    """``log_var_clamp`` as (lo, hi): two finite numbers, lo < hi."""
    try:
        lo, hi = (math.nan, math.nan) if isinstance(value, str) else (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        shown = list(value) if isinstance(value, (tuple, list)) else value
        raise ValueError(f"log_var_clamp (--log-var-clamp) must be two finite numbers LO,HI with LO < HI, "
                         f"got {shown!r}")
    return lo, hi


def _number(cfg, name: str, low: float, high: float = math.inf, *, integer: bool = False,
            low_open: bool = False, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None and optional:
        return
    flag = "--" + name.replace("_", "-")
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise ValueError(f"{name} ({flag}) must be {kind}, got {value!r}")
    if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
        bound = f"> {low}" if low_open else f">= {low}"
        bound += "" if high == math.inf else f" and <= {high}"
        raise ValueError(f"{name} ({flag}) must be {bound}, got {value!r}")


def check_settings(cfg: TrainConfig) -> None:
    """Refuse values no run can use (NaN, negative rates, zero intervals, ...) before anything runs."""
    from fastmtl.data.cityscapes import resolve_size
    from fastmtl.validation import BACKENDS

    for name in ("steps", "batch_size", "synthetic_n", "log_every"):
        _number(cfg, name, 1, integer=True)
    for name in ("num_workers", "checkpoint_every", "max_bad_steps"):
        _number(cfg, name, 0, integer=True)
    _number(cfg, "eval_every", -1, integer=True)
    _number(cfg, "val_limit", 1, integer=True, optional=True)
    _number(cfg, "width", 1, integer=True, optional=True)
    _number(cfg, "lr", 0, low_open=True)
    _number(cfg, "log_var_lr", 0, low_open=True, optional=True)
    _number(cfg, "momentum", 0, 1)
    _number(cfg, "weight_decay", 0)
    _number(cfg, "poly_power", 0)
    _number(cfg, "init_log_var", -math.inf)
    _number(cfg, "dwa_temperature", 0, low_open=True)
    _number(cfg, "gradnorm_alpha", 0)
    if cfg.nesterov and cfg.momentum == 0:
        raise ValueError("Nesterov momentum needs --momentum > 0 (or --no-nesterov)")
    if cfg.weights is not None:
        if not all(math.isfinite(w) and w >= 0 for w in cfg.weights) or not any(w > 0 for w in cfg.weights):
            raise ValueError(f"weights (--weights) must be finite and >= 0, at least one > 0; got {list(cfg.weights)}")
    try:
        size = resolve_size(cfg.size)
    except (ValueError, TypeError):
        raise ValueError(f"size (--size) must be tiny, half, full, native or HxW, got {cfg.size!r}") from None
    if size is not None and min(size) < 1:
        raise ValueError(f"size (--size) must have a positive height and width, got {cfg.size!r}")
    if cfg.backend not in BACKENDS:
        raise ValueError(f"backend (--backend) must be one of {list(BACKENDS)}, got {cfg.backend!r}")
    if cfg.resume and cfg.overwrite:
        raise ValueError("give --resume (continue the run in --out) or --overwrite (start afresh), not both")
