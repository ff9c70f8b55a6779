"""The ops' label check: from the pre-pass, read back by a later call on CUDA.

On CPU tensors the check is read at once. The CUDA path (the kernel writes the
check into a row of pinned host memory, read by a later call with no CUDA call)
is exercised here on CPU with its rows in ordinary memory, the interpreted
kernel writing them as the GPU would, and on a GPU by tests/ops/test_kernel_cuda.py.
"""
import pytest
import torch

import fastmtl
from fastmtl.ops import label_check
from fastmtl.validation import bad_label_message
from helpers import LateLabelChecks, make_inputs

CPU = torch.device("cpu")


def _inputs(bad=None, seed=50):
    pred, tgt = make_inputs(B=2, C=6, H=3, W=4, seed=seed)
    if bad is not None:
        tgt["semantic"][bad[:3]] = bad[3]
    return pred, tgt


@pytest.fixture
def read_late(monkeypatch):
    return LateLabelChecks(monkeypatch)


def _unwritten(num_classes=6, shape=(2, 3, 4)):
    """A check recorded as a call records it, its row not written yet."""
    row = label_check.buffer(torch.empty(0), True)
    assert row[0] == label_check.UNWRITTEN
    label_check.record(row, num_classes, 255, shape)
    return row


def test_raised_by_the_next_call_naming_the_value_and_where(read_late):
    pred, tgt = _inputs(bad=(1, 2, 3, 9))
    tgt["semantic"][1, 0, 1] = 255  # ignored, not bad
    out = fastmtl.multitask_loss(pred, tgt, backend="triton")  # no read here
    good = _inputs(seed=51)
    with pytest.raises(ValueError) as err:
        fastmtl.multitask_loss(*good, backend="triton")
    message = str(err.value)
    assert message.startswith(bad_label_message(9, 6, 255) + " at targets['semantic'][1, 2, 3]")
    assert "earlier call" in message
    # The bad label was treated as ignored: the loss of that call is the loss without it.
    tgt["semantic"][1, 2, 3] = 255
    expected = fastmtl.multitask_loss(pred, tgt, backend="reference")
    torch.testing.assert_close(out.total, expected.total, rtol=2e-5, atol=1e-6)
    fastmtl.multitask_loss(*good, backend="triton")  # reported once, then clean
    label_check.raise_pending_label_errors()


def test_raised_after_the_last_call_on_request(read_late):
    fastmtl.multitask_loss(*_inputs(), backend="triton")
    fastmtl.multitask_loss(*_inputs(bad=(0, 0, 0, -1)), backend="triton")
    with pytest.raises(ValueError, match=r"label -1 .* at targets\['semantic'\]\[0, 0, 0\]"):
        label_check.raise_pending_label_errors()
    label_check.raise_pending_label_errors()  # nothing left


def test_good_labels_and_unchecked_calls_never_raise(read_late):
    fastmtl.multitask_loss(*_inputs(), backend="triton")
    fastmtl.multitask_loss(*_inputs(bad=(0, 1, 1, 6)), backend="triton", check_labels=False)
    fastmtl.multitask_loss(*_inputs(), backend="triton")
    assert len(label_check._pending) == 1  # each call reads the checks before it
    label_check.raise_pending_label_errors()


def test_a_call_reads_only_written_checks_and_never_waits(read_late):
    row = _unwritten()
    label_check.raise_pending_label_errors(wait=False)  # what every call of the loss does
    fastmtl.multitask_loss(*_inputs(), backend="triton")
    assert read_late.waits == 0 and len(label_check._pending) == 2  # still there, plus this call's
    row[:3] = torch.tensor([1, 13, 9])  # (count, flat index, value) as the pre-pass writes them
    with pytest.raises(ValueError, match=r"label 9 .* at targets\['semantic'\]\[1, 0, 1\]"):
        fastmtl.multitask_loss(*_inputs(), backend="triton")
    assert read_late.waits == 1  # the error path alone waits, for the index and value


def test_reading_stops_at_the_first_unwritten_check(read_late):
    # One stream writes the rows in the order they were issued: while the oldest is
    # unwritten, the ones after it are not read.
    first, second = _unwritten(), _unwritten()
    second[:3] = torch.tensor([1, 5, 8])
    label_check.raise_pending_label_errors(wait=False)
    assert len(label_check._pending) == 2 and read_late.waits == 0
    first[:3] = torch.tensor([0, 0, 0])
    with pytest.raises(ValueError, match=r"label 8 .* at targets\['semantic'\]\[0, 1, 1\]"):
        label_check.raise_pending_label_errors(wait=False)
    assert not label_check._pending


def test_on_request_every_check_is_read_waiting_for_the_gpu(read_late):
    row = _unwritten()
    read_late.later.append((row, [2, 0, -3]))
    with pytest.raises(ValueError, match=r"label -3 .* at targets\['semantic'\]\[0, 0, 0\]"):
        label_check.raise_pending_label_errors()
    assert read_late.waits == 1 and not label_check._pending


def test_rows_are_handed_back_once_read_and_stay_aligned(read_late):
    for _ in range(3):
        fastmtl.multitask_loss(*_inputs(), backend="triton")
    label_check.raise_pending_label_errors()
    free = label_check._free_slots[CPU.index]
    assert len(free) == label_check.SLOTS_PER_CHUNK and read_late.waits == 0
    assert all(slot.row.data_ptr() % 16 == 0 for slot in free)  # as Triton specialised them


def test_a_read_row_is_reused_only_after_every_other_row(read_late):
    # Its index and value may still be on their way (written after the count) when its
    # count is read: the row goes to the back of the pool.
    row = _unwritten()
    row[:3] = torch.tensor([0, 0, 0])
    label_check.raise_pending_label_errors(wait=False)
    taken = [label_check.buffer(torch.empty(0), True).data_ptr()
             for _ in range(label_check.SLOTS_PER_CHUNK)]
    assert taken.index(row.data_ptr()) == label_check.SLOTS_PER_CHUNK - 1


def test_calls_on_cpu_tensors_and_unchecked_calls_take_no_row():
    for like, check in [(torch.empty(0), True), (torch.empty(0, device="meta"), True),
                        (torch.empty(0), False)]:
        assert label_check.buffer(like, check).shape == (3,)
    assert not label_check._taken


def test_cpu_tensors_raise_in_the_call_itself():
    with pytest.raises(ValueError, match=r"label 7 .* at targets\['semantic'\]\[0, 2, 1\]$"):
        fastmtl.multitask_loss(*_inputs(bad=(0, 2, 1, 7)), backend="triton")
    assert not label_check._pending


def test_no_wait_and_no_error_inside_a_cuda_graph_capture(read_late, monkeypatch):
    # A capture may still read the rows that need no wait; a bad label found before it
    # is raised by the first call after it.
    good, bad = _unwritten(), _unwritten()
    good[:3] = torch.tensor([0, 0, 0])
    bad[:3] = torch.tensor([1, 6, 7])
    monkeypatch.setattr(label_check, "_capturing", lambda device: True)
    label_check.raise_pending_label_errors(wait=False)
    label_check.raise_pending_label_errors()
    assert read_late.waits == 0 and [p[0].row.data_ptr() for p in label_check._pending] == [
        bad.data_ptr()]
    monkeypatch.setattr(label_check, "_capturing", lambda device: False)
    with pytest.raises(ValueError, match=r"label 7 .* at targets\['semantic'\]\[0, 1, 2\]"):
        fastmtl.multitask_loss(*_inputs(), backend="triton")
