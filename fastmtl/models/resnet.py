"""Dilated ResNet encoder (output stride 8) with torchvision-compatible names.

Parameter and buffer names follow torchvision's ``resnet`` (conv1, bn1,
layer1.0.conv1, layer1.0.downsample.0, ...), so an ImageNet checkpoint saved
from torchvision loads with :func:`load_backbone`. As in DeepLab, layer3 and
layer4 keep stride 1 and dilate their 3x3 convolutions by 2 and 4 instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "LAYERS", "load_backbone"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    # torchvision's "ResNet v1.5": the stride sits on the 3x3 convolution.
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block, blocks per stage)
LAYERS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet-{18,34,50,101} at output stride 8, without the classifier.

    ``base_width`` is the stem width (64 in the standard network); stages have
    ``base_width * (1, 2, 4, 8) * expansion`` output channels. ``forward``
    returns the layer4 features, ``out_channels`` of them at 1/8 resolution
    (``ceil`` of each halving for odd sizes).
    """

    output_stride = 8

    def __init__(self, depth: int = 50, base_width: int = 64):
        super().__init__()
        if depth not in LAYERS:
            raise ValueError(f"ResNet depth must be one of {sorted(LAYERS)}, got {depth}")
        block, blocks = LAYERS[depth]
        self.depth = depth
        self.inplanes = base_width
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, base_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, base_width, blocks[0])
        self.layer2 = self._make_layer(block, base_width * 2, blocks[1], stride=2)
        self.layer3 = self._make_layer(block, base_width * 4, blocks[2], stride=2, dilate=True)
        self.layer4 = self._make_layer(block, base_width * 8, blocks[3], stride=2, dilate=True)
        self.out_channels = base_width * 8 * block.expansion
        del self.inplanes, self.dilation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes, n, stride=1, dilate=False):
        # Same rule as torchvision's replace_stride_with_dilation: the first
        # block keeps the previous dilation, the stride becomes dilation.
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# Keys a torchvision checkpoint may have that the encoder does not use, and
# buffers old torchvision checkpoints were saved without.
_IGNORED = ("fc.weight", "fc.bias")
_OPTIONAL_SUFFIX = "num_batches_tracked"


def load_backbone(encoder: ResNet, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> ResNet:
    """Load a torchvision-format ResNet state dict into ``encoder``.

    ``source`` is a local file (read with ``torch.load(weights_only=True)``;
    nothing is downloaded) or a state dict. ``fc.*`` is ignored and missing
    ``num_batches_tracked`` buffers are allowed; any other missing or
    unexpected key, or a shape mismatch, raises ``ValueError`` naming them.
    """
    where = "state dict"
    if not isinstance(source, Mapping):
        where = os.fspath(source)
        if not os.path.isfile(where):
            raise FileNotFoundError(f"backbone checkpoint not found: {where}")
        source = torch.load(where, map_location="cpu", weights_only=True)
        if not isinstance(source, Mapping):
            raise ValueError(f"{where}: expected a state dict, got {type(source).__name__}")
    state = {k.removeprefix("module."): v for k, v in source.items() if k not in _IGNORED}
    own = encoder.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{where} does not match a ResNet-{encoder.depth} encoder with "
            f"{encoder.conv1.out_channels}-channel stem: missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''} ({len(missing)} in all), unexpected keys "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)} in all)"
        )
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{where}: shape mismatch (checkpoint vs encoder) for {bad[:8]}")
    encoder.load_state_dict(state, strict=False)
    return encoder
