"""The fused op's label check, read back later so that it never stalls the host.

The pre-pass over the targets counts the semantic labels outside [0, C) that
are not ``ignore_index`` and keeps the first of them (flat index and value) on
the device, at no extra traffic: it reads the labels anyway. Reading those
24 bytes back at once would stop the host until the GPU gets there (0.1.0 did,
after the whole forward: +0.9 ms per fp32 step at 8x19x1024x2048 on an H100).
So on CUDA they go to pinned host memory behind an event, and the ValueError
is raised by whichever comes first:

- a later call of the loss in the process, before it launches anything: each
  call reads the checks whose copies the GPU has finished (``Event.query``, in
  the order they were issued, up to the first unfinished one) and leaves the
  others for a later call, so it never waits. In a training
  loop that is the next step's call, unless the host runs more than a step
  ahead of the GPU;
- ``raise_pending_label_errors()`` (call it after the last step), which waits
  for the copies still outstanding;
- interpreter exit, where the error is reported on stderr.

Waiting at the next call instead (as this module first did) cost back-to-back
calls their overlap: the copy sits behind the whole forward of its call, so the
host stopped until the GPU had finished it (+1.0 ms per fp32 call at
8x19x1024x2048 on an H100, 2026-11-25). CPU
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

_pending: list = []  # (host copy, event or None, num_classes, ignore_index, (B, H, W)[, free])
_exit_hook = []
_free_slots: dict = {}  # device index -> [(pinned host row, event)] ready for another check
SLOTS_PER_CHUNK = 64


def message(bad: list[int], num_classes: int, ignore_index: int, shape, late: bool) -> str:
    """The reference backend's message, with where the first bad label is."""
    _, flat, value = bad
    _, H, W = shape
    b, q = divmod(flat, H * W)
    where = f" at targets['semantic'][{b}, {q // W}, {q % W}]"
    note = " (in the targets of an earlier call: on CUDA the check is read back by a later one)"
    return bad_label_message(value, num_classes, ignore_index) + where + (note if late else "")


def _read_late(bad: Tensor) -> bool:
    return bad.is_cuda


def _copy_behind_event(bad: Tensor):
    """(host copy, event, free list to hand the slot back to). On CUDA the pinned rows and
    events are reused: a check costs one 24-byte copy and one event record, no allocation."""
    if not bad.is_cuda:
        return bad.clone(), None, None
    free = _free_slots.setdefault(bad.device.index, [])
    if not free:
        rows = torch.empty((SLOTS_PER_CHUNK, bad.numel()), dtype=bad.dtype, pin_memory=True)
        free.extend((rows[i], torch.cuda.Event()) for i in range(SLOTS_PER_CHUNK))
    host, event = free.pop()
    host.copy_(bad, non_blocking=True)
    event.record(torch.cuda.current_stream(bad.device))
    return host, event, free


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
    host, event, free = _copy_behind_event(bad)
    _pending.append((host, event, num_classes, ignore_index, tuple(shape), free))
    if not _exit_hook:
        _exit_hook.append(atexit.register(raise_pending_label_errors))


def raise_pending_label_errors(wait: bool = True) -> None:
    """Read the label checks left by earlier calls and raise the ValueError of the first
    bad label among them. ``wait=False`` (what each call of the loss does) reads only the
    checks whose copies have completed and keeps the others; ``wait=True`` reads them all,
    waiting for their copies."""
    if torch.compiler.is_compiling() or not _pending:
        return
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return
    # Copies on one stream complete in the order they were issued: the first one not yet
    # done ends the reading (one event query per call in a training loop).
    n_ready = len(_pending)
    if not wait:
        n_ready = next((i for i, entry in enumerate(_pending)
                        if entry[1] is not None and not entry[1].query()), n_ready)
    ready = _pending[:n_ready]
    del _pending[:n_ready]
    for host, event, num_classes, ignore_index, shape, *free in ready:
        if event is not None:
            event.synchronize()
        values = host.tolist()
        if free and free[0] is not None:
            free[0].append((host, event))
        if values[0]:
            raise ValueError(message(values, num_classes, ignore_index, shape, late=True))
