"""benchmarks.kernel_profile on CPU: its commands, ncu's CSV read back, the table, and the
device check's part. ncu itself needs a GPU; the CSV below is in the format of
``ncu --csv --page raw`` (a header row, a units row, a row per launch), with the lines
ncu and the profiled program print around it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = next(p for p in Path(__file__).resolve().parents if (p / "benchmarks" / "run.py").exists())
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import kernel_profile as kp  # noqa: E402
from benchmarks import one_call  # noqa: E402
from benchmarks.implementations import IMPLEMENTATIONS  # noqa: E402
from benchmarks.problem import parse_size  # noqa: E402

STALL = "smsp__average_warps_issue_stalled_{}_per_issue_active.ratio"
HEADER = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream",
          "Block Size", "Grid Size", "Device", "CC", "gpu__time_duration.sum",
          "dram__throughput.avg.pct_of_peak_sustained_elapsed", "launch__registers_per_thread",
          STALL.format("long_scoreboard"), STALL.format("barrier"), STALL.format("wait"),
          STALL.format("math_pipe_throttle"), STALL.format("not_selected"),
          "smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active_not_issued.ratio"]
UNITS = [""] * 11 + ["usecond", "%", "register/thread", "", "", "", "", "", ""]
ROWS = [
    ["0", "77", "python3", "host", "upsample_loss_kernel", "1", "7", "(128, 1, 1)", "(2304, 1, 1)",
     "0", "9.0", "452.32", "11.93", "168", "1.2", "0.4", "3.05", "0.9", "2.5", "99"],
    ["1", "77", "python3", "host", "upsample_regressions_kernel", "1", "7", "(128, 1, 1)",
     "(2304, 1, 1)", "0", "9.0", "1,170.5", "48.2", "255", "7.5", "", "1", "0", "0.25", "0"],
]


def _csv_line(cells):
    return ",".join(f'"{c}"' for c in cells)


NCU_OUTPUT = "\n".join([
    "==PROF== Connected to process 77 (/usr/bin/python3)",
    "==PROF== Profiling \"upsample_loss_kernel\" - 0: 0%....50%....100% - 9 passes",
    "2 forward + backward calls of upsample-fused, 8x1024x2048, C=19, fp32",
    "==PROF== Disconnected from process 77",
    _csv_line(HEADER), _csv_line(UNITS), *[_csv_line(r) for r in ROWS]])


def test_ncu_raw_csv_is_read_per_launch_with_units():
    launches = kp.parse_raw_csv(NCU_OUTPUT)
    assert [x["kernel"] for x in launches] == ["upsample_loss_kernel", "upsample_regressions_kernel"]
    m = launches[0]["metrics"]
    assert m["gpu__time_duration.sum"] == ["usecond", "452.32"]
    assert m["launch__registers_per_thread"] == ["register/thread", "168"]
    assert "Kernel Name" not in m and "Grid Size" not in m  # only metrics
    assert kp.parse_raw_csv("==PROF== no kernels were profiled\n") == []


def test_table_converts_units_and_ranks_stalls():
    launches = kp.parse_raw_csv(NCU_OUTPUT)
    m0, m1 = (x["metrics"] for x in launches)
    # the four largest, largest first; the _not_issued variant is not a reason of its own
    assert kp.stalls(m0) == [("wait", 3.05), ("not_selected", 2.5), ("long_scoreboard", 1.2),
                             ("math_pipe_throttle", 0.9)]
    assert kp.stalls(m1)[0] == ("long_scoreboard", 7.5)  # an empty value is left out
    assert kp._show(m1, "gpu__time_duration.sum", "time") == "1170.5"  # thousands separator
    nanos = {"gpu__time_duration.sum": ["nsecond", "452320"]}
    assert kp._show(nanos, "gpu__time_duration.sum", "time") == "452.3"
    text = kp.markdown({"upsample-c19-fp32": {"launches": launches},
                        "fused-c150-bf16": {"launches": [], "error": "stopped after 60 s"}})
    row = next(line for line in text.splitlines() if "upsample_loss_kernel" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["upsample-c19-fp32", "upsample_loss_kernel", "452.3", "11.9"]
    assert cells[4] == "—"  # a metric ncu did not give
    assert cells[-2] == f"{1.2 + 0.4 + 3.05 + 0.9 + 2.5:.1f}"  # every reason, summed
    assert cells[-1].startswith("wait 3.0")  # 3.05 as ncu gives it, shown to one decimal
    assert "- fused-c150-bf16: stopped after 60 s" in text


@pytest.mark.parametrize("case", kp.CASES, ids=lambda c: c.name)
def test_each_case_names_a_real_program_and_kernels(case):
    cmd = kp.command(case, "ncu", python="python")
    assert cmd[:3] == ["ncu", "--clock-control", "none"]  # the clocks as the benchmarks see them
    skip, count = cmd[cmd.index("--launch-skip") + 1], cmd[cmd.index("--launch-count") + 1]
    assert skip == count == str(case.per_call)  # the second call, every kernel named once
    assert "--metrics" not in kp.command(case, "ncu", extra=False)
    program = cmd[cmd.index("python"):]
    assert program[:3] == ["python", "-m", "benchmarks.one_call"]
    assert program[3] in IMPLEMENTATIONS
    parse_size(case.size)
    one_call.parse_sets(list(case.sets))  # raises on a field that does not exist
    # the regex names as many of the package's kernels as the call launches of them
    import fastmtl.kernels as kernels
    names = {n for path in Path(kernels.__file__).parent.glob("*.py")
             for n in re.findall(r"^def (\w+_kernel)\(", path.read_text(), re.M)}
    pattern = re.compile(case.kernels)
    assert len({n for n in names if pattern.fullmatch(n)}) == case.per_call, names


def test_without_ncu_it_says_so(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.kernel_profile", "--out",
                           str(tmp_path), "--ncu", "/nonexistent/ncu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Nsight Compute not found" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("part, note, command", [
    ("profile", "Nsight Compute needs CUDA", "benchmarks.kernel_profile --out"),
    ("host", "the CUDA profiler's figures need CUDA",
     "benchmarks.host_time --cuda-api --size full"),
    ("timeline", "the CUDA profiler's figures need CUDA",
     "benchmarks.eager_timeline --size full 8x512x1024"),
])
def test_device_check_gpu_only_parts_are_skipped_in_a_dry_run(tmp_path, part, note, command):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", "benchmarks/device_check.sh", str(tmp_path), "--dry",
                           "--parts", part], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    text = (tmp_path / "summary.md").read_text()
    state = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    assert state["parts"] == [{"part": part, "status": "skipped", "note": note, "seconds": 0.0,
                               "command": state["parts"][0]["command"],
                               "timeout_s": state["parts"][0]["timeout_s"]}], proc.stdout
    assert command in state["parts"][0]["command"]
