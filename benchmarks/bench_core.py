"""Core throughput benchmark: blockproc vs. a sequential single-process Python baseline.

    python benchmarks/bench_core.py [--size 1GiB] [--runs 3] [--workers 2]
        [--block-size 64MiB] [--data-dir benchmarks/data] [--json out.json]

Three workloads over a synthetic Apache access log (blockproc.datasets.access_log), with
the same per-line code (benchmarks/workloads.py) for every engine:

    W1 grep-upper  keep 5xx lines, upper-cased            map_lines   (+ map_command grep|tr)
    W2 counts      (method, status) counts                map_blocks  (per-block counts, summed)
    W3 parse       ip,status,bytes of every line          map_lines

Every case is a whole fresh run (blockproc: plan + spawn workers + run + commit), repeated
--runs times, interleaved (run 1 of every case, then run 2...). Each output is verified
against the first sequential baseline's before any time is reported; the script aborts on
a mismatch. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib
import importlib.util
import io
import json
import os
import platform
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Workers are spawned and import the workload functions by reference (cloudpickle), so
# benchmarks/ must be on sys.path *before* `import workloads`; spawned children get the
# parent's sys.path.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import workloads as wl  # noqa: E402  (benchmarks/workloads.py, found through sys.path)

if TYPE_CHECKING:
    import blockproc as bp
else:
    bp = None  # imported by load_blockproc(), after --snapshot may have frozen a copy

SEQ_CHUNK = 1 << 20  # the sequential baseline reads ~1 MiB of lines at a time
WORKLOAD_NAMES = {"W1": "W1 grep-upper", "W2": "W2 counts", "W3": "W3 parse"}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """``"1GiB"`` -> 2**30, ``"64MB"`` -> 64·10**6 (same units as blockproc)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64MiB, 1GiB, 500MB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


# --- input -------------------------------------------------------------------------------


def ensure_input(data_dir: Path, size: int, seed: int) -> Path:
    """Return the cached input of ``size`` bytes, generating it only if missing/wrong size.

    access_log stops at the first line end at or after ``size``, so a correct file is
    ``size`` bytes plus less than one line, and ends with a newline.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"access-{size}-seed{seed}.log"
    if path.exists():
        actual = path.stat().st_size
        ok = size <= actual < size + 4096
        if ok and actual:
            with open(path, "rb") as f:
                f.seek(actual - 1)
                ok = f.read(1) == b"\n"
        if ok:
            print(f"input: reusing {path} ({actual} bytes)", flush=True)
            return path
        print(f"input: {path} has the wrong size ({actual} bytes); regenerating", flush=True)
    # In a child process: the generator imports numpy, whose BLAS threads would otherwise
    # live (and briefly spin) in the process that does the timing.
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c",
                    "import sys; from blockproc.datasets import access_log; "
                    "access_log(sys.argv[1], int(sys.argv[2]), seed=int(sys.argv[3]))",
                    str(path), str(size), str(seed)], check=True)
    print(f"input: generated {path} ({path.stat().st_size} bytes) with "
          f"blockproc.datasets.access_log in {time.perf_counter() - t:.1f} s", flush=True)
    return path


def warm_cache(path: Path) -> float:
    """Read the whole file once so every case starts from a warm page cache."""
    t = time.perf_counter()
    buf = bytearray(1 << 20)  # one reused buffer: no big allocations in this process
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t


# --- sequential baselines ------------------------------------------------------------------


def iter_line_batches(path: Path, chunk_size: int = SEQ_CHUNK) -> Iterator[list[str]]:
    """Yield lists of lines, ~chunk_size bytes at a time, decoded like blockproc's "lines"
    format (UTF-8 strict, split on LF, a CR before the LF stripped)."""
    carry = b""
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1
            if not cut:
                carry = data
                continue
            carry = data[cut:]
            yield _split(data[:cut].decode())
    if carry:
        yield _split(carry.decode() + "\n")


def _split(text: str) -> list[str]:
    lines = text.split("\n")
    lines.pop()
    if "\r" in text:
        lines = [s[:-1] if s.endswith("\r") else s for s in lines]
    return lines


def seq_map_lines(fn: Callable[[str], Any], path: Path, out_path: Path) -> int:
    """Single-process baseline for map_lines: same fn, one output file. Returns lines in."""
    n = 0
    with open(out_path, "wb") as out_f:
        for lines in iter_line_batches(path):
            out: list[str] = []
            append = out.append
            for line in lines:
                r = fn(line)
                if r is not None:
                    append(r)
            if out:
                out_f.write(("\n".join(out) + "\n").encode())
            n += len(lines)
    return n


def seq_counts(path: Path, out_path: Path) -> int:
    """Single-process baseline for W2: counts over the whole file, one output file."""
    counts: Counter[tuple[str, str]] = Counter()
    n = 0
    for lines in iter_line_batches(path):
        wl.count_lines(lines, counts)
        n += len(lines)
    out_path.write_text("".join(s + "\n" for s in wl.format_counts(counts)))
    return n


SEQ_FUNCTIONS: dict[str, Callable[[str], Any]] = {"W1": wl.grep_5xx_upper,
                                                  "W3": wl.parse_project}


def seq_workload(workload: str, path: Path, out_path: Path) -> int:
    """Run the sequential baseline of ``workload``; return the number of input lines."""
    if workload == "W2":
        return seq_counts(path, out_path)
    return seq_map_lines(SEQ_FUNCTIONS[workload], path, out_path)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the heap (mmap and trim thresholds 1 GiB), the
    tuning blockproc's process workers apply to themselves; False where unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, ctypes.c_int(1 << 30))  # M_MMAP_THRESHOLD
                    and libc.mallopt(-1, ctypes.c_int(1 << 30)))  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


_SEQ_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
              "import bench_core; "
              "sys.argv[5] == 'tuned' and bench_core.keep_freed_memory(); "
              "print(bench_core.seq_workload(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))")


def seq_in_child(workload: str, path: Path, out_path: Path, tuned: bool = False) -> int:
    """Run the sequential baseline in a fresh Python process, like a user's script.

    A fresh process starts with glibc malloc's default thresholds, so (like blockproc's
    freshly spawned workers) it gets the ~1 MiB buffers it frees and re-allocates from the
    kernel again, page faults included; a long-lived process that once freed a big block
    (this one, after reading big outputs) does not. Timing both engines from fresh
    processes keeps that difference out of the comparison (see README). ``tuned`` applies
    :func:`keep_freed_memory` first, as blockproc does in its workers.
    """
    proc = subprocess.run([sys.executable, "-c", _SEQ_CHILD, str(HERE), workload, str(path),
                           str(out_path), "tuned" if tuned else "plain"],
                          check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the sequential baseline of {workload} failed:\n{proc.stderr}")
    return int(proc.stdout)


# --- cases ---------------------------------------------------------------------------------


@dataclass
class Case:
    key: str            # unique id, also the output dir name
    workload: str       # W1 / W2 / W3
    engine: str         # label in the table
    kind: str           # "seq" (the baseline), "seqm" (it, malloc-tuned), "bp", "shell"
    run: Callable[[Path], Any]   # run(out_dir) -> JobResult | lines in | None
    output: Callable[[Path], bytes]  # read what run() wrote
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)   # user+sys of this process + children
    load: list[float] = field(default_factory=list)  # 1-min load average before the run


def make_cases(path: Path, args: argparse.Namespace) -> list[Case]:
    common: dict[str, Any] = {"block_size": args.block_size, "workers": args.workers,
                              "executor": "processes", "if_exists": "overwrite",
                              "progress": False}
    src = str(path)

    def seq_out(d: Path) -> bytes:
        return (d / "out.txt").read_bytes()

    def bp_out(d: Path) -> bytes:
        return bytes(bp.testing.read_parts(str(d)))

    def shell_w1(d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as fin, open(d / "out.txt", "wb") as fout:
            subprocess.run(wl.GREP_5XX_UPPER_CMD, shell=True, stdin=fin, stdout=fout,
                           check=True)

    def seq(workload: str, tuned: bool = False) -> Callable[[Path], int]:
        def run(d: Path) -> int:
            d.mkdir(parents=True, exist_ok=True)
            if args.seq_in_process and not tuned:
                return seq_workload(workload, path, d / "out.txt")
            return seq_in_child(workload, path, d / "out.txt", tuned)
        return run

    def seqm(workload: str) -> Case:
        return Case(f"{workload.lower()}-seqm", workload, "seq-python +mallopt", "seqm",
                    seq(workload, tuned=True), seq_out)

    cases = [
        Case("w1-seq", "W1", "seq-python", "seq", seq("W1"), seq_out),
        seqm("W1"),
        Case("w1-bp", "W1", "blockproc map_lines", "bp",
             lambda d: bp.map_lines(wl.grep_5xx_upper, src, output=str(d), **common), bp_out),
        Case("w1-cmd", "W1", "blockproc map_command grep|tr", "bp",
             lambda d: bp.map_command(wl.GREP_5XX_UPPER_CMD, src, output=str(d), **common),
             bp_out),
        Case("w1-sh", "W1", "seq-shell grep|tr (1 proc)", "shell", shell_w1, seq_out),
        Case("w2-seq", "W2", "seq-python", "seq", seq("W2"), seq_out),
        seqm("W2"),
        Case("w2-bp", "W2", "blockproc map_blocks", "bp",
             lambda d: bp.map_blocks(wl.count_block, src, output=str(d), **common), bp_out),
        Case("w3-seq", "W3", "seq-python", "seq", seq("W3"), seq_out),
        seqm("W3"),
        Case("w3-bp", "W3", "blockproc map_lines", "bp",
             lambda d: bp.map_lines(wl.parse_project, src, output=str(d), **common), bp_out),
    ]
    wanted = set(args.workloads)
    return [c for c in cases if c.workload in wanted and (args.seq_tuned or c.kind != "seqm")]


# --- verification ----------------------------------------------------------------------------


class VerificationError(SystemExit):
    pass


@dataclass
class Reference:
    digest: str
    size: int
    path: Path                         # a copy of the baseline output, for diagnostics
    lines_in: int
    counts: Counter[tuple[str, str]] | None = None


def first_difference(a: bytes, b: bytes) -> str:
    n = min(len(a), len(b))
    i = next((i for i in range(0, n, 1 << 16) if a[i:i + (1 << 16)] != b[i:i + (1 << 16)]), n)
    while i < n and a[i] == b[i]:
        i += 1
    line = a[:i].count(b"\n") + 1
    return (f"first difference at byte {i} (output line {line}): "
            f"expected {a[i:i + 120]!r}, got {b[i:i + 120]!r}")


def verify(case: Case, out_dir: Path, result: Any, ref: Reference, keep_dir: Path) -> str:
    """Compare one run's output with the reference; abort the benchmark if they differ."""
    data = case.output(out_dir)
    problems: list[str] = []
    if case.workload == "W2":
        got = wl.parse_counts(data)
        if got != ref.counts:
            assert ref.counts is not None
            diff = {k: (ref.counts.get(k, 0), got.get(k, 0))
                    for k in set(ref.counts) | set(got) if ref.counts.get(k, 0) != got.get(k, 0)}
            problems.append(f"summed (method, status) counts differ from the baseline's "
                            f"totals (expected, got): {dict(sorted(diff.items()))}")
        detail = f"{sum(got.values())} lines counted, {len(got)} keys"
    else:
        digest = hashlib.sha256(data).hexdigest()
        if digest != ref.digest or len(data) != ref.size:
            problems.append(f"output ({len(data)} bytes, sha256 {digest[:16]}) != baseline "
                            f"({ref.size} bytes, sha256 {ref.digest[:16]}); "
                            + first_difference(ref.path.read_bytes(), data))
        detail = f"{len(data)} bytes, sha256 {digest[:16]}"
    if isinstance(result, bp.JobResult) and result.num_records != ref.lines_in:
        problems.append(f"blockproc read {result.num_records} records, the input has "
                        f"{ref.lines_in} lines")
    if isinstance(result, int) and result != ref.lines_in:
        problems.append(f"read {result} lines, the first baseline run read {ref.lines_in}")
    if problems:
        kept = keep_dir / f"FAILED-{case.key}"
        expected = keep_dir / f"FAILED-{case.key}-expected.txt"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.move(str(out_dir), kept)
        shutil.copyfile(ref.path, expected)
        raise VerificationError(
            f"\nVERIFICATION FAILED for {WORKLOAD_NAMES[case.workload]} / {case.engine}:\n  "
            + "\n  ".join(problems) + f"\n  its output was kept in {kept}, the baseline's "
            f"in {expected}. No timings are reported.")
    return detail


def make_reference(case: Case, out_dir: Path, lines_in: int, ref_dir: Path) -> Reference:
    data = case.output(out_dir)
    copy = ref_dir / f"reference-{case.workload}.txt"
    copy.write_bytes(data)
    counts = wl.parse_counts(data) if case.workload == "W2" else None
    if counts is not None and sum(counts.values()) != lines_in:
        raise VerificationError(f"W2 baseline counted {sum(counts.values())} lines of "
                                f"{lines_in}; the workload is broken")
    return Reference(hashlib.sha256(data).hexdigest(), len(data), copy, lines_in, counts)


# --- running -------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User+system CPU of this process and its waited-for children (blockproc's worker
    processes are joined when a job ends, grep/tr by subprocess), so a run's delta is the
    CPU it cost, whatever else the machine was doing."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def load_blockproc(snapshot_dir: Path | None) -> None:
    """Import blockproc, from a frozen copy of its source in ``snapshot_dir`` if given.

    Other engineers edit blockproc/ while benchmarks run; a snapshot keeps every row on one
    version (and a half-saved file from breaking a run). The copy is put first on sys.path,
    which spawned workers inherit, so they import the same copy.
    """
    global bp  # noqa: PLW0603  (one module-wide handle, set once before any use)
    if snapshot_dir is not None:
        spec = importlib.util.find_spec("blockproc")
        if spec is None or spec.origin is None:
            raise SystemExit("cannot find the blockproc package to snapshot")
        shutil.copytree(Path(spec.origin).parent, snapshot_dir / "blockproc",
                        ignore=shutil.ignore_patterns("__pycache__"))
        sys.path.insert(0, str(snapshot_dir))
    bp = importlib.import_module("blockproc")
    if snapshot_dir is not None and not Path(str(bp.__file__)).is_relative_to(snapshot_dir):
        raise SystemExit(f"blockproc was imported from {bp.__file__}, not the snapshot")


_SPIN = ("import sys, time\n"
         "sys.stdin.readline()\n"
         "t = time.perf_counter()\n"
         "x = 0\n"
         "for i in range({n}):\n"
         "    x += i\n"
         "print(time.perf_counter() - t)\n")


def cpu_scaling(procs: int, iterations: int = 10_000_000, repeats: int = 5) -> dict[str, Any]:
    """Measure how much faster ``procs`` CPU-bound Python processes get through work than
    one: the ceiling for any ``--workers procs`` speedup on this machine right now
    (``procs`` on an idle machine with ``procs`` real cores; less on shared/SMT vCPUs)."""
    code = _SPIN.format(n=iterations)

    def together(k: int) -> list[float]:
        ps = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True) for _ in range(k)]
        time.sleep(0.3)  # past interpreter start-up, so the loops overlap
        for proc in ps:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return [float(proc.communicate()[0]) for proc in ps]

    alones, ceilings = [], []
    for _ in range(repeats):  # pairs, so a slow spell hits both sides of one ratio
        alones.append(together(1)[0])
        ceilings.append(procs * alones[-1] / max(together(procs)))
    return {"procs": procs, "one_proc_s": round(statistics.median(alones), 4),
            "ceilings": [round(c, 3) for c in ceilings],
            "ceiling": round(statistics.median(ceilings), 3)}


def source_fingerprint() -> str:
    """sha256 of the installed blockproc package's *.py files (others edit it meanwhile)."""
    root = Path(bp.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def run_all(cases: list[Case], path: Path, args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    refs: dict[str, Reference] = {}
    checks: dict[str, str] = {}
    for r in range(args.runs):
        for case in cases:
            out_dir = tmp / case.key
            shutil.rmtree(out_dir, ignore_errors=True)
            load = os.getloadavg()[0]
            c = cpu_seconds()
            t = time.perf_counter()
            result = case.run(out_dir)
            elapsed = time.perf_counter() - t
            cpu = cpu_seconds() - c
            if case.kind == "seq" and case.workload not in refs:
                refs[case.workload] = make_reference(case, out_dir, result, tmp)
            ref = refs.get(case.workload)
            if ref is None:
                raise SystemExit(f"no sequential baseline ran before {case.key}")
            checks[case.key] = verify(case, out_dir, result, ref, Path(args.data_dir))
            case.times.append(elapsed)
            case.cpu.append(cpu)
            case.load.append(load)
            print(f"  run {r + 1}/{args.runs}  {WORKLOAD_NAMES[case.workload]:<14} "
                  f"{case.engine:<32} {elapsed:6.2f} s  cpu {cpu:6.2f} s  load {load:4.2f}  "
                  f"ok ({checks[case.key]})", flush=True)
            shutil.rmtree(out_dir, ignore_errors=True)
            os.sync()  # nothing left to write back while the next case runs
    return checks


def summarize(cases: list[Case], input_bytes: int) -> list[dict[str, Any]]:
    seq_median = {c.workload: statistics.median(c.times) for c in cases if c.kind == "seq"}
    shell_median = {c.workload: statistics.median(c.times) for c in cases if c.kind == "shell"}
    seqm_median = {c.workload: statistics.median(c.times) for c in cases if c.kind == "seqm"}
    rows = []
    for c in cases:
        med = statistics.median(c.times)
        row: dict[str, Any] = {
            "workload": WORKLOAD_NAMES[c.workload], "engine": c.engine, "kind": c.kind,
            "times_s": [round(t, 4) for t in c.times], "median_s": round(med, 4),
            "cpu_s": [round(t, 4) for t in c.cpu],
            "median_cpu_s": round(statistics.median(c.cpu), 4),
            "loadavg_1min_before": [round(x, 2) for x in c.load],
            "min_s": round(min(c.times), 4), "max_s": round(max(c.times), 4),
            "input_mb_per_s": round(input_bytes / 1e6 / med, 2),
            "ratio_vs_seq_python": round(med / seq_median[c.workload], 3),
        }
        if c.key == "w1-cmd" and "W1" in shell_median:
            row["ratio_vs_seq_shell"] = round(med / shell_median["W1"], 3)
        if c.kind == "bp" and c.workload in seqm_median:
            row["ratio_vs_seq_python_mallopt"] = round(med / seqm_median[c.workload], 3)
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'workload':<14} {'engine':<32} {'median s':>9} {'min s':>8} {'max s':>8} "
            f"{'MB/s':>8} {'bp/seq':>7} {'speedup':>8} {'cpu s':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r["ratio_vs_seq_python"]
        print(f"{r['workload']:<14} {r['engine']:<32} {r['median_s']:>9.2f} {r['min_s']:>8.2f} "
              f"{r['max_s']:>8.2f} {r['input_mb_per_s']:>8.1f} {ratio:>7.3f} {1 / ratio:>7.2f}x "
              f"{r['median_cpu_s']:>7.2f}")
    print("-" * len(head))
    print("bp/seq = median / median of seq-python for the same workload, this invocation "
          "(<1 is faster);\nspeedup = its inverse. MB/s = input bytes / 1e6 / median. cpu s = "
          "median user+sys CPU seconds of the\nbenchmark process and its children (workers, "
          "grep, tr) per run: the work done, whatever else runs.")
    for r in rows:
        if "ratio_vs_seq_shell" in r:
            print(f"map_command grep|tr vs seq-shell grep|tr (same command, 1 process, whole "
                  f"file): {r['ratio_vs_seq_shell']:.3f}")
    tuned = [r for r in rows if "ratio_vs_seq_python_mallopt" in r]
    if tuned:
        print("seq-python +mallopt = the baseline with the malloc tuning blockproc's workers "
              "apply to themselves;\nblockproc median / its median: " + ", ".join(
                  f"{r['workload'].split()[0]} {r['engine'].removeprefix('blockproc ')} "
                  f"{r['ratio_vs_seq_python_mallopt']:.3f}" for r in tuned))


# --- profiling -----------------------------------------------------------------------------


def profile(workload: str, path: Path, args: argparse.Namespace, tmp: Path, top: int) -> None:
    """cProfile one worker path: bp.map_*(..., executor="inline") in this process, and the
    sequential baseline for comparison."""
    out = tmp / "profile"
    fn = {"W1": wl.grep_5xx_upper, "W3": wl.parse_project}.get(workload)

    def run_bp() -> None:
        kw: dict[str, Any] = {"output": str(out), "block_size": args.block_size,
                              "executor": "inline", "if_exists": "overwrite",
                              "progress": False}
        if fn is None:
            bp.map_blocks(wl.count_block, str(path), **kw)
        else:
            bp.map_lines(fn, str(path), **kw)

    def run_seq() -> None:
        out.mkdir(parents=True, exist_ok=True)
        if fn is None:
            seq_counts(path, out / "out.txt")
        else:
            seq_map_lines(fn, path, out / "out.txt")

    for label, target in ((f"blockproc inline ({workload})", run_bp),
                          (f"seq-python ({workload})", run_seq)):
        shutil.rmtree(out, ignore_errors=True)
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.runcall(target)
        elapsed = time.perf_counter() - t
        for sort in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(sort).print_stats(top)
            text = buf.getvalue()
            text = text[text.find("   ncalls"):] if "   ncalls" in text else text
            print(f"\n=== profile: {label}, {elapsed:.2f} s under cProfile, top {top} by "
                  f"{sort} ===\n{text.rstrip()}")
    shutil.rmtree(out, ignore_errors=True)


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                   help="input size, e.g. 64MiB, 1GiB (default 1GiB)")
    p.add_argument("--runs", type=int, default=3, help="fresh runs per case (default 3)")
    p.add_argument("--workers", type=int, default=2, help="blockproc workers (default 2)")
    p.add_argument("--block-size", default="64MiB", help="blockproc block size (default 64MiB)")
    p.add_argument("--data-dir", default=str(HERE / "data"),
                   help="input cache and temp outputs (default benchmarks/data)")
    p.add_argument("--seed", type=int, default=0, help="access_log seed (default 0)")
    p.add_argument("--workloads", nargs="+", default=["W1", "W2", "W3"],
                   choices=["W1", "W2", "W3"], help="subset to run (default all)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--profile", choices=["W1", "W2", "W3"],
                   help="instead of benchmarking, cProfile bp.map_*(executor='inline') and "
                        "the sequential baseline for this workload")
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument("--snapshot", action="store_true",
                   help="benchmark a frozen copy of the blockproc source taken at start "
                        "(others may edit blockproc/ during the run)")
    p.add_argument("--seq-in-process", action="store_true",
                   help="run the sequential baseline in the benchmark process instead of a "
                        "fresh child process (favours it: see README, 'malloc')")
    p.add_argument("--no-seq-tuned", dest="seq_tuned", action="store_false",
                   help="skip the 'seq-python +mallopt' rows")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="skip measuring the machine's parallel CPU ceiling")
    args = p.parse_args(argv)
    if args.runs < 1 or args.workers < 1:
        p.error("--runs and --workers must be >= 1")

    data_dir = Path(args.data_dir).resolve()
    args.data_dir = str(data_dir)
    path = ensure_input(data_dir, args.size, args.seed)
    input_bytes = path.stat().st_size
    tmp = Path(tempfile.mkdtemp(prefix="bench-core-", dir=data_dir))
    try:
        load_blockproc(tmp / "snapshot" if args.snapshot else None)
        print(f"blockproc {bp.__version__} from {Path(bp.__file__).parent}"
              f"{' (snapshot)' if args.snapshot else ''}, source {source_fingerprint()}",
              flush=True)
        warm = warm_cache(path)
        print(f"page cache warmed: read {human(input_bytes)} in {warm:.2f} s", flush=True)
        if args.profile:
            profile(args.profile, path, args, tmp, args.profile_top)
            return 0
        cases = make_cases(path, args)
        scaling: list[dict[str, Any]] = []
        if args.calibrate:
            scaling.append(cpu_scaling(args.workers))
            print(f"CPU scaling ceiling for {args.workers} processes: "
                  f"{scaling[0]['ceiling']:.2f}x ({scaling[0]['ceilings']})", flush=True)
        load_before = os.getloadavg()
        print(f"running {len(cases)} cases x {args.runs} runs (interleaved), "
              f"workers={args.workers}, block_size={args.block_size}; "
              f"load avg {load_before[0]:.2f}", flush=True)
        started = time.time()
        fingerprint = source_fingerprint()
        checks = run_all(cases, path, args, tmp)
        load_after = os.getloadavg()
        fingerprint_after = source_fingerprint()
        if args.calibrate:
            scaling.append(cpu_scaling(args.workers))
        rows = summarize(cases, input_bytes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print()
    print(f"blockproc {bp.__version__} core benchmark | input {path.name}: {input_bytes} bytes "
          f"({human(input_bytes)}) | runs={args.runs} workers={args.workers} "
          f"block_size={args.block_size} | {cpus} CPUs | Python {platform.python_version()}")
    print(f"all outputs verified equal to the sequential baseline "
          f"(W1/W3 byte-identical, W2 summed counts) | load avg 1-min "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"blockproc source {fingerprint}" + (" (snapshot)" if args.snapshot else "") + (
        "" if fingerprint == fingerprint_after else
        f" -> {fingerprint_after}: WARNING, blockproc/ was edited during the run, so the "
        f"rows may mix versions"))
    if scaling:
        print(f"CPU scaling ceiling for {args.workers} CPU-bound processes vs 1 (pure-Python "
              f"loop, measured now): {scaling[0]['ceiling']:.2f}x before, "
              f"{scaling[-1]['ceiling']:.2f}x after the runs")
    print()
    print_table(rows)
    if args.json:
        doc = {
            "benchmark": "bench_core",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "config": {"size": args.size, "runs": args.runs, "workers": args.workers,
                       "block_size": args.block_size, "seed": args.seed,
                       "executor": "processes", "seq_chunk_bytes": SEQ_CHUNK,
                       "snapshot": args.snapshot, "seq_in_process": args.seq_in_process,
                       "malloc_env": {k: v for k, v in os.environ.items()
                                      if k.startswith(("MALLOC_", "GLIBC_TUNABLES",
                                                       "PYTHONMALLOC"))},
                       "command": wl.GREP_5XX_UPPER_CMD},
            "input": {"path": str(path), "bytes": input_bytes},
            "env": {"python": platform.python_version(), "blockproc": bp.__version__,
                    "blockproc_source_sha256": [fingerprint, fingerprint_after],
                    "cpus": cpus, "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": load_after,
                    "cpu_scaling_before_after": scaling},
            "verification": checks,
            "results": rows,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
