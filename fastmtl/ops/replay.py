"""Launches replayed: from the third eager CUDA call of an op with one launch key, the
launches recorded from the second are made again with the new call's tensors, none of
their arguments built again (``Launches``; the key and the direct launches:
``fastmtl.ops.common``)."""
from __future__ import annotations

import itertools
import threading
from typing import Optional

import torch
from torch import Tensor
from triton import knobs


def hooked(hook) -> bool:
    """Whether a launch hook of Triton's (a profiler's) listens."""
    return hook is not None and getattr(hook, "calls", True) != []


# The key of a call cache (a string: not a compiled launch) under which the launches
# recorded from a whole call are kept, made again by the next calls.
REPLAY = "replay"
_this_thread = threading.local()  # .recording: the Recording of this thread's call, if any


def recording() -> Optional["Recording"]:
    """Where the direct launches of this thread's op call go, if it records them (a call
    of another thread has its own: backward runs in autograd's thread)."""
    return getattr(_this_thread, "recording", None)


class Recording:
    """The direct launches of one eager call, to be made again by later calls with the same
    launch key (``Launches``): each one's compiled kernel, grid and arguments, the call's
    tensors replaced by their index in its ``sources`` (a list the call extends as it
    allocates). Sources from the ``objects``-th on (tensors on the call's device) are then
    passed as addresses, which spares Triton's launcher a ``data_ptr()`` call and a driver
    query (``cuPointerGetAttribute``) per pointer; the first ``objects`` as they are.
    ``steps`` is None once a launch could not be recorded (one through Triton's own
    launcher, a tensor not among the sources) or the sources share a tensor (an input
    given twice): such a recording is never replayed."""

    def __init__(self, sources: list, objects: int):
        self.sources, self.objects = sources, objects
        self.index, self.indexed = {}, 0
        self.steps = []
        self.stages = []  # how many of the steps each stage of the call made

    def add(self, compiled, raw, grid, args) -> None:
        if self.steps is None:
            return
        if raw is None:
            self.steps = None
            return
        for i in range(self.indexed, len(self.sources)):  # the sources added since
            if self.sources[i] is not None:
                self.index.setdefault(id(self.sources[i]), i)
        self.indexed = len(self.sources)
        template, slots = list(args), []
        for pos, a in enumerate(args):
            if isinstance(a, Tensor):
                i = self.index.get(id(a))
                if i is None:
                    self.steps = None
                    return
                template[pos] = None  # no tensor of the recorded call is kept
                slots.append((pos, i, i >= self.objects))
        launch, cooperative, pdl = raw
        self.steps.append((launch, grid, compiled.function, cooperative, pdl,
                           compiled.packed_metadata, template, tuple(slots)))

    def finish(self) -> bool:
        """Whether every launch was recorded, from distinct sources; forgets the call's
        tensors either way (a kept recording must not keep them alive)."""
        present = [id(t) for t in self.sources if t is not None]
        self.sources = self.index = None
        return bool(self.steps) and len(set(present)) == len(present)


class Launches:
    """The launches of one op call, stage by stage: ``run(stage)`` calls ``stage()``, which
    launches through the call's ``launch``; or, where an earlier call with the same launch
    key recorded its launches (an eager CUDA call: ``cache`` from ``common.launch_for``),
    makes those that stage made then again, with this call's tensors, without building
    their arguments. ``sources``: every tensor the launches take, in the same order in
    every call, extended by the call before the stage that needs the new ones (the first
    ``objects`` passed as they are, the others by address: ``Recording``). A call that does
    not replay records its launches, kept by ``end()`` after its last stage. A listening
    profiler gets every launch through Triton's launcher, as without a recording."""

    __slots__ = ("cache", "sources", "recorded", "recording", "stage", "steps", "stream")

    def __init__(self, cache: Optional[dict], sources: list, objects: int,
                 device: torch.device):
        self.cache, self.sources, self.recorded, self.recording = cache, sources, None, None
        if cache is None:
            return
        recorded = cache.get(REPLAY)
        if recorded is not None and not (hooked(knobs.runtime.launch_enter_hook)
                                         or hooked(knobs.runtime.launch_exit_hook)):
            self.recorded, self.stage, self.steps = recorded, 0, iter(recorded.steps)
            self.stream = torch._C._cuda_getCurrentRawStream(device.index)
        else:
            self.recording = _this_thread.recording = Recording(sources, objects)

    def run(self, stage) -> None:
        recorded = self.recorded
        if recorded is None:
            recording = self.recording
            made = len(recording.steps or ()) if recording is not None else 0
            try:
                stage()
            except BaseException:
                _this_thread.recording = None
                raise
            if recording is not None and recording.steps is not None:
                recording.stages.append(len(recording.steps) - made)
            return
        n = recorded.stages[self.stage]
        self.stage += 1
        sources, stream = self.sources, self.stream
        for launch, (x, y, z), function, cooperative, pdl, packed, template, slots in (
                itertools.islice(self.steps, n)):
            args = template.copy()
            for pos, i, address in slots:
                args[pos] = sources[i].data_ptr() if address else sources[i]
            launch(x, y, z, stream, function, cooperative, pdl, None, None, packed, None, None,
                   None, *args)

    def end(self) -> None:
        recording = self.recording
        if recording is not None:
            _this_thread.recording = None
            if recording.finish():
                self.cache[REPLAY] = recording
