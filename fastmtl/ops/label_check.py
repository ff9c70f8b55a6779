"""The ops' label check, written where the host reads it without a CUDA call.

The pre-pass over the targets counts the semantic labels outside [0, C) that
are not ``ignore_index`` and keeps the first of them (flat index and value), at
no extra traffic: it reads the labels anyway. Reading those 24 bytes back at
once would stop the host until the GPU gets there (0.1.0 did, after the whole
forward: +0.9 ms per fp32 step at 8x19x1024x2048 on an H100). So in an eager
CUDA call the kernel writes them straight into a row of pinned host memory
(``buffer``: mapped into the device's address space, as all pinned memory is
under unified addressing), whose count the host set to ``UNWRITTEN`` before the
launch. Reading a check is then a load from host memory: no copy, no event, no
CUDA call at all while the labels are good (an event-timed copy per call, as
this module first did, cost a host-bound bf16 call 8% on an H100). The
ValueError is raised by whichever comes first:

- a later call of the loss in the process, before it launches anything: each
  call reads the checks the GPU has written, in the order they were issued, up
  to the first unwritten one, and leaves the others for a later call, so it
  never waits. In a training loop that is the next step's call, unless the
  host runs more than a step ahead of the GPU;
- ``raise_pending_label_errors()`` (call it after the last step), which waits
  for the checks still unwritten;
- interpreter exit, where the error is reported on stderr.

A count other than 0 (a bad label, or a row still on its way) is read again after
``torch.cuda.synchronize``: the index and value are then in place, and the
error path alone pays for the wait. CPU tensors (the Triton interpreter) are
read at once: the call itself raises. Under torch.compile and during CUDA-graph
capture there is no host to read at, and no check is made; the labels are then
treated as ignored, as with ``check_labels=False``.
"""
from __future__ import annotations

import atexit
from collections import deque

import torch
from torch import Tensor

from fastmtl.ops.common import is_real
from fastmtl.validation import bad_label_message, label_position

UNWRITTEN = -1  # the count of a row the kernel has not written yet (counts are >= 0)
ROW = 4  # int64 per row: (count, first flat index, its value), and one for 32-byte alignment
SLOTS_PER_CHUNK = 64

_pending: list = []  # (slot, num_classes, ignore_index, (B, H, W))
_exit_hook = []
# device index -> the _Slots ready for another check, oldest first: a row goes back to the
# end once its count is read, so it is reused a pool's length of checks later. Its index
# and value, written after the count, could otherwise still be on their way from a kernel
# on another stream when the next kernel writes the row.
_free_slots: dict = {}
_taken: dict = {}  # a taken row's address -> its _Slot, until ``record`` takes it in


class _Slot:
    """One row of pinned host memory: ``row`` for the kernel, ``host`` (a memoryview of the
    same bytes, whose items are Python ints) for the host's reads and writes, which then
    make no CUDA call; ``address`` is the row's, the key of ``_taken``."""
    __slots__ = ("row", "host", "address", "device", "free")

    def __init__(self, row: Tensor, device: torch.device, free: deque):
        self.row, self.host, self.address = row, memoryview(row.numpy()), row.data_ptr()
        self.device, self.free = device, free


def _synchronize(device: torch.device) -> None:
    torch.cuda.synchronize(device)


def _pinned_rows(n: int) -> Tensor:
    return torch.empty((n, ROW), dtype=torch.int64, pin_memory=True)


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _zero_copy(like: Tensor) -> bool:
    return (is_real(like) and like.is_cuda and not torch.compiler.is_compiling()
            and not torch.cuda.is_current_stream_capturing())


def message(bad: list[int], num_classes: int, ignore_index: int, shape, late: bool) -> str:
    """The message of a bad label (its value and where it is, as the reference backend's),
    noting a late read."""
    _, flat, value = bad
    note = " (in the targets of an earlier call: on CUDA the check is read back by a later one)"
    return (bad_label_message(value, num_classes, ignore_index) + label_position(flat, shape)
            + (note if late else ""))


def buffer(like: Tensor, check: bool) -> Tensor:
    """Where an op's kernel writes its label check (count, first flat index, value): with
    ``check`` in an eager call on real CUDA tensors like ``like``, a pinned row from the
    device's pool, its count set to ``UNWRITTEN`` (hand it to ``record``); otherwise three
    int64 on ``like``'s device."""
    device = like.device
    if not (check and _zero_copy(like)):
        return torch.empty(3, dtype=torch.int64, device=device)
    free = _free_slots.get(device.index)
    if free is None:
        free = _free_slots[device.index] = deque()
    if not free:
        rows = _pinned_rows(SLOTS_PER_CHUNK)
        free.extend(_Slot(rows[i], device, free) for i in range(SLOTS_PER_CHUNK))
    slot = free.popleft()
    slot.host[0] = UNWRITTEN
    _taken[slot.address] = slot
    return slot.row


def record(bad: Tensor, num_classes: int, ignore_index: int, shape) -> None:
    """Take the check of one call, written to ``bad`` (from ``buffer``; ``shape``: the
    labels', (B, H, W)). A pinned row is left for a later read; CPU tensors raise at once;
    other device tensors (a call traced or captured into a CUDA graph) are no check."""
    slot = _taken.pop(bad.data_ptr(), None)
    if slot is not None:
        _pending.append((slot, num_classes, ignore_index, shape))
        if not _exit_hook:
            _exit_hook.append(atexit.register(raise_pending_label_errors))
        return
    if bad.is_cuda or torch.compiler.is_compiling():
        return
    values = bad.tolist()
    if values[0]:
        raise ValueError(message(values, num_classes, ignore_index, shape, late=False))


def raise_pending_label_errors(wait: bool = True) -> None:
    """Read the label checks left by earlier calls and raise the ValueError of the first
    bad label among them. ``wait=False`` (what each call of the loss does) reads only the
    checks the GPU has written and keeps the others; ``wait=True`` reads them all, waiting
    for the GPU where one is unwritten."""
    if not _pending or torch.compiler.is_compiling():
        return
    # One stream writes the rows in the order they were issued: the first unwritten one
    # ends the reading (one load from host memory per call in a training loop).
    while _pending:
        slot, num_classes, ignore_index, shape = _pending[0]
        count = slot.host[0]
        if count != 0:  # unwritten, or a bad label whose index may still be on its way
            if (count == UNWRITTEN and not wait) or _capturing(slot.device):
                return  # never wait inside a CUDA-graph capture: a later call reads it
            _synchronize(slot.device)
            count = slot.host[0]  # still UNWRITTEN: never launched, nothing was checked
        values = slot.host[:3].tolist() if count > 0 else None
        del _pending[0]
        slot.free.append(slot)
        if values:
            raise ValueError(message(values, num_classes, ignore_index, shape, late=True))
