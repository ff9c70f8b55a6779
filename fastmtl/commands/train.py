"""``fastmtl train``: the command line of the trainer (every ``TrainConfig`` field is an option)."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from fastmtl.engine.config import AMP_MODES, AUGMENTATIONS, WEIGHTINGS, TrainConfig
from fastmtl.engine.strict_json import dumps
from fastmtl.engine.trainer import train
from fastmtl.tasks import canonical_tasks
from fastmtl.weighting import CONVENTIONS


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _tasks(text: str) -> tuple[str, ...]:
    try:
        return canonical_tasks([t for t in text.replace(",", " ").split() if t])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_config_arguments(parser, defaults: TrainConfig | None = None) -> None:
    d = defaults or TrainConfig()
    a = parser.add_argument
    a("--out", default=d.out, help="run directory (checkpoint, log, plots)")
    a("--data", default=d.data, help="'synthetic' or a Cityscapes root (leftImg8bit/, gtFine/, disparity/)")
    a("--synthetic-n", type=int, default=d.synthetic_n, help="synthetic train scenes (val: n // 4)")
    a("--size", default=d.size, help="image size: tiny (128x256), half, full, HxW or native")
    a("--augment", choices=AUGMENTATIONS, default=d.augment, help="training augmentation")
    a("--workers", dest="num_workers", type=int, default=d.num_workers, help="data-loader workers")
    a("--model", default=d.model, help="model preset: tiny, resnet18, resnet34, resnet50, resnet101")
    a("--width", type=int, default=d.width, help="override the ResNet stem width (default: the preset's)")
    a("--backbone", default=d.backbone, help="local torchvision-format ResNet weights for the encoder")
    a("--tasks", type=_tasks, default=",".join(d.tasks), help="comma-separated subset of semantic,instance,depth")
    a("--weighting", choices=WEIGHTINGS, default=d.weighting,
      help="uncertainty (learned), equal (equal weights summing to 1: thirds), fixed (--weights), single "
           "(one task), dwa (Dynamic Weight Average), rlw (Random Loss Weighting) or gradnorm")
    a("--weights", type=_floats, default=d.weights, help="fixed weights, e.g. 0.89,0.01,0.1 or 1,1,1 (task order)")
    a("--convention", choices=tuple(CONVENTIONS), default=d.convention, help="uncertainty convention")
    a("--log-var-clamp", type=_floats, default=d.log_var_clamp, metavar="LO,HI",
      help="uncertainty: clamp the log-variances the loss uses to [LO, HI]")
    a("--dwa-temperature", type=float, default=d.dwa_temperature, help="dwa: softmax temperature")
    a("--gradnorm-alpha", type=float, default=d.gradnorm_alpha, help="gradnorm: restoring-force strength")
    a("--steps", type=int, default=d.steps, help="optimiser steps")
    a("--batch-size", type=int, default=d.batch_size, help="images per step, per process")
    a("--lr", type=float, default=d.lr, help="learning rate, decayed as (1 - step/steps)^poly-power")
    a("--momentum", type=float, default=d.momentum, help="SGD momentum")
    a("--no-nesterov", dest="nesterov", action="store_false", help="plain momentum instead of Nesterov's")
    a("--weight-decay", type=float, default=d.weight_decay, help="on the network, never on the log-variances")
    a("--poly-power", type=float, default=d.poly_power, help="power of the poly learning-rate decay")
    a("--log-var-lr", type=float, default=d.log_var_lr, help="learning rate of the log-variances (default: --lr)")
    a("--amp", choices=AMP_MODES, default=d.amp, help="mixed precision: bf16 autocast or fp16 with GradScaler")
    a("--max-bad-steps", type=int, default=d.max_bad_steps,
      help="with --amp fp16: consecutive steps with a non-finite loss (skipped by GradScaler) tolerated "
           "before training stops; without fp16 a non-finite loss stops it at once")
    a("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun (CUDA)")
    a("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    a("--seed", type=int, default=d.seed, help="initialisation, data order and augmentation")
    a("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps; 0 = only on exit")
    a("--eval-every", type=int, default=d.eval_every, help="steps; 0 = at the end only; -1 = never")
    a("--val-limit", type=int, default=d.val_limit, help="validate on the first N val images (default: all)")
    a("--log-every", type=int, default=d.log_every, help="steps between log records")
    a("--no-progress", dest="progress", action="store_false", help="no progress bar")
    a("--backend", default=d.backend, help="loss backend: auto, reference, triton")
    a("--full-resolution-loss", dest="upsample_in_loss", action="store_false",
      help="upsample the heads in the network and take the loss at full resolution; by default the loss "
           "takes the 1/8-resolution heads and fuses the upsampling (no full-resolution logits on CUDA)")


def config_from_args(args) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a multi-task network",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                              description="Train on the synthetic city or Cityscapes. Launch with torchrun "
                                          "for several GPUs or nodes.")
    add_config_arguments(p)
    runs = p.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its checkpoint.pt (changed optimiser settings "
                           "are applied, other changes refused)")
    runs.add_argument("--overwrite", action="store_true",
                      help="start afresh in an --out that holds a run: removes its checkpoint, log, plots "
                           "and recorded eval/predict outputs")
    p.set_defaults(func=_main)


def _main(args) -> int:
    try:
        summary = train(config_from_args(args))
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130
    if summary["metrics"]:
        print(dumps({k: v for k, v in summary["metrics"].items() if not k.startswith("iou_")}, indent=2))
    print(f"run directory: {summary['out']}")
    return 0
