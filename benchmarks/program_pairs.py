"""Which programs share an SM in a grid of one wave at two programs per SM (CUDA).

The out-of-step candidates of ``benchmarks.tune`` put one of each SM's two programs to sleep
before its first tile (``fastmtl.kernels.fused_loss._staggered``), choosing it by
``sleeper(pid, SM count)``: that splits the pair if the block scheduler fills every SM once
before any twice (pid and pid + SM count together) or each SM with consecutive programs
(2k and 2k + 1). Which it does is not documented, so this probe looks: it launches the
tuning grid's number of programs of 1024 threads (at most two fit an SM, as with the fused
pass's 255 registers), each holding its SM for 100 us so that all are resident together and
recording its SM (``%smid``) and what ``sleeper`` says. ``benchmarks.tune`` reports the
result beside the C = 150 cases.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import triton
import triton.language as tl

from fastmtl.ops.fused_layout import multiprocessors
from fastmtl.kernels.fused_loss import sleeper  # after fastmtl.ops, which maps kernels/ in a checkout


@triton.jit
def _where_programs_run(sm_ptr, sleeper_ptr, FIRST_WAVE: tl.constexpr):
    pid = tl.program_id(0)
    sm = tl.inline_asm_elementwise("mov.u32 $0, %smid;\n\tnanosleep.u32 100000;", "=r,r",
                                   [pid], dtype=tl.int32, is_pure=False, pack=1)
    tl.store(sm_ptr + pid, sm)
    tl.store(sleeper_ptr + pid, sleeper(pid, FIRST_WAVE).to(tl.int32))


def pairing(sm_of: list[int], sleeps: list[int], first_wave: int) -> dict:
    """How the programs fell on the SMs: SMs holding two, how many of those pairs are
    (pid, pid + first_wave) and (2k, 2k + 1), and for how many exactly one sleeps."""
    on = defaultdict(list)
    for pid, sm in enumerate(sm_of):
        on[sm].append(pid)
    pairs = [sorted(p) for p in on.values() if len(p) == 2]
    return dict(programs=len(sm_of), sms_used=len(on), first_wave=first_wave,
                sms_with_two=len(pairs), most_on_one_sm=max(map(len, on.values()), default=0),
                pid_and_pid_plus_sms=sum(b - a == first_wave for a, b in pairs),
                consecutive=sum(b - a == 1 and a % 2 == 0 for a, b in pairs),
                split_by_the_rule=sum(sleeps[a] != sleeps[b] for a, b in pairs))


def probe(device: torch.device, programs: int) -> dict:
    """Launch the probe over ``programs`` programs and report ``pairing``."""
    first_wave = multiprocessors(device)
    sm = torch.full((programs,), -1, dtype=torch.int32, device=device)
    sleeps = torch.full_like(sm, -1)
    _where_programs_run[(programs,)](sm, sleeps, FIRST_WAVE=first_wave, num_warps=32)
    return pairing(sm.tolist(), sleeps.tolist(), first_wave)


def describe(report: dict) -> str:
    return (f"Program pairs (`benchmarks/program_pairs.py`, {report['programs']} programs of 1024 "
            f"threads): {report['sms_with_two']} of {report['sms_used']} SMs held two (at most "
            f"{report['most_on_one_sm']} on one); {report['pid_and_pid_plus_sms']} pairs were "
            f"pid and pid + {report['first_wave']}, {report['consecutive']} were 2k and 2k + 1; "
            f"the stagger rule split {report['split_by_the_rule']} of the {report['sms_with_two']}"
            " pairs.")
