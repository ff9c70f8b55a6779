"""The fused op's label check: from the pre-pass, read back by a later call on CUDA.

On CPU tensors the check is read at once; the CUDA path (a copy to pinned
memory behind an event) is exercised here with its deferral forced on CPU, and
on a GPU by tests/ops/test_kernel_cuda.py.
"""
import pytest
import torch

import fastmtl
from fastmtl.ops import label_check
from fastmtl.validation import bad_label_message
from helpers import make_inputs


def _inputs(bad=None, seed=50):
    pred, tgt = make_inputs(B=2, C=6, H=3, W=4, seed=seed)
    if bad is not None:
        tgt["semantic"][bad[:3]] = bad[3]
    return pred, tgt


@pytest.fixture
def read_late(monkeypatch):
    monkeypatch.setattr(label_check, "_read_late", lambda bad: True)
    yield
    label_check._pending.clear()


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


class _Event:
    """Stands in for a CUDA event: complete or not, and whether anyone waited on it unfinished."""

    def __init__(self, done):
        self.done, self.blocked, self.queries = done, False, 0

    def query(self):
        self.queries += 1
        return self.done

    def synchronize(self):
        self.blocked = self.blocked or not self.done


def test_a_call_reads_only_finished_checks_and_never_waits(read_late):
    bad = torch.tensor([1, 13, 9])  # (count, flat index, value) as the pre-pass leaves them
    unfinished = _Event(done=False)
    label_check._pending.append((bad, unfinished, 6, 255, (2, 3, 4)))
    label_check.raise_pending_label_errors(wait=False)  # what every call of the loss does
    fastmtl.multitask_loss(*_inputs(), backend="triton")
    assert not unfinished.blocked and len(label_check._pending) == 2  # still there, plus this call's
    unfinished.done = True
    with pytest.raises(ValueError, match=r"label 9 .* at targets\['semantic'\]\[1, 0, 1\]"):
        fastmtl.multitask_loss(*_inputs(), backend="triton")
    assert not unfinished.blocked


def test_reading_stops_at_the_first_unfinished_check(read_late):
    # Copies complete in the order they were issued: one query per call while the oldest
    # is unfinished; then it and the ones after it are read.
    first, second = _Event(done=False), _Event(done=True)
    label_check._pending.append((torch.tensor([0, 0, 0]), first, 6, 255, (2, 3, 4)))
    label_check._pending.append((torch.tensor([1, 5, 8]), second, 6, 255, (2, 3, 4)))
    label_check.raise_pending_label_errors(wait=False)
    assert first.queries == 1 and second.queries == 0 and len(label_check._pending) == 2
    first.done = True
    with pytest.raises(ValueError, match=r"label 8 .* at targets\['semantic'\]\[0, 1, 1\]"):
        label_check.raise_pending_label_errors(wait=False)
    assert not label_check._pending and not first.blocked and not second.blocked


def test_on_request_every_check_is_read_waiting_for_its_copy(read_late):
    unfinished = _Event(done=False)
    label_check._pending.append((torch.tensor([2, 0, -3]), unfinished, 6, 255, (2, 3, 4)))
    with pytest.raises(ValueError, match=r"label -3 .* at targets\['semantic'\]\[0, 0, 0\]"):
        label_check.raise_pending_label_errors()
    assert unfinished.blocked and not label_check._pending


def test_cpu_tensors_raise_in_the_call_itself():
    with pytest.raises(ValueError, match=r"label 7 .* at targets\['semantic'\]\[0, 2, 1\]$"):
        fastmtl.multitask_loss(*_inputs(bad=(0, 2, 1, 7)), backend="triton")
    assert not label_check._pending
