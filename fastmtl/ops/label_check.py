"""The fused op's label check, read back one call late so that it never stalls the host.

The pre-pass over the targets counts the semantic labels outside [0, C) that
are not ``ignore_index`` and keeps the first of them (flat index and value) on
the device, at no extra traffic: it reads the labels anyway. Reading those
24 bytes back at once would stop the host until the GPU gets there (0.1.0 did,
after the whole forward: +0.9 ms per fp32 step at 8x19x1024x2048 on an H100).
So on CUDA they go to pinned host memory behind an event, and the ValueError
is raised by whichever comes first:

- the next call of ``fused_multitask_loss`` in the process (a training loop's
  next step), before it launches anything;
- ``raise_pending_label_errors()`` (call it after the last step);
- interpreter exit, where the error is reported on stderr.

By then the event has long completed, so waiting for it costs nothing. CPU
tensors (the Triton interpreter) are read at once: the call itself raises. Under
torch.compile and during CUDA-graph capture there is no host to read at, and no
check is made; the labels are then treated as ignored, as with
``check_labels=False``.
"""
from __future__ import annotations

import atexit

import torch
from torch import Tensor

from fastmtl.validation import bad_label_message

_pending: list = []  # (host copy, event or None, num_classes, ignore_index, (B, H, W))
_exit_hook = []


def message(bad: list[int], num_classes: int, ignore_index: int, shape, late: bool) -> str:
    """The reference backend's message, with where the first bad label is."""
    _, flat, value = bad
    _, H, W = shape
    b, q = divmod(flat, H * W)
    where = f" at targets['semantic'][{b}, {q // W}, {q % W}]"
    note = " (in the targets of an earlier call: on CUDA the check is read back by the next one)"
    return bad_label_message(value, num_classes, ignore_index) + where + (note if late else "")


def _read_late(bad: Tensor) -> bool:
    return bad.is_cuda


def _copy_behind_event(bad: Tensor):
    if not bad.is_cuda:
        return bad.clone(), None
    host = torch.empty(bad.shape, dtype=bad.dtype, pin_memory=True)
    stream = torch.cuda.current_stream(bad.device)
    host.copy_(bad, non_blocking=True)
    event = torch.cuda.Event()
    event.record(stream)
    return host, event


def record(bad: Tensor, num_classes: int, ignore_index: int, shape) -> None:
    """Take the check of one call: ``bad`` = (count, first flat index, its value) on the
    device. Raises at once for CPU tensors; otherwise leaves it for a later read."""
    if torch.compiler.is_compiling() or (bad.is_cuda and torch.cuda.is_current_stream_capturing()):
        return
    if not _read_late(bad):
        values = bad.tolist()
        if values[0]:
            raise ValueError(message(values, num_classes, ignore_index, shape, late=False))
        return
    host, event = _copy_behind_event(bad)
    _pending.append((host, event, num_classes, ignore_index, tuple(shape)))
    if not _exit_hook:
        _exit_hook.append(atexit.register(raise_pending_label_errors))


def raise_pending_label_errors() -> None:
    """Read the label checks left by earlier calls and raise the ValueError of the first
    bad label among them. Waits only for their (long finished) copies."""
    if torch.compiler.is_compiling() or not _pending:
        return
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return
    pending = list(_pending)
    _pending.clear()
    for host, event, num_classes, ignore_index, shape in pending:
        if event is not None:
            event.synchronize()
        values = host.tolist()
        if values[0]:
            raise ValueError(message(values, num_classes, ignore_index, shape, late=True))
