"""A cost model of a kernel's SASS on one scheduler of an H100 SM: what the static figures
cannot say alone, whether the memory idles while the warps compute.

Each instruction's control bits (``compiled.sass_control``) say how many cycles its warp
waits before issuing the next one (the stall count), which scoreboard its result sets and
which scoreboards it waits for. The model replays ``warps`` warps on one scheduler, one per
resident program (an SM's four schedulers are alike), issuing one instruction per cycle from
the warp that can go first:

- a global load's data come back ``latency`` cycles after it issues, or later when the
  scheduler's share of copy bandwidth (shared with the stores) is behind: memory is a pipe
  of ``BANDWIDTH`` bytes per cycle;
- a MUFU instruction (exp2, log2, rcp) issues only when its unit is free and holds it for 8
  cycles (16 lanes per SM and cycle: a warp takes 8 cycles of a scheduler's quarter);
- any other scoreboarded result is ready ``OTHER_LATENCY`` cycles after issue;
- a warp that exits is replaced by the next program's, ``LAUNCH`` cycles later.

Control flow follows a program with full tiles: a backward branch (a loop's back edge) is
taken ``trips`` - 1 times per visit (or as ``loop_trips`` says for that loop), a forward one
if unconditional, or if predicated only where it skips a short path (at most
``SHORT_SKIP`` instructions) that ends in an unconditional branch (the ``pid < n_tiles``
test).

Every global load goes to DRAM unless ``cached`` says otherwise: for kernels whose loads
hit in L1 or L2 (the 1/8-resolution kernels re-read their taps), ``cached(address, text)``
gives such a load's latency, and it takes no share of the bandwidth. Shared-memory and
local (spill) loads return after ``SHARED_LATENCY``. A barrier holds its warp for
``BARRIER`` cycles: the model runs one warp of each program, so it takes a program's warps
as arriving together (one per scheduler).

An estimate, not a measurement: docs/kernel.md ("A cost model of the SASS") compares it with
the kernels timed on an H100.
"""
from __future__ import annotations

CLOCK = 1.755e9                          # SM clock under load (Hz)
BANDWIDTH = 3016e9 / 132 / 4 / CLOCK     # bytes per cycle per scheduler at H100 copy bandwidth
MUFU_CYCLES = 8
MUFU_LATENCY = 12
OTHER_LATENCY = 24
READ_RELEASE = 12                        # cycles until an instruction's source registers free
LAUNCH = 300                             # cycles from a program's exit to the next one's start
SHARED_LATENCY = 32                      # shared-memory and local loads
BARRIER = 24                             # cycles a warp waits at a barrier its program's warps reach together
SHORT_SKIP = 8                           # the longest path a predicated forward branch is taken over
_WIDTHS = ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1))


def _opcode(text: str) -> tuple[bool, str]:
    tokens = text.split()
    predicated = tokens[0].startswith("@")
    return predicated, tokens[1] if predicated else tokens[0]


def access_bytes(opcode: str) -> int:
    """Bytes a warp moves with one LDG/STG (32 lanes)."""
    return 32 * next((b for tag, b in _WIDTHS if tag in opcode), 4)


def _skip_branch(code, index, target) -> bool:
    # a forward predicated branch over a short path ending in an unconditional branch
    for address, text, *_ in code[index + 1:index + 1 + SHORT_SKIP]:
        if address >= target:
            return False
        predicated, op = _opcode(text)
        if op.startswith("BRA") and not predicated:
            return True
    return False


def _loop_exit(code, at_address, start, back_edge) -> int:
    """Where a loop's last trip leaves: after a predicated back edge; for an unconditional
    one (the loop's test at its top), at the target of the body's first predicated branch
    past the back edge."""
    if _opcode(code[back_edge][1])[0]:
        return back_edge + 1
    for address, text, *_ in code[at_address[start]:back_edge]:
        predicated, op = _opcode(text)
        if predicated and op.startswith("BRA") and _target(text) > code[back_edge][0]:
            return at_address[_target(text)]
    return back_edge + 1


def _target(text: str) -> int:
    return int(text.split()[-1].rstrip(";"), 16)


def replay(code, warps: int, programs: int, trips: int = 1, latency: int = 900,
           loop_trips: dict | None = None, cached=None):
    """Replays ``programs`` programs of the kernel, ``warps`` resident at a time on one
    scheduler. ``code``: ``compiled.sass_control`` rows; ``loop_trips``: {back edge's
    address: trips} where a loop's differ from ``trips``; ``cached(address, text)``: the
    latency of a global load that hits in cache, None for one from DRAM. Returns (the cycle
    at which each program's warp exits, in order; bytes moved by its DRAM loads and
    stores)."""
    loop_trips = loop_trips or {}
    at_address = {row[0]: i for i, row in enumerate(code)}
    memory_free = mufu_free = 0.0
    moved = 0

    def start(cycle):
        return dict(pc=0, ready=cycle, pending=[[] for _ in range(6)], visits={})

    slots = [start(0.0) for _ in range(warps)]
    started, exits, cycle = warps, [], 0.0
    while any(slots):
        best = None
        for warp in filter(None, slots):
            _, text, _, _, _, wait = code[warp["pc"]]
            ready = max([warp["ready"]] + [max(warp["pending"][k]) for k in range(6)
                                           if wait >> k & 1 and warp["pending"][k]])
            if _opcode(text)[1].startswith("MUFU"):  # the unit takes one every 8 cycles
                ready = max(ready, mufu_free)
            if best is None or ready < best[0]:
                best = (ready, warp)
        ready, warp = best
        issue = max(ready, cycle)
        address, text, stall, write_sb, read_sb, wait = code[warp["pc"]]
        for k in range(6):
            if wait >> k & 1:
                warp["pending"][k] = []
        predicated, op = _opcode(text)
        hit = cached(address, text) if cached and op.startswith("LDG") else None
        if hit is not None:
            done, release = issue + hit, issue + READ_RELEASE
        elif op.startswith(("LDG", "STG")):
            n = access_bytes(op)
            moved += n
            memory_free = max(issue, memory_free) + n / BANDWIDTH
            done = max(issue + latency, memory_free)
            release = issue + READ_RELEASE
        elif op.startswith(("LDS", "LDL")):
            done, release = issue + SHARED_LATENCY, issue + READ_RELEASE
        elif op.startswith("MUFU"):
            mufu_free = issue + MUFU_CYCLES
            done, release = mufu_free + MUFU_LATENCY, issue + READ_RELEASE
        else:
            done, release = issue + OTHER_LATENCY, issue + READ_RELEASE
        if write_sb is not None:
            warp["pending"][write_sb].append(done)
        if read_sb is not None:
            warp["pending"][read_sb].append(release)
        cycle, warp["ready"] = issue + 1, issue + (BARRIER if op.startswith("BAR") else stall)
        if op == "EXIT" and not predicated:
            exits.append(issue)
            slots[slots.index(warp)] = start(issue + LAUNCH) if started < programs else None
            started += 1
            continue
        nxt = warp["pc"] + 1
        if op.startswith("BRA"):
            target = _target(text)
            if target < address:  # a loop's back edge
                visits = warp["visits"].get(address, 0) + 1
                if visits < loop_trips.get(address, trips):
                    warp["visits"][address], nxt = visits, at_address[target]
                else:
                    warp["visits"][address], nxt = 0, _loop_exit(code, at_address, target,
                                                                 warp["pc"])
            elif not predicated or _skip_branch(code, warp["pc"], target):
                nxt = at_address[target]
        warp["pc"] = nxt
    return exits, moved


def cycles_per_program(code, warps: int, trips: int = 1, latency: int = 900,
                       programs_per_warp: int = 10) -> tuple[float, float]:
    """Steady-state cycles between two programs' exits on one scheduler slot, and the bytes
    each moves, over ``programs_per_warp`` rounds of ``warps`` programs."""
    exits, moved = replay(code, warps, warps * programs_per_warp, trips, latency)
    exits.sort()
    rounds = len(exits) - warps
    return (exits[-1] - exits[warps - 1]) / rounds * warps, moved / len(exits)


def estimate_ms(code, warps: int, pixels: int, pixels_per_warp: int, trips: int = 1,
                latency: int = 900, sms: int = 132) -> float:
    """Time of a kernel over ``pixels`` pixels, each program's warp taking ``pixels_per_warp``
    per tile and ``trips`` tiles, on an H100 (est.)."""
    cycles, _ = cycles_per_program(code, warps, trips, latency)
    programs_per_scheduler = pixels / (sms * 4) / (pixels_per_warp * trips)
    return programs_per_scheduler * cycles / warps / CLOCK * 1e3
