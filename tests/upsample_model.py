"""The cost model of tests/sass_model.py applied to the semantic launches of the loss from
low-resolution heads (``upsample_loss_kernel`` at C <= 32, ``upsample_chunks_kernel``
beyond), at a given problem's split.

Those kernels re-read their taps, so the model is told which loads hit in cache:

- a label (int64 or uint8: LDG.E.64, LDG.E.U8) comes from DRAM;
- the taps of a new low-resolution row (loaded once per row outside the row loops, those
  reading the labels, or in
  the chunked kernel's first pass over the classes) come after ``TAP_LATENCY`` cycles, the
  DRAM latency of the full-resolution kernels' model;
- every other global load re-reads what the program has just loaded (the taps again in the
  row loop or the second pass, class weights, run tables): L1, ``REREAD_LATENCY``.

The trips of each loop come from the split: one window, ``band_rows`` + 1 low-resolution
rows per program, ``rows_per_run`` target rows per low-resolution row, one gather of the run
reduction (runs of at most KC columns), and in the chunked kernel C // CH full chunks per
pass and rows_per_run / ROWS groups of target rows per run.

Checked against six semantic launches timed on an H100 and seven on an H200, compiled
again from the code that was timed (docs/upsample.md, "The cost model on the 1/8
launches"); an estimate, not a measurement.
"""
from __future__ import annotations

from compiled import innermost, loops, programs_per_sm
from sass_model import CLOCK, _opcode, replay

TAP_LATENCY = 900
REREAD_LATENCY = 40
SMS = 132


def _has(code, span, prefix: str) -> bool:
    return any(_opcode(t)[1].startswith(prefix) for a, t, *_ in code if span[0] <= a <= span[1])


def loop_trips(code, chunked: bool, band_rows: int, rows_per_run: int, chunks: int = 0,
               rows: int = 0) -> dict:
    """{back edge: trips} for a semantic launch's loops, told apart by nesting and content
    (the window loop, the low-resolution rows, the target rows, the run reduction's gathers;
    chunked: the passes over the classes, the group of target rows)."""
    spans = loops([(a, t) for a, t, *_ in code])
    trips = {}
    for span in spans:
        depth = sum(1 for o in spans if o != span and o[0] <= span[0] and span[1] <= o[1])
        inner = innermost(span, spans)
        if inner and _has(code, span, "BAR"):
            n = 1                                    # a gather of the run reduction
        elif inner:
            n = (chunks if _has(code, span, "MUFU.EX2") else rows) if chunked else rows_per_run
        else:
            # (2, 3: chunked only) the groups of at most ROWS target rows of a run, a pass
            n = {0: 1, 1: band_rows + 1, 2: -(-rows_per_run // max(rows, 1)), 3: chunks}[depth]
        trips[span[1]] = n
    return trips


def _cached(code, chunked: bool):
    """``sass_model.replay``'s ``cached``: which loads hit in cache, and after how long."""
    spans = loops([(a, t) for a, t, *_ in code])
    inner = [s for s in spans if innermost(s, spans) and not _has(code, s, "BAR")]
    # chunked: the first pass over the classes (the first loop issuing exponentials) loads
    # the taps; otherwise everything outside the row loops (those reading the labels, whose
    # exponentials may come by recurrence) does
    marked = ([s for s in inner if _has(code, s, "MUFU.EX2")][:1] if chunked
              else [s for s in inner if _has(code, s, "LDG.E.64") or _has(code, s, "LDG.E.U8")])

    def cached(address, text):
        op = _opcode(text)[1]
        if ".64" in op or ".U8" in op:
            return None
        inside = any(lo <= address <= hi for lo, hi in marked)
        if chunked:
            return TAP_LATENCY if inside else REREAD_LATENCY
        return REREAD_LATENCY if inside else TAP_LATENCY
    return cached


def semantic_ms(code, registers: int, num_warps: int, shared_bytes: int, tiles, batch: int,
                rows_per_run: int, classes: int = 0, chunk: int = 0, rows: int = 0,
                rounds: int = 6) -> float:
    """Estimated time (ms, H100) of a semantic launch compiled as ``code``
    (``compiled.sass_control`` rows) over the split ``tiles`` (``upsample_tiles.tiles``) of
    ``batch`` images, ``rounds`` warps per scheduler slot replayed."""
    chunked = bool(tiles.class_chunks)
    trips = loop_trips(code, chunked, tiles.band_rows, rows_per_run,
                       chunks=classes // chunk if chunked else 0, rows=rows)
    # warps on one scheduler: the resident programs' warps spread over an SM's four
    warps = max(1, programs_per_sm(registers, num_warps, shared_bytes) * num_warps // 4)
    exits, _ = replay(code, warps, warps * rounds, loop_trips=trips,
                      cached=_cached(code, chunked))
    exits.sort()
    interval = (exits[-1] - exits[warps - 1]) / (len(exits) - warps)  # between two exits
    warps_per_scheduler = batch * tiles.n_strips * tiles.n_bands * num_warps / (SMS * 4)
    return warps_per_scheduler * interval / CLOCK * 1e3
