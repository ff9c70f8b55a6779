"""fastmtl: fast multi-task dense scene understanding.

One network predicts per-pixel semantics, instance offsets and depth; the task
losses are weighed by learned homoscedastic uncertainty (Kendall, Gal and
Cipolla, CVPR 2018). On CUDA the three losses, their weighting and all their
gradients are computed by one fused Triton pass.
"""
from fastmtl import _moved
from fastmtl.functional import LossOutput, multitask_loss
from fastmtl.module import MultiTaskLoss
from fastmtl.tasks import TASK_ORDER, TASKS
from fastmtl.weighting import (CONVENTIONS, DynamicWeightAverage, FixedWeighting, GradNorm,
                               RandomLossWeighting, UncertaintyWeighting)

__version__ = "0.2.0.dev0"

_moved.install()  # 0.1.0 module paths keep working for one release, with a warning

__all__ = [
    "CONVENTIONS",
    "DynamicWeightAverage",
    "FixedWeighting",
    "GradNorm",
    "LossOutput",
    "MultiTaskLoss",
    "RandomLossWeighting",
    "TASKS",
    "TASK_ORDER",
    "UncertaintyWeighting",
    "multitask_loss",
]
