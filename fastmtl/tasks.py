"""The tasks fastmtl knows, in their canonical order.

Everything that depends on the set of tasks (validation, the reference
losses, the weighting, the kernels) looks the task up here, so a new task is
one more entry plus its loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "classification" or "regression": picks the uncertainty factor
    channels: int | None  # prediction channels; None means "number of classes"
    target_keys: tuple[str, ...]
    doc: str


TASKS: dict[str, Task] = {
    "semantic": Task(
        "semantic", "classification", None, ("semantic",),
        "softmax cross-entropy over classes; target (B,H,W) integer labels",
    ),
    "instance": Task(
        "instance", "regression", 2, ("instance", "instance_mask"),
        "L1 of the offset to the instance centroid; target (B,2,H,W) as "
        "(dy, dx) = centroid - pixel, in pixels, with a (B,H,W) bool mask",
    ),
    "depth": Task(
        "depth", "regression", 1, ("depth",),
        "L1 of the depth (disparity); target (B,1,H,W) or (B,H,W), "
        "valid where finite and > 0",
    ),
}

TASK_ORDER: tuple[str, ...] = tuple(TASKS)


def canonical_tasks(names) -> tuple[str, ...]:
    """The given task names in canonical order; unknown names raise ValueError."""
    names = list(names)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(
            f"unknown task name(s) {unknown}; known tasks are {list(TASK_ORDER)}"
        )
    if not names:
        raise ValueError(f"no task given; expected a subset of {list(TASK_ORDER)}")
    return tuple(n for n in TASK_ORDER if n in names)


def tasks_of(predictions: Mapping) -> tuple[str, ...]:
    """The tasks present in a prediction dict, in canonical order."""
    if not isinstance(predictions, Mapping):
        raise TypeError(
            f"predictions must be a dict from task name to tensor, got {type(predictions).__name__}"
        )
    return canonical_tasks(predictions.keys())
