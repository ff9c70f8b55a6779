"""Training: ``fastmtl train`` and ``Trainer(TrainConfig(...)).run()``.

The paper's recipe by default: SGD with Nesterov momentum 0.9, learning rate
2.5e-3 decayed as (1 - step / steps) ** 0.9, weight decay 1e-4 on the network
(not on the log-variances), learned uncertainty weighting with s_k = 0 at
the start. The loss is ``fastmtl.MultiTaskLoss``; its log-variances are
optimised with the network.

Everything a run writes goes to ``out``:

    checkpoint.pt   latest state, written atomically every ``checkpoint_every``
                    steps and on exit; Ctrl-C or SIGTERM stops at the next step
                    boundary and checkpoints (a second one aborts at once)
    log.jsonl       one JSON object per line: training losses, sigmas, lr
                    every ``log_every`` steps; validation metrics
    losses.png, sigmas.png, metrics.png   plots of the log
    config.json     the configuration

Resume (``resume=True``) restores model, log-variances, optimiser, scheduler,
gradient scaler, step and RNG states, and continues the data order exactly:
the order of an epoch is a permutation seeded by (seed, epoch) and
augmentation draws from a generator seeded by (seed, epoch, sample index), so
an interrupted and resumed run sees the same batches as an uninterrupted one,
with or without data-loader workers, and on CPU ends with bitwise the same
parameters. (Keep ``num_workers`` unchanged across the resume for that with
``augment="full"``: image resampling rounds differently with the number of
threads a process uses, and workers use one.)

Multi-GPU: launch with torchrun; see ``fastmtl.distributed`` for how the loss
is normalised across ranks. ``batch_size`` is per process.
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fastmtl import checkpoint, distributed
from fastmtl.loss import MultiTaskLoss
from fastmtl.tasks import TASK_ORDER, canonical_tasks
from fastmtl.weighting import CONVENTIONS, FixedWeighting, UncertaintyWeighting

WEIGHTINGS = ("uncertainty", "equal", "fixed", "single")
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
    weighting: str = "uncertainty"   # "uncertainty", "equal", "fixed", "single"
    weights: tuple[float, ...] | None = None  # "fixed": one weight per task, in task order
    convention: str = "kendall"      # uncertainty convention (fastmtl.weighting.CONVENTIONS)
    init_log_var: float = 0.0
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

    def __post_init__(self):
        self.tasks = canonical_tasks(self.tasks)
        if self.weights is not None:
            self.weights = tuple(float(w) for w in self.weights)
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

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"] = list(self.tasks)
        d["weights"] = None if self.weights is None else list(self.weights)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


def build_weighting(cfg: TrainConfig) -> nn.Module:
    if cfg.weighting == "uncertainty":
        return UncertaintyWeighting(cfg.tasks, init=cfg.init_log_var, convention=cfg.convention)
    if cfg.weighting == "equal":
        return FixedWeighting({t: 1.0 for t in cfg.tasks})  # the unweighted sum of the losses
    if cfg.weighting == "fixed":
        return FixedWeighting(dict(zip(cfg.tasks, cfg.weights)))
    return FixedWeighting.single(cfg.tasks[0])


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


def build_model(cfg: TrainConfig, size: tuple[int, int] | None):
    from fastmtl.models import build_model as build

    return build(cfg.model, num_classes=19, tasks=cfg.tasks, width=cfg.width, resolution=size,
                 backbone=cfg.backbone)


class SeededAugmentation(Dataset):
    """Samples of ``base`` augmented with a generator seeded by (seed, epoch, index).

    Set ``epoch`` before creating the epoch's DataLoader: workers copy it.
    Augmentation is then a pure function of the sample and the epoch, so the
    data a step sees does not depend on worker count or on where a run resumed.
    """

    def __init__(self, base: Dataset, augment: str, seed: int, crop_size=None):
        self.base, self.augment, self.seed, self.crop_size, self.epoch = base, augment, seed, crop_size, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        from fastmtl.data import transforms as T

        sample = self.base[index]
        if self.augment == "none":
            return sample
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2, np.uint64)
        g = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
        if self.augment == "flip":
            return T.RandomHorizontalFlip(generator=g)(sample)
        size = self.crop_size or tuple(sample["image"].shape[-2:])
        return T.train_transform(crop_size=size, scale=(0.5, 2.0), flip=True, generator=g)(sample)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (after ``start`` samples of this rank)."""

    start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self):
        return super().__len__() - self.start


class Objective(nn.Module):
    """Network + loss in one module, so DDP averages the log-variance gradients too.

    With ``upsample_in_loss`` the network returns its head-resolution outputs
    and the loss upsamples them (fused in the Triton kernel, docs/upsample.md).
    """

    def __init__(self, model: nn.Module, criterion: MultiTaskLoss, amp: str, device: torch.device,
                 upsample_in_loss: bool = False):
        super().__init__()
        self.model, self.criterion = model, criterion
        self.amp, self.device_type, self.upsample_in_loss = amp, device.type, upsample_in_loss

    def forward(self, images, targets):
        with autocast(self.amp, self.device_type):
            predictions = self.model(images, upsample=not self.upsample_in_loss)
        out = self.criterion(predictions, targets)  # the loss reads half precision and accumulates in fp32
        return out.total, out.losses


def autocast(amp: str, device_type: str):
    if amp == "none":
        return nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class _StopOnSignal:
    """First SIGINT or SIGTERM: stop at the next step boundary. Second: KeyboardInterrupt at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False


class Trainer:
    """``Trainer(config).run()`` trains, checkpoints, evaluates and plots; returns a summary dict."""

    def __init__(self, config: TrainConfig, ctx: distributed.Context | None = None):
        self.cfg = cfg = config
        self.ctx = ctx or distributed.init(cfg.device)
        self.device = self.ctx.device
        self.out = Path(cfg.out)
        checkpoint.seed_everything(cfg.seed + self.ctx.rank)

        self.root = resolve_data(cfg, self.ctx)
        self.train_set, self.val_set = build_datasets(cfg, self.root)
        size = tuple(self.train_set[0]["image"].shape[-2:]) if self.train_set.size is None else self.train_set.size
        self.size = size
        self.data = SeededAugmentation(self.train_set, cfg.augment, cfg.seed, crop_size=size)
        self.sampler = ResumableSampler(self.data, num_replicas=self.ctx.world_size, rank=self.ctx.rank,
                                        shuffle=True, seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.train_set)} training images give no full batch of "
                             f"{cfg.batch_size} per process ({self.ctx.world_size} process(es))")

        self.model = build_model(cfg, size).to(self.device)
        self.criterion = MultiTaskLoss(cfg.tasks, build_weighting(cfg), backend=cfg.backend,
                                       upsample="bilinear" if cfg.upsample_in_loss else None,
                                       align_corners=False).to(self.device)  # as the model's own upsampling
        if cfg.sync_bn and self.ctx.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.objective = Objective(self.model, self.criterion, cfg.amp, self.device, cfg.upsample_in_loss)
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)

        groups = [{"params": list(self.model.parameters()), "weight_decay": cfg.weight_decay}]
        loss_params = list(self.criterion.parameters())
        if loss_params:
            groups.append({"params": loss_params, "weight_decay": 0.0, "lr": cfg.log_var_lr or cfg.lr})
        self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        self.scheduler = torch.optim.lr_scheduler.PolynomialLR(self.optimizer, total_iters=cfg.steps,
                                                               power=cfg.poly_power)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.step = 0
        self.saved_step = -1
        self.log_path = self.out / "log.jsonl"
        self.checkpoint_path = self.out / "checkpoint.pt"
        if cfg.resume and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)

    # --- state -----------------------------------------------------------------------------

    def state_dict(self, rng: list) -> dict:
        return {
            "format": "fastmtl-train", "version": 1, "step": self.step, "config": self.cfg.to_dict(),
            "size": list(self.size), "world_size": self.ctx.world_size,
            "model": self.model.state_dict(), "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng,
        }

    def save(self) -> None:
        """Checkpoint (all ranks call it at the same step; rank 0 writes)."""
        rng = distributed.all_gather_objects(self.ctx, checkpoint.rng_state())
        if self.ctx.is_main:
            checkpoint.save(self.state_dict(rng), self.checkpoint_path)
        distributed.barrier(self.ctx)
        self.saved_step = self.step

    def load(self, path) -> None:
        state = checkpoint.load(path)  # on the CPU; load_state_dict copies to the device
        if state.get("format") != "fastmtl-train":
            raise checkpoint.CheckpointError(f"{path} is not a fastmtl training checkpoint")
        saved = TrainConfig.from_dict(state["config"])
        for key in ("model", "width", "tasks", "weighting", "weights", "convention", "steps", "size"):
            if getattr(saved, key) != getattr(self.cfg, key):
                raise ValueError(f"cannot resume from {path}: it was trained with {key}={getattr(saved, key)!r}, "
                                 f"this run has {key}={getattr(self.cfg, key)!r}")
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = self.saved_step = int(state["step"])
        rng = state.get("rng") or []
        if len(rng) == self.ctx.world_size:
            checkpoint.set_rng_state(rng[self.ctx.rank])
        else:
            warnings.warn(f"{path} holds RNG states of {len(rng)} process(es), this run has "
                          f"{self.ctx.world_size}: reseeding from (seed, rank, step)")
            checkpoint.seed_everything(self.cfg.seed + 1000 * self.step + self.ctx.rank)
        self._trim_log()

    def _trim_log(self) -> None:
        """Drop log records past the checkpoint's step (written before a crash)."""
        if not (self.ctx.is_main and self.log_path.is_file()):
            return
        from fastmtl.plots import read_log

        kept = [r for r in read_log(self.log_path) if r.get("step", 0) <= self.step]
        tmp = self.log_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.log_path)

    # --- loop ------------------------------------------------------------------------------

    def batches(self):
        """Batches from ``self.step`` on, continuing the exact data order after a resume."""
        cfg = self.cfg
        while True:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            self.sampler.start = offset * cfg.batch_size
            self.data.epoch = epoch
            loader = DataLoader(self.data, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
                                num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                                generator=torch.Generator().manual_seed(cfg.seed + epoch))
            for batch in loader:
                yield batch

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device, non_blocking=True)
        targets = {k: batch[k].to(self.device, non_blocking=True) for k in TARGET_KEYS if k in batch}
        self.objective.train()
        total, losses = self.objective(images, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return {"total": total.detach(), **{k: v.detach() for k, v in losses.items()}}

    def run(self, until: int | None = None) -> dict:
        """Train up to step ``until`` (default: ``steps``), evaluate, plot; return a summary."""
        cfg, ctx = self.cfg, self.ctx
        until = cfg.steps if until is None else min(until, cfg.steps)
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
            if self.step == 0:  # a new run: no records of an earlier one in the same directory
                self.log_path.unlink(missing_ok=True)
        bar = None
        if ctx.is_main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=until, initial=self.step, desc="train", dynamic_ncols=True)
        metrics, completed, started = {}, False, time.time()
        stop = _StopOnSignal()
        try:
            with stop:
                batches = self.batches()
                while self.step < until:
                    if self._stop_requested(stop):
                        break
                    losses = self.train_step(next(batches))
                    if bar is not None:
                        bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == until:
                        record = self._log_train(losses, time.time() - started)
                        if bar is not None:
                            bar.set_postfix_str(_postfix(record), refresh=False)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.save()
                    if cfg.eval_every > 0 and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                        metrics = self.validate()
            completed = True
        finally:
            if bar is not None:
                bar.close()
            # Every rank stopped at the same step boundary unless an exception escaped on one of
            # them; then only a single process can still save safely (no collectives).
            if (completed or not ctx.distributed) and self.saved_step != self.step:
                self.save()
        if stop.requested:
            if ctx.is_main:
                self.plot()
            raise KeyboardInterrupt(f"stopped at step {self.step}; checkpoint {self.checkpoint_path}")
        if self.step >= cfg.steps and cfg.eval_every >= 0:
            metrics = self.validate()
        if ctx.is_main:
            self.plot()
        return {"step": self.step, "metrics": metrics, "out": str(self.out),
                "checkpoint": str(self.checkpoint_path), "seconds": time.time() - started}

    def _stop_requested(self, stop: _StopOnSignal) -> bool:
        flag = stop.requested
        if self.ctx.distributed:  # all ranks stop at the same step
            t = torch.tensor([int(flag)], device=self.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(t.item())
            stop.requested = stop.requested or flag
        return flag

    def _log_train(self, losses, elapsed) -> dict:
        record = {"kind": "train", "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                  "time": round(elapsed, 3)}
        values = {k: float(v) for k, v in losses.items()}
        record["total"] = values.pop("total")
        record["losses"] = values
        weighting = self.criterion.weighting
        if isinstance(weighting, UncertaintyWeighting):
            record["log_var"] = dict(zip(weighting.tasks, weighting.log_vars.detach().cpu().tolist()))
            record["sigma"] = weighting.sigmas()
        record["weight"] = weighting.effective_weights()
        self._write_log(record)
        return record

    def _write_log(self, record: dict) -> None:
        if not self.ctx.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_finite(record)) + "\n")

    def validate(self) -> dict[str, float]:
        from fastmtl.evaluate import evaluate

        distributed.broadcast_buffers(self.ctx, self.model)
        metrics = evaluate(self.model, self.val_set, batch_size=self.cfg.batch_size, device=self.device,
                           amp=self.cfg.amp, limit=self.cfg.val_limit, ctx=self.ctx)
        self._write_log({"kind": "val", "step": self.step, "metrics": metrics})
        return metrics

    def plot(self) -> list[Path]:
        if not self.log_path.is_file():
            return []
        try:
            from fastmtl.plots import plot_training

            return plot_training(self.log_path, self.out)
        except ImportError as e:  # matplotlib is optional (the "plots" extra)
            warnings.warn(f"no plots written: {e}")
            return []


def _finite(obj):
    """NaN and inf become null, so the log is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _postfix(record: dict) -> str:
    parts = [f"{k[:3]} {v:.3f}" for k, v in record["losses"].items()]
    parts += [f"σ{k[:3]} {v:.2f}" for k, v in (record.get("sigma") or {}).items()]
    return " ".join(parts)


def train(config: TrainConfig | None = None, **overrides) -> dict:
    """Train with ``config`` (or ``TrainConfig(**overrides)``); return the run summary."""
    cfg = dataclasses.replace(config, **overrides) if config is not None else TrainConfig(**overrides)
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        distributed.shutdown(trainer.ctx)


# --- command line ---------------------------------------------------------------------------

def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.replace(",", " ").split())


def _tasks(text: str) -> tuple[str, ...]:
    return canonical_tasks([t for t in text.replace(",", " ").split() if t])


def add_config_arguments(parser, defaults: TrainConfig | None = None) -> None:
    d = defaults or TrainConfig()
    a = parser.add_argument
    a("--out", default=d.out, help="run directory (checkpoint, log, plots); default %(default)s")
    a("--data", default=d.data, help="'synthetic' or a Cityscapes root (leftImg8bit/, gtFine/, disparity/)")
    a("--synthetic-n", type=int, default=d.synthetic_n, help="synthetic train scenes (val: n // 4)")
    a("--size", default=d.size, help="image size: tiny (128x256), half, full, HxW or native")
    a("--augment", choices=AUGMENTATIONS, default=d.augment, help="training augmentation")
    a("--workers", dest="num_workers", type=int, default=d.num_workers, help="data-loader workers")
    a("--model", default=d.model, help="model preset: tiny, resnet18, resnet34, resnet50, resnet101")
    a("--width", type=int, default=d.width, help="override the ResNet stem width")
    a("--backbone", default=d.backbone, help="local torchvision-format ResNet weights for the encoder")
    a("--tasks", type=_tasks, default=d.tasks, help="comma-separated subset of semantic,instance,depth")
    a("--weighting", choices=WEIGHTINGS, default=d.weighting,
      help="uncertainty (learned), equal (unweighted sum), fixed (--weights) or single (one task)")
    a("--weights", type=_floats, default=d.weights, help="fixed weights, e.g. 0.89,0.01,0.1 (task order)")
    a("--convention", choices=tuple(CONVENTIONS), default=d.convention, help="uncertainty convention")
    a("--steps", type=int, default=d.steps)
    a("--batch-size", type=int, default=d.batch_size, help="per process")
    a("--lr", type=float, default=d.lr)
    a("--momentum", type=float, default=d.momentum)
    a("--no-nesterov", dest="nesterov", action="store_false")
    a("--weight-decay", type=float, default=d.weight_decay)
    a("--poly-power", type=float, default=d.poly_power)
    a("--log-var-lr", type=float, default=d.log_var_lr, help="learning rate of the log-variances (default --lr)")
    a("--amp", choices=AMP_MODES, default=d.amp, help="mixed precision: bf16 autocast or fp16 with GradScaler")
    a("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun (CUDA)")
    a("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    a("--seed", type=int, default=d.seed)
    a("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps; 0 = only on exit")
    a("--eval-every", type=int, default=d.eval_every, help="steps; 0 = at the end only; -1 = never")
    a("--val-limit", type=int, default=d.val_limit, help="validate on the first N val images")
    a("--log-every", type=int, default=d.log_every)
    a("--no-progress", dest="progress", action="store_false")
    a("--backend", default=d.backend, help="loss backend: auto, reference, triton")
    a("--full-resolution-loss", dest="upsample_in_loss", action="store_false",
      help="upsample the heads in the network and take the loss at full resolution; by default the loss "
           "takes the 1/8-resolution heads and fuses the upsampling (no full-resolution logits on CUDA)")


def config_from_args(args) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a multi-task network",
                              description="Train on the synthetic city or Cityscapes. Launch with torchrun "
                                          "for several GPUs or nodes.")
    add_config_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    p.set_defaults(func=_main)


def _main(args) -> int:
    try:
        summary = train(config_from_args(args))
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130
    if summary["metrics"]:
        print(json.dumps({k: v for k, v in summary["metrics"].items() if not k.startswith("iou_")}, indent=2))
    print(f"run directory: {summary['out']}")
    return 0
