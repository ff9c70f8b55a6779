"""``MultiTaskLoss``: the module a training loop holds."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from fastmtl.functional import LossOutput, multitask_loss
from fastmtl.tasks import TASK_ORDER, tasks_of
from fastmtl.validation import (validate_backend, validate_class_weight, validate_flag,
                                validate_ignore_index, validate_upsample)
from fastmtl.weighting import UncertaintyWeighting


class MultiTaskLoss(nn.Module):
    """Dict of predictions + dict of targets -> ``LossOutput(total, losses)``.

    Holds the weighting (by default learned uncertainty over ``tasks``), so its
    parameters (the log-variances) belong in the optimiser::

        criterion = fastmtl.MultiTaskLoss()
        optimizer = torch.optim.SGD([*model.parameters(), *criterion.parameters()], lr=...)
        out = criterion(model(images), targets)
        out.total.backward()

    ``upsample="bilinear"`` (and ``align_corners``) takes predictions at a lower
    resolution than the targets, as ``fastmtl.multitask_loss``.

    Every argument is checked here, when the module is built (``class_weight``:
    (C,), finite, >= 0, positive sum; the rest as in ``fastmtl.multitask_loss``),
    so a mistake fails at construction rather than at the first forward.
    """

    def __init__(self, tasks: Sequence[str] = TASK_ORDER, weighting: nn.Module | None = None, *,
                 ignore_index: int = 255, class_weight: torch.Tensor | None = None,
                 backend: str = "auto", check_labels: bool = True,
                 upsample: str | None = None, align_corners: bool = False):
        super().__init__()
        if weighting is not None and not callable(getattr(weighting, "loss_kwargs", None)):
            raise TypeError(f"weighting must be a fastmtl weighting (an nn.Module with loss_kwargs(tasks)), "
                            f"got {type(weighting).__name__}")
        self.weighting = weighting if weighting is not None else UncertaintyWeighting(tasks)
        self.ignore_index = validate_ignore_index(ignore_index)
        self.backend = validate_backend(backend)
        self.check_labels = validate_flag(check_labels, "check_labels")
        # Low-resolution predictions scored at the targets' resolution (docs/upsample.md).
        validate_upsample(upsample)
        self.upsample = upsample
        self.align_corners = validate_flag(align_corners, "align_corners")
        if class_weight is not None:
            validate_class_weight(class_weight)
            self.register_buffer("class_weight", class_weight.detach().clone())
        else:
            self.class_weight = None

    def forward(self, predictions: Mapping[str, torch.Tensor],
                targets: Mapping[str, torch.Tensor]) -> LossOutput:
        tasks = tasks_of(predictions)
        return multitask_loss(predictions, targets, **self.weighting.loss_kwargs(tasks),
                              ignore_index=self.ignore_index, class_weight=self.class_weight,
                              backend=self.backend, check_labels=self.check_labels,
                              upsample=self.upsample, align_corners=self.align_corners)
