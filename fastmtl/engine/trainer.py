"""Training: ``Trainer(TrainConfig(...)).run()`` and ``train(...)`` (``fastmtl train`` on the command line).

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

A directory that already holds a run is refused unless ``resume=True`` (continue
it) or ``overwrite=True`` (remove that run's files first; ``fastmtl.engine.rundir``).
A non-finite loss or parameter stops training with ``DivergenceError`` naming the
step and what went wrong, and nothing more is saved, so the last checkpoint is
the last good state (``fastmtl.engine.guard``; under fp16 loss scaling up to
``max_bad_steps`` consecutive skipped steps are tolerated).

Resume (``resume=True``) restores model, log-variances, optimiser, scheduler,
gradient scaler, step and RNG states, and continues the data order exactly:
the order of an epoch is a permutation seeded by (seed, epoch) and
augmentation draws from a generator seeded by (seed, epoch, sample index), so
an interrupted and resumed run sees the same batches as an uninterrupted one,
with or without data-loader workers, and on CPU ends with bitwise the same
parameters. (Keep ``num_workers`` unchanged across the resume for that with
``augment="full"``: image resampling rounds differently with the number of
threads a process uses, and workers use one.) Settings changed on resume are
applied (the optimiser's, and those without state) or refused with each changed
value named (``fastmtl.engine.resume``).

Multi-GPU: launch with torchrun; see ``fastmtl.engine.distributed`` for how the loss
is normalised across ranks. ``batch_size`` is per process.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from fastmtl.engine import checkpoint, distributed, guard, resume, rundir, strict_json
from fastmtl.engine.config import (TARGET_KEYS, TrainConfig, build_datasets, build_weighting,
                                   model_from_config, resolve_data, shared_layer)
from fastmtl.engine.objective import Objective
from fastmtl.engine.sampling import ResumableSampler, SeededAugmentation
from fastmtl.module import MultiTaskLoss
from fastmtl.weighting import UncertaintyWeighting

STATE_KEYS = ("step", "config", "size", "model", "criterion", "optimizer", "scheduler", "scaler")


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
        rundir.check(self.out, resume=cfg.resume, overwrite=cfg.overwrite)
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

        self.model = model_from_config(cfg, size).to(self.device)
        self.criterion = MultiTaskLoss(cfg.tasks, build_weighting(cfg, self.steps_per_epoch), backend=cfg.backend,
                                       upsample="bilinear" if cfg.upsample_in_loss else None,
                                       align_corners=False).to(self.device)  # as the model's own upsampling
        # Hooks of adaptive weightings: GradNorm balances the per-task gradients at the layer the
        # heads share before each backward; DWA reads each step's losses after the step.
        self.balance = getattr(self.criterion.weighting, "balance", None)
        self.observe = getattr(self.criterion.weighting, "observe", None)
        if self.balance is not None and self.ctx.distributed:
            raise ValueError(f"weighting {cfg.weighting!r} is not supported under torchrun: it needs "
                             "per-task gradients of one process's shared layer")
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
        self.diverged = False
        self.divergence = guard.DivergenceGuard({"": self.model, "loss.": self.criterion}, ctx=self.ctx,
                                                tolerate=cfg.max_bad_steps if self.scaler.is_enabled() else 0)
        self.log_path = self.out / rundir.LOG
        self.checkpoint_path = self.out / rundir.CHECKPOINT
        if cfg.resume and self.checkpoint_path.is_file():
            self.load(self.checkpoint_path)
        distributed.barrier(self.ctx)  # every rank has read the old run before it is removed
        if self.ctx.is_main:
            rundir.start(self.out, overwrite=cfg.overwrite)

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
        """Checkpoint (all ranks call it at the same step; rank 0 writes); never a diverged state."""
        if self.diverged:
            return
        rng = distributed.all_gather_objects(self.ctx, checkpoint.rng_state())
        if self.ctx.is_main:
            checkpoint.save(self.state_dict(rng), self.checkpoint_path)
        distributed.barrier(self.ctx)
        self.saved_step = self.step

    def load(self, path) -> None:
        state = checkpoint.require(checkpoint.load(path), STATE_KEYS, path)  # on the CPU
        applied = resume.check(state["config"], self.cfg, path)
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = self.saved_step = int(state["step"])
        if set(applied) & set(resume.OPTIMISER_KEYS):
            resume.apply_optimiser_settings(self.optimizer, self.scheduler, self.cfg, self.step)
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
        from fastmtl.engine.plots import read_log

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
        if self.balance is not None:
            self.balance(losses, shared_layer(self.model))
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        detached = {k: v.detach() for k, v in losses.items()}
        if self.observe is not None:
            self.observe(detached)
        return {"total": total.detach(), **detached}

    def check_divergence(self, losses) -> None:
        """After a step: stop on a non-finite loss or parameter, saving nothing more."""
        try:
            self.divergence.check(self.step, losses)
        except guard.DivergenceError as e:
            self.diverged = True
            kept = (f"{self.checkpoint_path} still holds step {self.saved_step}" if self.saved_step >= 0
                    else "no checkpoint was written")
            self._write_log({"kind": "diverged", "step": self.step, "message": str(e)})
            hint = "; --max-bad-steps tolerates more skipped steps" if self.scaler.is_enabled() else ""
            raise guard.DivergenceError(f"{e}; stopped without saving: {kept}. Lower --lr or check the data{hint}") from None

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
                    self.check_divergence(losses)
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
            _raise_pending_label_errors()
            completed = True
        finally:
            if bar is not None:
                bar.close()
            # Every rank stopped at the same step boundary unless an exception escaped on one of
            # them; then only a single process can still save safely (no collectives).
            if (completed or not ctx.distributed) and self.saved_step != self.step and not self.diverged:
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
            f.write(strict_json.dumps(record) + "\n")

    def validate(self) -> dict[str, float]:
        from fastmtl.engine.evaluation import evaluate

        distributed.broadcast_buffers(self.ctx, self.model)
        metrics = evaluate(self.model, self.val_set, batch_size=self.cfg.batch_size, device=self.device,
                           amp=self.cfg.amp, limit=self.cfg.val_limit, ctx=self.ctx)
        self._write_log({"kind": "val", "step": self.step, "metrics": metrics})
        return metrics

    def plot(self) -> list[Path]:
        if not self.log_path.is_file():
            return []
        try:
            from fastmtl.engine.plots import plot_training

            return plot_training(self.log_path, self.out)
        except ImportError as e:  # matplotlib is optional (the "plots" extra)
            warnings.warn(f"no plots written: {e}")
            return []


def _raise_pending_label_errors() -> None:
    """The fused loss reports a bad label of its last call on CUDA only when asked (or at exit).
    Nothing can be pending when its ops module was never imported, and importing it needs triton."""
    ops = sys.modules.get("fastmtl.ops")
    if ops is not None:
        ops.raise_pending_label_errors()


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
