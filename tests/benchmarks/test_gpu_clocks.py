"""The GPU clock sampler of the loss benchmark (benchmarks/gpu_clocks.py), on CPU: a small
script stands in for nvidia-smi's looping query."""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = next(p for p in Path(__file__).resolve().parents if (p / "benchmarks" / "run.py").exists())
if str(REPO) not in sys.path:  # benchmarks/ is not installed with the package
    sys.path.insert(0, str(REPO))

from benchmarks.gpu_clocks import ClockSampler, nvidia_smi_command, parse_line  # noqa: E402
from benchmarks.report import clocks_table  # noqa: E402

# nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active
# --format=csv,noheader,nounits prints lines like these
FAKE_SMI = """
import sys, time
for mhz, reasons in [(1980, 0), (1980, 0), (1755, 0x4), (1755, 0x44)] * 50:
    print(f"{mhz}, 612.50, 61, 0x{reasons:016x}", flush=True)
    time.sleep(0.01)
"""


def test_lines_parse_into_samples():
    assert parse_line("1980, 612.50, 61, 0x0000000000000004") == {
        "sm_mhz": 1980.0, "power_w": 612.5, "temp_c": 61.0, "reasons": 4}
    assert parse_line("1980, [N/A], 61") == {"sm_mhz": 1980.0, "power_w": None, "temp_c": 61.0,
                                              "reasons": None}
    assert parse_line("Failed to initialize NVML: Driver/library version mismatch") is None
    command = nvidia_smi_command(1, 50)
    assert command[0] == "nvidia-smi" and "--id=1" in command and "--loop-ms=50" in command


def test_a_window_summarises_the_samples_taken_in_it():
    sampler = ClockSampler(command=[sys.executable, "-c", FAKE_SMI]).start()
    try:
        start = time.monotonic()
        time.sleep(0.5)
        window = sampler.window(start, time.monotonic())
    finally:
        sampler.stop()
    assert window is not None and window["samples"] >= 8
    assert window["sm_mhz_min"] == 1755 and window["sm_mhz"] in (1755, 1867.5, 1980)
    assert window["power_w"] == 612.5 and window["temp_c"] == 61
    assert window["reasons"] == ["sw power cap", "hw thermal"]
    assert sampler.window(0.0, 1.0) is None  # no sample in that window


def test_without_nvidia_smi_every_window_is_empty():
    sampler = ClockSampler(command=["fastmtl-no-such-command"]).start()
    sampler.stop()
    assert sampler.window(0.0, time.monotonic()) is None


def test_a_refused_query_falls_back_to_the_fields_every_driver_knows():
    refused = [sys.executable, "-c", "import sys; sys.exit('not a valid field')"]
    sampler = ClockSampler(command=refused, fallback=[sys.executable, "-c", FAKE_SMI])
    sampler.start(settle_s=5.0)
    try:
        time.sleep(0.2)
        assert sampler.window(0.0, time.monotonic())["samples"] > 0
    finally:
        sampler.stop()


def test_the_report_lists_each_row_with_its_clock():
    row = {"impl": "triton", "shape": "8x512x1024", "classes": 150, "dtype": "fp32",
           "mode": "fwd+bwd", "clocks": {"sm_mhz": 1755.0, "sm_mhz_min": 1680.0,
                                         "power_w": 690.0, "temp_c": 70.0, "samples": 40,
                                         "reasons": ["sw power cap"]}}
    text = clocks_table([row, {**row, "impl": "compile", "clocks": None}])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]]
    assert cells == [["triton", "8x512x1024", "150", "fp32", "fwd+bwd", "1755", "1680", "690",
                      "70", "sw power cap", "40"]]
    assert clocks_table([{**row, "clocks": None}]) is None
