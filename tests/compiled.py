"""Reading compiled kernels without a GPU: ptxas resource usage and the SASS's structure.

Triton ships the NVIDIA tools it needs (``triton/backends/nvidia/bin``): ptxas
reports registers and spills of a PTX file, cuobjdump disassembles a cubin.
"""
import os
import re
import subprocess
import tempfile
from pathlib import Path

REGISTER_FILE = 65536  # 32-bit registers per SM (sm_80, sm_90)
REGISTER_UNIT = 8      # registers are allocated per thread in multiples of 8
MAX_WARPS = 64         # resident warps per SM (sm_90)

WIDE_LOAD = re.compile(r"\bLDG\.E\.(?:64|128)\b")
WIDE_STORE = re.compile(r"\bSTG\.E\.(?:64|128)\b")
LOAD = re.compile(r"\bLDG\.")
STORE = re.compile(r"\bSTG\.")
CROSS_THREAD = re.compile(r"\b(?:BAR\.|SHFL\.|LDS|STS)")
COMPARE = re.compile(r"\bISETP\.")
_LINE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"\bBRA(?:\.\S+)?\s+(?:0x)?([0-9a-f]+)\b")


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def ptxas_usage(ptx: str, arch: str = "sm_90a") -> tuple[int, int]:
    """(registers per thread, spill bytes stored plus loaded) of a PTX module."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        out = subprocess.run([_tool("ptxas"), "-v", f"--gpu-name={arch}", str(path), "-o",
                              os.devnull], capture_output=True, text=True, check=True).stderr
    registers = int(re.search(r"Used (\d+) registers", out).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", out))
    return registers, spills


def _disassemble(cubin: bytes) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run([_tool("cuobjdump"), "-sass", str(path)], capture_output=True,
                              text=True, check=True).stdout


def sass(cubin: bytes) -> list[tuple[int, str]]:
    """(address, instruction) of every SASS instruction of a cubin, in order."""
    return [(int(m.group(1), 16), m.group(2))
            for m in map(_LINE.match, _disassemble(cubin).splitlines()) if m]


def sass_control(cubin: bytes) -> list[tuple[int, str, int, int | None, int | None, int]]:
    """(address, instruction, stall cycles, scoreboard set by its result, scoreboard set
    until its sources are read, mask of scoreboards it waits for) of every instruction.
    cuobjdump prints each 128-bit instruction as two 64-bit words; the scheduling controls
    are bits 105-125 (sm_70 and later): stall 4 bits, yield 1, write and read scoreboards
    3 bits each (7: none), wait mask 6 bits."""
    rows, lines = [], _disassemble(cubin).splitlines()
    for line, following in zip(lines, lines[1:]):
        m = _LINE.match(line)
        high = re.match(r"^\s*/\* (0x[0-9a-f]{16}) \*/\s*$", following)
        if m and high:
            control = int(high.group(1), 16) >> 41
            write, read = control >> 5 & 7, control >> 8 & 7
            rows.append((int(m.group(1), 16), m.group(2), max(1, control & 15),
                         None if write == 7 else write, None if read == 7 else read,
                         control >> 11 & 63))
    return rows


def loads_awaited(code) -> list[int]:
    """For each instruction of ``sass_control`` rows, how many global loads issued before it
    must have returned their data by the time it issues: a wait on a scoreboard waits for
    every load that set it since the last wait on it."""
    pending, done, out = [0] * 6, 0, []
    for _, text, _, write, _, wait in code:
        for k in range(6):
            if wait >> k & 1:
                done, pending[k] = done + pending[k], 0
        out.append(done)
        if LOAD.search(text) and write is not None:
            pending[write] += 1
    return out


def exps_before_last_planes(control, classes: int) -> int:
    """Exponentials (MUFU.EX2) that issue while fewer than ``classes`` global loads have
    been awaited: a softmax's work done while its last class planes are on their way."""
    return sum(1 for awaited, row in zip(loads_awaited(control), control)
               if "MUFU.EX2" in row[1] and awaited < classes)


def loops(code: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """(first, last) addresses of each loop (a backward branch), outermost first."""
    found = set()
    for address, instruction in code:
        m = _BRANCH.search(instruction)
        if m and int(m.group(1), 16) < address:  # not the self-loop after EXIT
            found.add((int(m.group(1), 16), address))
    return sorted(found, key=lambda span: (span[0], -span[1]))


def innermost(span, spans) -> bool:
    """Whether no other loop of ``spans`` (``loops``) lies inside ``span``."""
    return not any(o != span and span[0] <= o[0] and o[1] <= span[1] for o in spans)


def within(code, span) -> list[str]:
    return [ins for address, ins in code if span[0] <= address <= span[1]]


def chain_depth(instructions, opcode: str) -> int:
    """The longest chain of ``opcode`` instructions (e.g. FMNMX) in a straight-line listing
    where each takes its operand from the one before: the dependent latency of a reduction
    written as a chain, or as a tree."""
    depth, longest = {}, 0
    for ins in instructions:
        ins = re.sub(r"^@!?U?P\w+\s+", "", ins)
        op = ins.split()[0]
        registers = re.findall(r"\bR(\d+)\b", ins[len(op):])
        if not registers:
            continue
        d = 0
        if op.split(".")[0] == opcode:
            d = 1 + max((depth.get(r, 0) for r in registers[1:]), default=0)
            longest = max(longest, d)
        depth[registers[0]] = d
    return longest


def count(instructions, pattern) -> int:
    return sum(1 for ins in instructions if pattern.search(ins))


def programs_per_sm(registers: int, warps: int, shared_bytes: int = 0,
                    shared_per_sm: int = 228 * 1024) -> int:
    """Resident programs of ``warps`` warps per SM, limited by registers, warps, shared memory."""
    per_thread = -(-registers // REGISTER_UNIT) * REGISTER_UNIT
    by_registers = REGISTER_FILE // (per_thread * 32 * warps)
    by_shared = shared_per_sm // shared_bytes if shared_bytes else by_registers
    return min(by_registers, MAX_WARPS // warps, by_shared)


def loop_facts(code, span, spans) -> dict:
    """What a loop of the SASS moves and how: its size, its global loads and stores (all,
    and 64/128-bit), cross-thread instructions, integer compares, whether every load
    precedes every store."""
    body = within(code, span)
    stores = [i for i, ins in enumerate(body) if STORE.search(ins)]
    return dict(span=span, instructions=len(body),
                outermost=not any(o[0] < span[0] and span[1] < o[1] for o in spans),
                innermost=not any(span[0] < o[0] and o[1] < span[1] for o in spans),
                loads=count(body, LOAD), wide_loads=count(body, WIDE_LOAD),
                stores=len(stores), wide_stores=count(body, WIDE_STORE),
                cross_thread=count(body, CROSS_THREAD), compares=count(body, COMPARE),
                loads_before_stores=not any(LOAD.search(ins) for ins in body[stores[0]:])
                if stores else True)


def specialise(kernel, args, kwargs, arch):
    """Signature, constexprs and attributes exactly as Triton's launcher derives them."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound,
                                                              specialization, options)
    return target, options, signature, constexprs, attrs


def compile_for(kernel, args, kwargs, arch):
    """The kernel compiled for sm_<arch> exactly as a launch with these arguments would be."""
    import triton
    from triton.compiler import ASTSource

    target, options, signature, constexprs, attrs = specialise(kernel, args, kwargs, arch)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                          options=options.__dict__)


def distinct_specialisations(tagged_launches):
    """(tag, kernel, args, kwargs, constexprs) of each distinct specialisation among recorded
    (tag, (kernel, args, kwargs)) launches, the first time it is seen."""
    seen = set()
    for tag, (kernel, args, kwargs) in tagged_launches:
        _, _, signature, constexprs, _ = specialise(kernel, args, kwargs, 90)
        key = (kernel.__name__, tuple(sorted(signature.items())),
               tuple(sorted((str(k), str(v)) for k, v in constexprs.items())))
        if key not in seen:
            seen.add(key)
            yield tag, kernel, args, kwargs, constexprs


def map_in_processes(work, n: int) -> list:
    """[work(0), ..., work(n - 1)] on up to os.cpu_count() forked processes (the compiles
    of a specialisation are independent and each takes one core). ``work`` and what it
    reads are inherited by the fork, not pickled; its results must pickle."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(n, os.cpu_count() or 1, 8)
    if workers <= 1:
        return [work(i) for i in range(n)]
    _FORKED_WORK[0] = work
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_forked_call, range(n)))
    finally:
        _FORKED_WORK[0] = None


_FORKED_WORK = [None]


def _forked_call(i):
    return _FORKED_WORK[0](i)
