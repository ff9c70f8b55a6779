"""The network and its loss as one module, and the autocast of a precision setting."""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from fastmtl.module import MultiTaskLoss

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
