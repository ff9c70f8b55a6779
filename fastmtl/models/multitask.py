"""The multi-task network: dilated ResNet, DeepLabV3 ASPP, one decoder per task."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks import TASK_ORDER, TASKS, canonical_tasks
from .aspp import ASPP, REFERENCE_SIZE, scaled_rates
from .resnet import ResNet, load_backbone

__all__ = ["PRESETS", "TaskHead", "MultiTaskNet", "build_model"]


class TaskHead(nn.Sequential):
    """conv 3x3 -> BN -> ReLU -> conv 1x1 to the task's channels (at 1/8 resolution)."""

    def __init__(self, in_channels: int, channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, out_channels, 1),
        )


class MultiTaskNet(nn.Module):
    """Shared encoder and ASPP, then a decoder per task.

    ``forward(x)`` returns a dict with a subset of
    ``"semantic"`` (B, num_classes, H, W) logits,
    ``"instance"`` (B, 2, H, W) offsets to the instance centroid in input pixels
    (channel 0 = dy, rows; channel 1 = dx, columns) and
    ``"depth"`` (B, 1, H, W) disparity in input pixels,
    bilinearly upsampled to the input size. With ``upsample=False`` the same
    outputs come at the head resolution, ``ceil(H / 8) x ceil(W / 8)``, for a
    loss that fuses the upsampling.
    """

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 19,
        tasks: Sequence[str] = TASK_ORDER,
        base_width: int = 64,
        aspp_channels: int = 256,
        head_channels: int = 256,
        aspp_rates: Sequence[int] | None = None,
    ):
        super().__init__()
        self.tasks = canonical_tasks(tasks)
        self.num_classes = num_classes
        self.encoder = ResNet(depth, base_width)
        rates = scaled_rates(REFERENCE_SIZE) if aspp_rates is None else aspp_rates
        self.aspp = ASPP(self.encoder.out_channels, aspp_channels, rates)
        self.heads = nn.ModuleDict(
            {t: TaskHead(aspp_channels, head_channels, TASKS[t].channels or num_classes) for t in self.tasks}
        )

    def forward(self, x: torch.Tensor, tasks: Sequence[str] | None = None, upsample: bool = True) -> dict[str, torch.Tensor]:
        tasks = self.tasks if tasks is None else tuple(tasks)
        missing = [t for t in tasks if t not in self.heads]
        if missing:
            raise ValueError(f"model has no head for {missing}; it was built with tasks={self.tasks}")
        feats = self.aspp(self.encoder(x))
        outputs = {t: self.heads[t](feats) for t in tasks}
        if upsample:
            size = x.shape[-2:]
            outputs = {t: F.interpolate(o, size=size, mode="bilinear", align_corners=False) for t, o in outputs.items()}
        return outputs

    def load_backbone(self, source) -> "MultiTaskNet":
        """Load torchvision-format ResNet weights into the encoder (see :func:`load_backbone`)."""
        load_backbone(self.encoder, source)
        return self


# width: ResNet stem width; ASPP and head widths default to 4 * width (256 at
# the standard 64). resolution: image size the ASPP rates are scaled to.
PRESETS = {
    "tiny": dict(depth=18, width=16, resolution=(128, 256)),
    "resnet18": dict(depth=18, width=64, resolution=REFERENCE_SIZE),
    "resnet34": dict(depth=34, width=64, resolution=REFERENCE_SIZE),
    "resnet50": dict(depth=50, width=64, resolution=REFERENCE_SIZE),
    "resnet101": dict(depth=101, width=64, resolution=REFERENCE_SIZE),
}


def build_model(
    name_or_depth: str | int = "tiny",
    num_classes: int = 19,
    tasks: Sequence[str] = TASK_ORDER,
    width: int | None = None,
    *,
    aspp_channels: int | None = None,
    head_channels: int | None = None,
    resolution: tuple[int, int] | None = None,
    backbone: str | os.PathLike | None = None,
) -> MultiTaskNet:
    """Build a preset ("tiny", "resnet18", "resnet34", "resnet50", "resnet101")
    or a ResNet depth (18, 34, 50, 101, same as "resnet<depth>").

    ``width`` overrides the ResNet stem width; ``aspp_channels`` and
    ``head_channels`` default to ``4 * width``. ``resolution`` (H, W) is the
    full-image size the ASPP rates are scaled to (see ``scaled_rates``).
    ``backbone`` is an optional local torchvision ResNet checkpoint.
    """
    key = f"resnet{name_or_depth}" if isinstance(name_or_depth, int) else str(name_or_depth).lower()
    if key not in PRESETS:
        raise ValueError(f"unknown model {name_or_depth!r}; choose one of {sorted(PRESETS)} or a depth 18/34/50/101")
    cfg = PRESETS[key]
    width = cfg["width"] if width is None else int(width)
    model = MultiTaskNet(
        depth=cfg["depth"],
        num_classes=num_classes,
        tasks=tasks,
        base_width=width,
        aspp_channels=aspp_channels or 4 * width,
        head_channels=head_channels or 4 * width,
        aspp_rates=scaled_rates(resolution or cfg["resolution"]),
    )
    if backbone is not None:
        model.load_backbone(backbone)
    return model
