"""The SASS reading behind the static design facts and the cost model (tests/compiled.py,
tests/sass_model.py): the scheduling controls decoded from a compiled kernel, and the model's
replay of listings whose time has a closed form."""
import sys
from pathlib import Path

import pytest
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, when run as a script
import sass_model  # noqa: E402
from compiled import compile_for, loads_awaited, loops, sass_control  # noqa: E402


def _row(address, text, stall=1, write=None, read=None, wait=0):
    return (address, text, stall, write, read, wait)


def _listing(body):
    """Rows at consecutive addresses, then EXIT."""
    rows = [_row(16 * n, *r) if isinstance(r, tuple) else _row(16 * n, r)
            for n, r in enumerate(body)]
    return rows + [_row(16 * len(body), "EXIT")]


@triton.jit
def _copy_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + i, tl.exp(tl.load(x_ptr + i, mask=i < n)), mask=i < n)


def test_controls_decode_the_scoreboard_that_guards_a_loaded_value():
    from helpers import run_compiled

    facts = run_compiled(__file__, "controls", timeout=300)
    assert facts["instructions"] > 10 and facts["stalls_within_4_bits"]
    assert facts["loads"] == 1 and facts["load_scoreboard"] is not None  # one per thread
    # The exponential of the loaded value cannot issue before the data arrive: some
    # instruction between them waits for the scoreboard the load sets.
    assert facts["awaited_at_load"] == 0 and facts["awaited_at_first_exp"] == 1


def _controls() -> dict:
    import torch

    x = torch.empty(4096)
    compiled = compile_for(_copy_kernel, (x, torch.empty_like(x), 4096), dict(BLOCK=128), 90)
    code = sass_control(compiled.asm["cubin"])
    loads = [n for n, r in enumerate(code) if "LDG" in r[1]]
    first_exp = next(n for n, r in enumerate(code) if "MUFU.EX2" in r[1])
    awaited = loads_awaited(code)
    return dict(instructions=len(code), stalls_within_4_bits=all(1 <= r[2] <= 15 for r in code),
                loads=len(loads), load_scoreboard=code[loads[0]][3],
                awaited_at_load=awaited[loads[0]], awaited_at_first_exp=awaited[first_exp])


def test_loads_awaited_counts_the_loads_behind_each_wait():
    code = _listing([("LDG.E R1, desc[UR4][R2.64]", 1, 0), ("LDG.E R3, desc[UR4][R4.64]", 1, 0),
                     ("LDG.E R5, desc[UR4][R6.64]", 1, 1), ("FADD R7, R1, R3", 1, None, None, 1),
                     ("FADD R8, R7, R5", 1, None, None, 2)])
    assert loads_awaited(code) == [0, 0, 0, 2, 3, 3]


def test_streaming_loads_take_their_bytes_over_the_bandwidth():
    n = 200
    for access, nbytes in (("LDG.E", 128), ("LDG.E.128", 512)):
        # n loads on one scoreboard, then the use of their data
        code = _listing([(access + " R4, desc[UR4][R2.64]", 1, 0)] * n
                        + [("FADD R1, R4, R4", 1, None, None, 1)])
        cycles, moved = sass_model.cycles_per_program(code, warps=2)
        assert moved == n * nbytes
        assert cycles / 2 == pytest.approx(n * nbytes / sass_model.BANDWIDTH, rel=0.01)


def test_exponentials_take_eight_cycles_of_the_unit_each():
    n = 300
    code = _listing([("MUFU.EX2 R1, R2", 1, 0)] * n)
    cycles, moved = sass_model.cycles_per_program(code, warps=2)
    assert moved == 0
    assert cycles / 2 == pytest.approx(n * sass_model.MUFU_CYCLES, rel=0.01)


def test_a_wait_on_a_load_costs_the_latency_and_a_loop_its_trips():
    code = _listing([("LDG.E R1, desc[UR4][R2.64]", 1, 0), ("FADD R3, R1, R1", 1, None, None, 1)])
    cycles, _ = sass_model.cycles_per_program(code, warps=1, latency=700)
    assert cycles == pytest.approx(700 + sass_model.LAUNCH + 1, abs=2)
    body = [("MUFU.EX2 R1, R2", 1, 0)] * 100
    loop = _listing(body + ["@P0 BRA 0x0"])
    for trips in (1, 3):
        cycles, _ = sass_model.cycles_per_program(loop, warps=2, trips=trips)
        assert cycles / 2 == pytest.approx(100 * trips * sass_model.MUFU_CYCLES, rel=0.02)


def test_a_cached_load_takes_its_latency_and_no_bandwidth():
    code = _listing([("LDG.E R1, desc[UR4][R2.64]", 1, 0), ("FADD R3, R1, R1", 1, None, None, 1)])
    cycles, moved = sass_model.cycles_per_program(code, warps=1, latency=700)
    exits, moved = sass_model.replay(code, 1, 1, latency=700, cached=lambda a, t: 40)
    assert moved == 0
    assert exits == [pytest.approx(40 + 1, abs=2)]
    # only the loads the function names hit in cache
    exits, moved = sass_model.replay(code, 1, 1, latency=700, cached=lambda a, t: None)
    assert moved == 128 and exits == [pytest.approx(700 + 1, abs=2)]


def test_shared_loads_and_barriers_hold_their_warp():
    wait = [("LDS R1, [R2]", 1, 0), ("FADD R3, R1, R1", 1, None, None, 1)]
    exits, _ = sass_model.replay(_listing(wait), 1, 1)
    assert exits == [pytest.approx(sass_model.SHARED_LATENCY + 1, abs=2)]
    exits, _ = sass_model.replay(_listing(["BAR.SYNC.DEFER_BLOCKING 0x0"] * 10), 1, 1)
    assert exits == [pytest.approx(10 * sass_model.BARRIER, abs=2)]


def test_each_loop_takes_its_own_trips():
    inner = [("MUFU.EX2 R1, R2", 1, 0)] * 10 + ["@P0 BRA 0x0"]  # addresses 0 .. 160
    outer = inner + [("MUFU.EX2 R1, R2", 1, 0)] * 5 + ["@P1 BRA 0x0"]
    code = _listing(outer)
    assert [last for _, last in loops([r[:2] for r in code])] == [256, 160]  # the back edges
    for inner_trips, outer_trips in ((1, 1), (3, 1), (3, 4), (2, 5)):
        exits, _ = sass_model.replay(code, 1, 1, loop_trips={160: inner_trips, 256: outer_trips})
        mufu = outer_trips * (10 * inner_trips + 5)
        # the last exponential issues when the unit has taken the others; EXIT just after
        assert exits[0] == pytest.approx((mufu - 1) * sass_model.MUFU_CYCLES, abs=4)


def test_a_predicated_branch_is_taken_only_over_a_short_path():
    exit_path = ["@P0 BRA 0x30", "BRA 0x1000", "NOP"]  # the pid test: skip the early exit
    short = _listing(exit_path + [("MUFU.EX2 R1, R2", 1, 0)] * 20)
    exits, _ = sass_model.replay(short, 1, 1)
    assert exits[0] == pytest.approx(19 * sass_model.MUFU_CYCLES, abs=4)  # the work after it
    # a predicated branch over a long path (an if whose body the program runs) is not taken
    long_skip = _listing(["@P0 BRA 0x%x" % (16 * 40)] + [("MUFU.EX2 R1, R2", 1, 0)] * 30
                         + ["BRA 0x%x" % (16 * 40)] + ["NOP"] * 10)
    exits, _ = sass_model.replay(long_skip, 1, 1)
    assert exits[0] == pytest.approx(29 * sass_model.MUFU_CYCLES, abs=8)


def test_a_loop_tested_at_its_top_leaves_by_its_test():
    """A loop with an unconditional back edge leaves at its test's target, not into the code
    laid out after the back edge (another branch of an if, say)."""
    exit_at = 16 * 37
    loop = ([("MUFU.EX2 R1, R2", 1, 0)] * 5 + ["@P0 BRA 0x%x" % exit_at]
            + [("MUFU.EX2 R1, R2", 1, 0)] * 10 + ["BRA 0x0"])  # back edge at 0x100
    code = _listing(loop + [("MUFU.EX2 R1, R2", 1, 0)] * 20)  # EXIT at exit_at
    assert code[-1][0] == exit_at
    exits, _ = sass_model.replay(code, 1, 1, loop_trips={0x100: 3})
    assert exits[0] == pytest.approx((3 * 15 - 1) * sass_model.MUFU_CYCLES, abs=8)


if __name__ == "__main__":
    import json
    import os
    import sys

    assert "TRITON_INTERPRET" not in os.environ
    print(json.dumps({"controls": _controls}[sys.argv[1]]()))
