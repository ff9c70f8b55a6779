"""The probe of which programs share an SM (benchmarks/program_pairs.py) and the stagger rule
it checks, without a GPU: the rule under the interpreter, the probe's PTX for sm_90a."""
import json
import random
import sys

import pytest
import torch
import triton
import triton.language as tl

from benchmarks import program_pairs
from fastmtl.kernels.fused_loss import sleeper  # after benchmarks.program_pairs, which imports fastmtl.ops


@triton.jit
def _sleepers(out_ptr, n, FIRST_WAVE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.arange(0, BLOCK)
    tl.store(out_ptr + pid, sleeper(pid, FIRST_WAVE).to(tl.int32), mask=pid < n)


def _rule(first_wave, n):
    out = torch.full((n,), -1, dtype=torch.int32)
    _sleepers[(1,)](out, n, FIRST_WAVE=first_wave, BLOCK=512)
    return out.tolist()


@pytest.mark.parametrize("sms", [132, 114, 7])
def test_the_rule_splits_both_kinds_of_pair(sms):
    from fastmtl.ops.common import interpreted

    if not interpreted():
        pytest.skip("runs the rule under TRITON_INTERPRET=1")
    n = 2 * sms
    sleeps = _rule(sms, n)
    # every SM once before any twice: SM s holds s and s + sms
    breadth = [s % sms for s in range(n)]
    # each SM filled before the next: SM k holds 2k and 2k + 1
    depth = [s // 2 for s in range(n)]
    for sm_of in (breadth, depth):
        report = program_pairs.pairing(sm_of, sleeps, sms)
        assert report["sms_with_two"] == sms and report["split_by_the_rule"] == sms
    assert program_pairs.pairing(breadth, sleeps, sms)["pid_and_pid_plus_sms"] == sms
    assert program_pairs.pairing(depth, sleeps, sms)["consecutive"] == sms
    # Any other pairing is split only by chance: the probe is what tells.
    shuffled = list(range(sms))
    random.Random(0).shuffle(shuffled)
    other = [s if s < sms else shuffled[s - sms] for s in range(n)]
    report = program_pairs.pairing(other, sleeps, sms)
    assert report["pid_and_pid_plus_sms"] < sms and report["split_by_the_rule"] < sms
    assert "split" in program_pairs.describe(report)


def test_the_probe_compiles_for_sm90():
    from helpers import run_compiled

    report = run_compiled(__file__, "compile", timeout=300)
    assert report["smid"] and report["nanosleep"], report


if __name__ == "__main__":
    from compiled import compile_for, sass_control

    assert sys.argv[1] == "compile"
    sm, sleeps = torch.empty(256, dtype=torch.int32), torch.empty(256, dtype=torch.int32)
    compiled = compile_for(program_pairs._where_programs_run, (sm, sleeps),
                           dict(FIRST_WAVE=132, num_warps=32), 90)
    code = [text for _, text, *_ in sass_control(compiled.asm["cubin"])]
    print(json.dumps(dict(smid=any("SR_VIRTUALSMID" in t or "SR_SMID" in t for t in code)
                          or "%smid" in compiled.asm["ptx"],
                          nanosleep=any("NANOSLEEP" in t for t in code))))
