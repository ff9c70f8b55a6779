"""Networks: a dilated ResNet encoder, DeepLabV3 ASPP and one decoder per task."""

from .aspp import ASPP, scaled_rates
from .multitask import PRESETS, MultiTaskNet, TaskHead, build_model
from .resnet import ResNet, load_backbone

__all__ = [
    "ASPP",
    "PRESETS",
    "MultiTaskNet",
    "ResNet",
    "TaskHead",
    "build_model",
    "load_backbone",
    "scaled_rates",
]
