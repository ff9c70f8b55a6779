"""DeepLabV3 atrous spatial pyramid pooling (Chen et al., arXiv 1706.05587)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ASPP", "REFERENCE_RATES", "REFERENCE_SIZE", "scaled_rates"]

# DeepLabV3 at output stride 8 on full-resolution Cityscapes: a 1x1 branch,
# 3x3 branches dilated 12, 24, 36, and image pooling.
REFERENCE_RATES = (12, 24, 36)
REFERENCE_SIZE = (1024, 2048)


def scaled_rates(resolution: tuple[int, int], rates=REFERENCE_RATES, reference=REFERENCE_SIZE) -> tuple[int, ...]:
    """Dilation rates for images of ``resolution`` (H, W).

    The rates cover the same fraction of the image as the reference rates do
    at 1024x2048: ``max(1, round(r * s))`` with ``s = min(H / 1024, W / 2048)``.
    Pass the resolution of the whole images the model sees at test time, not
    the training crop: crops show objects at the full-image scale.
    """
    s = min(resolution[0] / reference[0], resolution[1] / reference[1])
    return tuple(max(1, int(r * s + 0.5)) for r in rates)


def _conv_bn_relu(cin, cout, k=1, dilation=1):
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Parallel 1x1, dilated 3x3 and image-pooling branches, fused by a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int = 256, rates=REFERENCE_RATES):
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, out_channels)]
            + [_conv_bn_relu(in_channels, out_channels, 3, r) for r in self.rates]
        )
        # No BatchNorm on the pooled 1x1 feature: with one image per batch it
        # would normalise a single value per channel, which BatchNorm rejects.
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1),
            nn.ReLU(inplace=True),
        )
        self.project = _conv_bn_relu((len(self.rates) + 2) * out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x) for b in self.branches]
        feats.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(feats, dim=1))
