"""The GPU's SM clock, power draw and temperature while a benchmark times its rows.

A card that lowers its SM clock partway through a run (power or thermal limits, after
minutes of memory-bound kernels) makes later rows slower than earlier ones of the same
kernel, which a comparison across rows or runs would take for a change in the code.
``ClockSampler`` runs ``nvidia-smi -lms`` in the background for the whole run and keeps
each sample with the host's monotonic time of its arrival; ``window(t0, t1)`` summarises
the samples taken while one row was being timed. Without nvidia-smi (or on a card that
reports none of these) every window is None and nothing else changes.
"""
from __future__ import annotations

import statistics
import subprocess
import threading
import time
from typing import Optional, Sequence

FIELDS = ("clocks.sm", "power.draw", "temperature.gpu", "clocks_event_reasons.active")
# clocks_event_reasons.active bits (nvidia-smi --help-query-gpu) that slow the SM clock
REASONS = {0x4: "sw power cap", 0x8: "hw slowdown", 0x20: "sw thermal", 0x40: "hw thermal",
           0x80: "hw power brake"}


def nvidia_smi_command(index: int, period_ms: int, fields: Sequence[str] = FIELDS) -> list:
    return ["nvidia-smi", f"--id={index}", f"--query-gpu={','.join(fields)}",
            "--format=csv,noheader,nounits", f"--loop-ms={period_ms}"]


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_line(line: str) -> Optional[dict]:
    """One sample: SM clock (MHz), power (W), temperature (C), the active clock-event
    reasons (a bit mask), or None for a line that is not a sample."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 3 or _number(parts[0]) is None:
        return None
    reasons = None
    if len(parts) > 3:
        try:
            reasons = int(parts[3], 16)
        except ValueError:
            reasons = None
    return {"sm_mhz": _number(parts[0]), "power_w": _number(parts[1]),
            "temp_c": _number(parts[2]), "reasons": reasons}


class ClockSampler:
    """``nvidia-smi`` sampling the GPU every ``period_ms`` in the background; ``command``
    replaces it (tests)."""

    def __init__(self, index: int = 0, period_ms: int = 50, command: Optional[list] = None,
                 fallback: Optional[list] = None):
        self.command = command or nvidia_smi_command(index, period_ms)
        # a driver that does not know the clock-event reasons' field refuses the query
        self.fallback = fallback if command else nvidia_smi_command(index, period_ms, FIELDS[:3])
        self.samples: list[tuple[float, dict]] = []
        self.proc: Optional[subprocess.Popen] = None
        self.thread: Optional[threading.Thread] = None

    def start(self, settle_s: float = 2.0) -> "ClockSampler":
        """Starts sampling; where the command ends within ``settle_s`` without a sample,
        the fallback command (without the reasons' field) takes its place."""
        for command in filter(None, (self.command, self.fallback)):
            try:
                self.proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, text=True, bufsize=1)
            except OSError:  # no nvidia-smi
                self.proc = None
                return self
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
            end = time.monotonic() + settle_s
            while not self.samples and self.proc.poll() is None and time.monotonic() < end:
                time.sleep(0.02)
            if self.samples or self.proc.poll() is None:
                return self
            self.thread.join(timeout=1)
        return self

    def _read(self):
        for line in self.proc.stdout:
            sample = parse_line(line)
            if sample is not None:
                self.samples.append((time.monotonic(), sample))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def window(self, t0: float, t1: float) -> Optional[dict]:
        """The samples that arrived between monotonic times t0 and t1: median SM clock and
        power, highest temperature, the clock-event reasons seen, how many samples."""
        chosen = [s for t, s in list(self.samples) if t0 <= t <= t1]
        clocks = [s["sm_mhz"] for s in chosen if s["sm_mhz"] is not None]
        if not clocks:
            return None
        power = [s["power_w"] for s in chosen if s["power_w"] is not None]
        temps = [s["temp_c"] for s in chosen if s["temp_c"] is not None]
        mask = 0
        for s in chosen:
            mask |= s["reasons"] or 0
        return {"sm_mhz": statistics.median(clocks), "sm_mhz_min": min(clocks),
                "power_w": statistics.median(power) if power else None,
                "temp_c": max(temps) if temps else None, "samples": len(clocks),
                "reasons": [name for bit, name in REASONS.items() if mask & bit]}
