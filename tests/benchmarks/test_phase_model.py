"""The fluid model of two programs per SM (benchmarks/phase_model.py) against closed forms."""
import math

import pytest

from benchmarks import phase_model as pm

RATE = 4259.0 / 132  # KB per microsecond and SM


@pytest.mark.parametrize("compute", [0.5, 2.43, 7.0])
def test_in_step_is_both_transfers_then_both_computations(compute):
    # Started together, every round is 2 (L + S) / b of transfers, then 2 K of arithmetic
    # shared by both; the first round's loads and the last round's stores add up to one.
    got = pm.round_us(76.8, 76.8, compute, RATE, offset_us=0.0, tiles=16)
    assert got == pytest.approx(pm.in_step_us(76.8, 76.8, compute, RATE), rel=1e-9)


@pytest.mark.parametrize("offset", [0.0, 1.0, 2.5, 3.0, 4.0, 7.5])
@pytest.mark.parametrize("jitter,seed", [(0.0, 0), (0.3, 1), (0.3, 2)])
def test_no_schedule_beats_the_memory_bound(offset, jitter, seed):
    bound = 2 * (76.8 + 40.0) / RATE
    for compute in (0.0, 1.2, 2.4, 6.0):
        got = pm.round_us(76.8, 40.0, compute, RATE, offset, tiles=24, jitter=jitter, seed=seed)
        assert got >= bound * (1 - 1e-9)
        assert got <= pm.in_step_us(76.8, 40.0, compute * (1 + jitter), RATE) + offset / 24 + 1e-9


@pytest.mark.parametrize("compute", [0.5, 2.43, 4.86])
def test_halves_on_their_own_pipes_in_step_take_the_same_time(compute):
    # Started together, halves that do not share a pipe each compute 2 K in the time two
    # programs sharing one take for K each.
    own = pm.round_us(76.8, 76.8, 2 * compute, RATE, 0.0, tiles=16, shared_pipe=False)
    assert own == pytest.approx(pm.in_step_us(76.8, 76.8, compute, RATE), rel=1e-9)


def test_without_arithmetic_the_memory_never_idles():
    for offset in (0.0, 2.0):
        got = pm.round_us(76.8, 76.8, 0.0, RATE, offset, tiles=8)
        assert got == pytest.approx(2 * 2 * 76.8 / RATE, rel=1e-9)


def test_the_table_prints_from_the_command_line(capsys):
    assert pm.main(["--jitter", "0.1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| bf16") or
            line.startswith("| fp32")]
    assert len(rows) == 2 * 2 * 2 * 7
    assert all(not math.isnan(float(r.split("|")[5])) for r in rows)
