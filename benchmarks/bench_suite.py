"""blockproc vs. a hand-written Pool and its other peers, and the issue-14 targets, in one run.

    python benchmarks/bench_suite.py --size 1GiB --runs 3 --workers 2

Generates (or reuses) a synthetic access log with blockproc.datasets.access_log, then runs,
interleaved (run 1 of every case, then run 2, ...), each case as a fresh child process
timed end to end (interpreter start to exit, as a user runs it):

  W1 grep-upper / W2 counts / W3 parse, with the code of benchmarks/workloads.py:
    seq-python, the hand-written multiprocessing.Pool (~1 MiB whole-line batches, one call
    per batch), dask bag (skipped if dask is missing), GNU parallel --pipepart (skipped if
    not installed), bp map_lines (W2: map_blocks with per-line code), bp map_batches (the
    Pool's per-batch code), bp map_blocks with the Pool's per-batch code over the block's
    records, bp map_blocks vectorised (peers.w*_block), and for W1 bp map_command grep|tr;
  T2 10,000 blocks of 4 KiB on --data-dir's disk, identity map_lines: blocks/s;
  T3 start-up: `import blockproc`, the CLI on 1 MiB, a 1,000-line job from a fresh process
     vs a forked Pool(2), and the warm path (a second small job in the same interpreter);
  T4 peak RSS on a small vs a big input; T5 raw scan (map_blocks counting bytes): GB/s.

Every output is verified against the sequential baseline before any time is reported.
--profile W1|W2|W3 runs cProfile over one worker's path instead. Results: a table on
stdout, and benchmarks/results/suite-<stamp>.{json,md}. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
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
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import peers  # noqa: E402
import workloads as wl  # noqa: E402

MiB = 1 << 20
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20,
          "gib": 2**30}


def parse_size(text: str) -> int:
    """``"1GiB"`` -> 2**30, ``"64MB"`` -> 64e6."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64MiB, 1GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def fmt_size(n: int) -> str:
    return f"{n / 2**30:g}GiB" if n >= 2**30 else f"{n / 2**20:g}MiB"


# --- the child side: one run of one case, in a fresh process ------------------------------


def _bp_common(spec: dict[str, Any]) -> dict[str, Any]:
    return {"block_size": spec["block_size"], "workers": spec["workers"],
            "executor": "processes", "if_exists": "overwrite", "progress": False}


def _run_bp(engine: str, workload: str, path: str, out: str, kw: dict[str, Any]) -> int:
    """One blockproc engine; return the records it read."""
    import blockproc as bp

    if engine == "bp-lines":
        if workload == "W2":
            return bp.map_blocks(wl.count_block, path, output=out, **kw).num_records
        return bp.map_lines(peers.LINE_FNS.get(workload, peers.identity), path, output=out,
                            **kw).num_records
    if engine == "bp-batches":
        return bp.map_batches(peers.BATCH_FNS[workload], path, output=out, batch_size=MiB,
                              **kw).num_records
    if engine == "bp-records":
        return bp.map_blocks(peers.RECORDS_FNS[workload], path, output=out, **kw).num_records
    if engine == "bp-blocks":
        return bp.map_blocks(peers.BLOCK_FNS[workload], path, output=out, **kw).num_records
    if engine == "bp-cmd":
        return bp.map_command(wl.GREP_5XX_UPPER_CMD, path, output=out, **kw).num_records
    if engine == "bp-scan":
        return bp.map_blocks(peers.scan_block, path, output=out, **kw).num_records
    raise SystemExit(f"unknown engine {engine}")


def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one case once in this (fresh) process; return wall, CPU, peak RSS, records."""
    engine, workload, path, out = spec["engine"], spec["workload"], spec["path"], spec["out"]
    workers, block_size = spec["workers"], spec["block_size"]
    records: int | None = None
    t = time.perf_counter()
    if engine.startswith("bp-"):
        records = _run_bp(engine, workload, path, out, _bp_common(spec))
    elif engine == "seq":
        records = peers.run_seq(workload, path, out, workers, block_size)
    elif engine in ("pool", "pool-mallopt"):
        if engine == "pool-mallopt":
            keep_freed_memory()
        records = peers.run_pool(workload, path, out, workers, block_size)
    elif engine == "dask":
        peers.run_dask(workload, path, out, workers, block_size)
    elif engine == "parallel":
        peers.run_parallel(workload, path, out, workers, block_size)
    elif engine == "parallel-grep":
        peers.run_parallel_grep(workload, path, out, workers, block_size)
    elif engine == "shell-grep":
        os.makedirs(out, exist_ok=True)
        with open(path, "rb") as fin, open(os.path.join(out, "out.txt"), "wb") as fout:
            subprocess.run(wl.GREP_5XX_UPPER_CMD, shell=True, stdin=fin, stdout=fout,
                           check=True)
    else:
        raise SystemExit(f"unknown engine {engine}")
    wall = time.perf_counter() - t
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "records": records,
            "cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            "sys": me.ru_stime + kids.ru_stime,
            "rss_self_kib": _own_peak_rss_kib(me.ru_maxrss), "rss_children_kib": kids.ru_maxrss}


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the heap (mmap and trim thresholds 1 GiB), the
    tuning blockproc's process workers apply to themselves (README, "malloc"); forked
    Pool workers inherit it. False where unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, ctypes.c_int(1 << 30))  # M_MMAP_THRESHOLD
                    and libc.mallopt(-1, ctypes.c_int(1 << 30)))  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def _own_peak_rss_kib(fallback: int) -> int:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over fork+exec, so a
    child would report its parent's size; VmHWM belongs to this process image only.
    (RUSAGE_CHILDREN maxrss, used for the engines' workers, is the largest child's.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return fallback


# --- the parent side ----------------------------------------------------------------------


def ensure_input(data_dir: Path, size: int, seed: int = 0) -> Path:
    """The cached access log of ``size`` bytes (+ < 1 line), generated in a child process."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"access-{size}-seed{seed}.log"
    if path.exists() and size <= path.stat().st_size < size + 4096:
        with open(path, "rb") as f:
            f.seek(-1, 2)
            if f.read(1) == b"\n":
                return path
    t = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    subprocess.run([sys.executable, "-c",
                    "import sys; from blockproc.datasets import access_log; "
                    "access_log(sys.argv[1], int(sys.argv[2]), seed=int(sys.argv[3]))",
                    str(tmp), str(size), str(seed)], check=True)
    tmp.rename(path)
    print(f"input: generated {path} in {time.perf_counter() - t:.1f} s", flush=True)
    return path


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(16 * MiB):
            pass


class Runner:
    """Runs child processes with the right PYTHONPATH (the snapshot, then benchmarks/)."""

    def __init__(self, pythonpath: list[str]) -> None:
        self.env = dict(os.environ)
        # As users run it: byte-code cached, not compiled again by every process.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPATH"] = os.pathsep.join(
            pythonpath + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p])

    def child(self, spec: dict[str, Any]) -> dict[str, Any]:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / "bench_suite.py"), "--child",
                               json.dumps(spec)], env=self.env, capture_output=True, text=True,
                              check=False)
        outer = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"case {spec['engine']} {spec['workload']} failed "
                             f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        result["outer_wall"] = outer
        return result


def read_output(engine: str, out: Path) -> bytes:
    """The output of a run as one byte string, in input order."""
    if engine.startswith("bp-"):
        manifest = json.loads((out / "_SUCCESS").read_text())
        return b"".join((out / b["part"]).read_bytes() for b in manifest["blocks"])
    if engine in ("pool", "pool-mallopt"):
        return b"".join(p.read_bytes() for p in sorted(out.glob("part-*")))
    if engine == "dask":
        return b"".join(p.read_bytes() for p in sorted(out.glob("*.part")))
    return (out / "out.txt").read_bytes()


def attempts(engine: str, out: Path) -> str:
    """A blockproc run's attempts from its manifest: ``17 attempts`` or ``18 attempts
    (1 speculative)``, so a copy started for the last block (CPU spent twice) shows."""
    if not engine.startswith("bp-"):
        return ""
    totals = json.loads((out / "_SUCCESS").read_text()).get("attempt_totals", {})
    spec = totals.get("speculative", 0)
    return f"{totals.get('attempts', '?')} attempts" + (f" ({spec} speculative)" if spec else "")


def first_difference(a: bytes, b: bytes) -> str:
    """Where ``b`` first differs from ``a``, with the bytes around it."""
    n = min(len(a), len(b))
    i = next((i for i in range(0, n, 1 << 16) if a[i:i + (1 << 16)] != b[i:i + (1 << 16)]), n)
    while i < n and a[i] == b[i]:
        i += 1
    line = a[:i].count(b"\n") + 1
    return (f"first difference at byte {i} (output line {line}): "
            f"expected {a[i:i + 120]!r}, got {b[i:i + 120]!r}")


class Verifier:
    """Compares every run's output with the first sequential run of its workload."""

    def __init__(self, lines_in: int) -> None:
        self.refs: dict[str, tuple[str, int, Counter[tuple[str, str]] | None]] = {}
        self.ref_data: dict[str, bytes] = {}
        self.lines_in = lines_in

    def check(self, case: dict[str, Any], out: Path, res: dict[str, Any]) -> str:
        data = read_output(case["engine"], out)
        w = case["workload"]
        if w == "W2":
            got = wl.parse_counts(data)
            key: Any = got
            detail = f"{sum(got.values())} lines counted, {len(got)} keys"
        else:
            key = hashlib.sha256(data).hexdigest()
            detail = f"{len(data)} bytes, sha256 {key[:12]}"
        if w not in self.refs:
            if case["engine"] != "seq":
                raise SystemExit(f"no sequential reference before {case['name']}")
            self.refs[w] = (key if w != "W2" else "", len(data), got if w == "W2" else None)
            self.ref_data[w] = data
            if w == "W2" and sum(got.values()) != self.lines_in:
                raise SystemExit("the W2 baseline does not count every line")
        ref = self.refs[w]
        ok = (ref[2] == key) if w == "W2" else (ref[0] == key and ref[1] == len(data))
        if res.get("records") is not None and res["records"] != self.lines_in:
            ok = False
            detail += f"; read {res['records']} records of {self.lines_in}"
        if not ok and w != "W2" and w in self.ref_data:
            detail += "; " + first_difference(self.ref_data[w], data)
        if not ok:
            keep = out.parents[2] / f"FAILED-{case['name'].replace(' ', '_')}"  # data dir
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(str(out), keep)
            raise SystemExit(f"VERIFICATION FAILED for {case['name']}: {detail}; expected "
                             f"{ref[1]} bytes; output kept in {keep}. No timings reported.")
        return detail


def throughput_cases(args: argparse.Namespace, have_dask: bool,
                     have_parallel: bool) -> list[dict[str, Any]]:
    import blockproc as bp

    cases = []
    for w in args.workloads:
        engines = ["seq", "pool"] + (["pool-mallopt"] if args.pool_mallopt else [])
        if have_dask:
            engines.append("dask")
        if have_parallel:
            engines.append("parallel")
        engines += ["bp-lines"]
        if hasattr(bp, "map_batches"):
            engines.append("bp-batches")
        engines += ["bp-records"] if w != "W2" else []  # W2's bp-lines is that already
        engines += ["bp-blocks"]
        if w == "W1":
            engines += ["bp-cmd", "shell-grep"] + (["parallel-grep"] if have_parallel else [])
        for e in engines:
            cases.append({"workload": w, "engine": e, "name": f"{w} {e}"})
    return cases


ENGINE_LABEL = {
    "seq": "seq-python (1 proc)", "pool": "hand-written Pool, 1MiB batches",
    "pool-mallopt": "hand-written Pool +mallopt", "dask": "dask bag (processes)",
    "parallel": "GNU parallel --pipepart py", "bp-lines": "bp map_lines",
    "bp-batches": "bp map_batches (Pool's fn)", "bp-records": "bp map_blocks (Pool's fn)",
    "bp-blocks": "bp map_blocks vectorised", "bp-cmd": "bp map_command grep|tr",
    "shell-grep": "grep|tr (1 proc)", "parallel-grep": "GNU parallel --pipepart grep|tr",
    "bp-scan": "bp map_blocks count bytes",
}
BASES = ("seq", "pool", "dask")
"""The engines every row is compared with (median / their median, same workload)."""


def label(case: dict[str, Any]) -> str:
    if case["engine"] == "bp-lines" and case["workload"] == "W2":
        return "bp map_blocks per-line (counts)"
    return ENGINE_LABEL[case["engine"]]


def run_throughput(args: argparse.Namespace, runner: Runner, path: Path, tmp: Path,
                   cases: list[dict[str, Any]], lines_in: int) -> None:
    verifier = Verifier(lines_in)
    for case in cases:
        case.update(walls=[], inner=[], cpu=[], sys=[], rss=[], load=[], attempts=[],
                    check="")
    for r in range(args.runs):
        for case in cases:
            out = tmp / "out" / case["name"].replace(" ", "_")
            shutil.rmtree(out, ignore_errors=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            spec = {"engine": case["engine"], "workload": case["workload"], "path": str(path),
                    "out": str(out), "workers": args.workers, "block_size": args.block_size}
            load = os.getloadavg()[0]
            res = runner.child(spec)
            case["check"] = verifier.check(case, out, res)
            case["walls"].append(res["outer_wall"])
            case["inner"].append(res["wall"])
            case["cpu"].append(res["cpu"])
            case["sys"].append(res["sys"])
            case["rss"].append(max(res["rss_self_kib"], res["rss_children_kib"]) / 1024)
            case["load"].append(load)
            case["attempts"].append(attempts(case["engine"], out))
            tried = f" {case['attempts'][-1]}" if case["attempts"][-1] else ""
            print(f"  run {r + 1}/{args.runs} {case['workload']} {label(case):<34} "
                  f"{res['outer_wall']:6.2f} s (inner {res['wall']:5.2f}) cpu {res['cpu']:6.2f}"
                  f" s (sys {res['sys']:4.2f}) rss {case['rss'][-1]:5.0f} MiB load {load:4.2f}"
                  f"{tried} ok ({case['check']})", flush=True)
            shutil.rmtree(out, ignore_errors=True)
            os.sync()


def summarize(cases: list[dict[str, Any]], input_bytes: int, workers: int) -> None:
    med = {(c["workload"], c["engine"]): statistics.median(c["walls"]) for c in cases}
    walls = {(c["workload"], c["engine"]): c["walls"] for c in cases}
    for c in cases:
        m = statistics.median(c["walls"])
        c["median_s"], c["min_s"], c["max_s"] = m, min(c["walls"]), max(c["walls"])
        c["median_inner_s"] = statistics.median(c["inner"])
        c["mb_s"] = input_bytes / 1e6 / m
        c["peak_rss_mib"] = max(c["rss"])
        c["median_cpu_s"] = statistics.median(c["cpu"])
        c["median_sys_s"] = statistics.median(c["sys"]) if c.get("sys") else float("nan")
        c["ratios"] = {}
        for base in BASES:
            if (c["workload"], base) in med:
                c["ratios"][base] = m / med[c["workload"], base]
        c["ratios"]["ideal"] = m / (med[c["workload"], "seq"] / workers)
        pool = walls.get((c["workload"], "pool"))  # run i against the Pool's run i, its
        if pool and c["engine"] != "pool":          # neighbour in time: the spread of a ratio
            c["paired_pool"] = [w / p for w, p in zip(c["walls"], pool, strict=False)]


def _r(c: dict[str, Any], key: str) -> str:
    v = c["ratios"].get(key)
    return "-" if v is None else f"{v:.2f}"


def table_lines(cases: list[dict[str, Any]]) -> list[str]:
    head = (f"| {'workload':<8} | {'engine':<34} | {'median s':>8} | {'min s':>6} | "
            f"{'max s':>6} | {'inner s':>7} | {'MB/s':>5} | {'RSS MiB':>7} | {'cpu s':>6} | "
            f"{'sys s':>5} | "
            f"{'/pool':>5} | {'/seq':>5} | {'/dask':>5} | {'/ideal':>6} |")
    lines = [head, "|" + "|".join("-" * len(s) for s in head.split("|")[1:-1]) + "|"]
    for c in cases:
        lines.append(
            f"| {c['workload']:<8} | {label(c):<34} | {c['median_s']:>8.2f} | "
            f"{c['min_s']:>6.2f} | {c['max_s']:>6.2f} | {c['median_inner_s']:>7.2f} | "
            f"{c['mb_s']:>5.0f} | {c['peak_rss_mib']:>7.0f} | {c['median_cpu_s']:>6.2f} | "
            f"{c['median_sys_s']:>5.2f} | "
            f"{_r(c, 'pool'):>5} | {_r(c, 'seq'):>5} | {_r(c, 'dask'):>5} | "
            f"{_r(c, 'ideal'):>6} |")
    return lines


# --- the other targets ----------------------------------------------------------------------


def run_many_blocks(args: argparse.Namespace, runner: Runner, tmp: Path) -> dict[str, Any]:
    """T2: 4 KiB blocks of a ~40 MB file, identity map_lines, blocks/s end to end.

    Also the CPU per block (master and workers, interpreter start included) and the load
    average before each run: on a shared machine the CPU per block moves less than the
    wall time (tiny blocks are packed several per worker message: README, "Executors")."""
    size = args.small_blocks * 4096
    path = ensure_input(Path(args.data_dir), size)
    warm(path)
    expected = path.read_bytes()
    walls, cpus, loads, nblocks = [], [], [], 0
    for _ in range(args.runs):
        out = tmp / "t2"
        shutil.rmtree(out, ignore_errors=True)
        loads.append(os.getloadavg()[0])
        res = runner.child({"engine": "bp-lines", "workload": "identity", "path": str(path),
                            "out": str(out), "workers": args.workers, "block_size": 4096})
        manifest = json.loads((out / "_SUCCESS").read_text())
        nblocks = len(manifest["blocks"])
        if read_output("bp-lines", out) != expected:
            raise SystemExit("T2: identity output differs from the input")
        walls.append(res["wall"])
        cpus.append(res["cpu"] / nblocks)
        print(f"  T2 {nblocks} blocks in {res['wall']:.2f} s = {nblocks / res['wall']:.0f} "
              f"blocks/s, {1000 * cpus[-1]:.2f} ms CPU/block, load {loads[-1]:.1f} ok "
              f"(output == input)", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    m = statistics.median(walls)
    return {"blocks": nblocks, "bytes": size, "walls": walls, "median_s": m,
            "blocks_per_s": nblocks / m, "cpu_ms_per_block": 1000 * statistics.median(cpus),
            "loads": loads, "target": 2000, "ok": nblocks / m >= 2000}


def run_cli_startup(args: argparse.Namespace, runner: Runner, tmp: Path) -> dict[str, Any]:
    """T3: `python -m blockproc run` on a 1 MiB input, wall including interpreter start."""
    path = ensure_input(Path(args.data_dir), MiB)
    warm(path)
    expected = path.read_bytes()
    out = tmp / "t3"
    variants = {"--map peers:identity": ["--map", "peers:identity"],
                "--cmd cat": ["--cmd", "cat"]}
    rows = {}
    for name, extra in variants.items():
        walls = []
        for _ in range(max(args.runs, 5)):
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "blockproc", "run", str(path), "-o", str(out),
                            "--workers", str(args.workers), *extra], env=runner.env,
                           check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
            if read_output("bp-lines", out) != expected:
                raise SystemExit(f"T3 {name}: output differs from the input")
        m = statistics.median(walls)
        rows[name] = {"walls": walls, "median_s": m, "min_s": min(walls), "ok": m <= 0.35}
        print(f"  T3 CLI {name}: median {m:.3f} s (min {min(walls):.3f}) ok (output == input)",
              flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return {"variants": rows, "bare_python_s": _bare_python(runner), "target_s": 0.35,
            "ok": all(r["ok"] for r in rows.values())}


def _bare_python(runner: Runner) -> float:
    walls = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=runner.env, check=True)
        walls.append(time.perf_counter() - t)
    return statistics.median(walls)


def run_import_time(args: argparse.Namespace, runner: Runner) -> dict[str, Any]:
    """T3: `import blockproc`, as `python -X importtime` counts it (cumulative, median)."""
    found = []
    for _ in range(max(args.runs, 5)):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import blockproc"],
                              env=runner.env, check=True, capture_output=True, text=True)
        line = next(x for x in reversed(proc.stderr.splitlines()) if x.endswith("| blockproc"))
        found.append(int(line.split("|")[1]) / 1e6)
    m = statistics.median(found)
    print(f"  T3 import blockproc: {m * 1000:.1f} ms (-X importtime, median)", flush=True)
    return {"seconds": found, "median_s": m, "target_s": 0.06, "ok": m <= 0.06}


_SMALL_BP = ("import sys, peers, blockproc as bp; bp.map_lines(peers.wl.parse_project, "
             "sys.argv[1], output=sys.argv[2], workers=2, if_exists='overwrite', "
             "progress=False)")
_SMALL_POOL = "import sys, peers; peers.run_small_pool(sys.argv[1], sys.argv[2], 2)"
_WARM = """
import json, sys, time, peers, blockproc as bp
src, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
kw = dict(workers=2, if_exists="overwrite", progress=False)
t = time.perf_counter(); bp.map_lines(peers.wl.parse_project, src, output=out, **kw)
first = time.perf_counter() - t
walls = []
for _ in range(runs):
    t = time.perf_counter(); bp.map_lines(peers.wl.parse_project, src, output=out, **kw)
    walls.append(time.perf_counter() - t)
lines = open(src).read().splitlines()
t = time.perf_counter(); peers.wl.parse_project_batch(lines); work = time.perf_counter() - t
print(json.dumps({"first": first, "walls": walls, "work": work}))
"""


def run_small_job(args: argparse.Namespace, runner: Runner, tmp: Path) -> dict[str, Any]:
    """T3: a 1,000-line job (W3) from a fresh process: bp.map_lines vs a forked Pool(2),
    interleaved, whole process timed; then the warm path, a second job in one interpreter."""
    big = ensure_input(Path(args.data_dir), MiB)
    src = tmp / "small-1000.log"
    with open(big, "rb") as f:
        src.write_bytes(b"".join(f.readline() for _ in range(1000)))
    expected = ("\n".join(wl.parse_project_batch(src.read_text().splitlines())) + "\n").encode()
    walls: dict[str, list[float]] = {"bp": [], "pool": []}
    cpus: dict[str, list[float]] = {"bp": [], "pool": []}
    load = os.getloadavg()[0]
    for _ in range(max(args.runs, 7)):
        for name, code in (("pool", _SMALL_POOL), ("bp", _SMALL_BP)):
            out = tmp / f"small-{name}"
            shutil.rmtree(out, ignore_errors=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, str(src), str(out)], env=runner.env,
                           check=True, capture_output=True)
            walls[name].append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            if read_output("bp-lines" if name == "bp" else "seq", out) != expected:
                raise SystemExit(f"T3 small job {name}: wrong output")
    bp_m, pool_m = statistics.median(walls["bp"]), statistics.median(walls["pool"])
    bp_cpu, pool_cpu = statistics.median(cpus["bp"]), statistics.median(cpus["pool"])
    print(f"  T3 1,000-line job, whole process: bp {bp_m:.3f} s (min {min(walls['bp']):.3f}), "
          f"forked Pool(2) {pool_m:.3f} s (min {min(walls['pool']):.3f}) = {bp_m / pool_m:.2f}x;"
          f" cpu {bp_cpu:.3f} s vs {pool_cpu:.3f} s = {bp_cpu / pool_cpu:.2f}x; load "
          f"{load:.1f} -> {os.getloadavg()[0]:.1f} (outputs equal)", flush=True)
    proc = subprocess.run([sys.executable, "-c", _WARM, str(src), str(tmp / "small-warm"), "7"],
                          env=runner.env, check=True, capture_output=True, text=True)
    warm_res = json.loads(proc.stdout.strip().splitlines()[-1])
    if read_output("bp-lines", tmp / "small-warm") != expected:
        raise SystemExit("T3 warm path: wrong output")
    warm_m = statistics.median(warm_res["walls"])
    overhead = warm_m - warm_res["work"]
    print(f"  T3 warm path: first job {warm_res['first']:.3f} s, next jobs median {warm_m:.3f} "
          f"s (the work itself {warm_res['work'] * 1000:.1f} ms): overhead {overhead:.3f} s",
          flush=True)
    return {"bp_walls": walls["bp"], "pool_walls": walls["pool"], "bp_median_s": bp_m,
            "pool_median_s": pool_m, "ratio": bp_m / pool_m, "ok": bp_m / pool_m <= 1.5,
            "bp_cpus": cpus["bp"], "pool_cpus": cpus["pool"], "cpu_ratio": bp_cpu / pool_cpu,
            "load_before": load,
            "warm": warm_res, "warm_median_s": warm_m, "warm_overhead_s": overhead,
            "warm_ok": overhead <= 0.05}


def run_memory(args: argparse.Namespace, runner: Runner, tmp: Path) -> dict[str, Any]:
    """T4: peak RSS of the largest blockproc process on a small vs a big input."""
    limit = 2.5 * args.block_size / MiB + 120
    rows = []
    for size in args.memory_sizes:
        path = ensure_input(Path(args.data_dir), size)
        warm(path)
        import blockproc as bp

        engines = [("bp-lines", "W3"), ("bp-blocks", "W1"), ("bp-scan", "scan")]
        if hasattr(bp, "map_batches"):
            engines.insert(1, ("bp-batches", "W3"))
        for engine, workload in engines:
            out = tmp / "t4"
            shutil.rmtree(out, ignore_errors=True)
            res = runner.child({"engine": engine, "workload": workload, "path": str(path),
                                "out": str(out), "workers": args.workers,
                                "block_size": args.block_size})
            master = res["rss_self_kib"] / 1024
            worker = res["rss_children_kib"] / 1024
            rows.append({"size": size, "case": f"{engine} {workload}", "wall": res["wall"],
                         "master_mib": master, "worker_mib": worker,
                         "peak_mib": max(master, worker), "ok": max(master, worker) <= limit})
            print(f"  T4 {fmt_size(size)} {engine} {workload}: master {master:.0f} MiB, largest "
                  f"worker {worker:.0f} MiB (limit {limit:.0f}) in {res['wall']:.1f} s",
                  flush=True)
            shutil.rmtree(out, ignore_errors=True)
            os.sync()
    return {"limit_mib": limit, "rows": rows, "ok": all(r["ok"] for r in rows)}


def run_scan(args: argparse.Namespace, runner: Runner, path: Path, tmp: Path) -> dict[str, Any]:
    """T5: map_blocks that only counts bytes (one number per part), GB/s."""
    size = path.stat().st_size
    walls = []
    for _ in range(max(args.runs, 3)):
        out = tmp / "t5"
        shutil.rmtree(out, ignore_errors=True)
        res = runner.child({"engine": "bp-scan", "workload": "scan", "path": str(path),
                            "out": str(out), "workers": args.workers,
                            "block_size": args.block_size})
        total = sum(int(x) for x in read_output("bp-scan", out).split())
        if total != size:
            raise SystemExit(f"T5: counted {total} bytes of {size}")
        walls.append(res["wall"])
        print(f"  T5 raw scan {size / 1e9 / res['wall']:.2f} GB/s ({res['wall']:.2f} s) ok",
              flush=True)
        shutil.rmtree(out, ignore_errors=True)
    m = statistics.median(walls)
    t = time.perf_counter()
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    cat = time.perf_counter() - t
    return {"walls": walls, "median_s": m, "gb_s": size / 1e9 / m, "cat_gb_s": size / 1e9 / cat,
            "target_gb_s": 2.0, "ok": size / 1e9 / m >= 2.0}


# --- report ---------------------------------------------------------------------------------


def targets_lines(cases: list[dict[str, Any]], extra: dict[str, Any]) -> list[str]:
    out = ["| target | case | measured | goal | met |", "|---|---|---|---|---|"]

    def row(t: str, c: str, m: str, g: str, ok: bool) -> None:
        out.append(f"| {t} | {c} | {m} | {g} | {'yes' if ok else 'NO'} |")

    goals = {"bp-lines": ("3 per-record", 1.0), "bp-batches": ("2 batched", 0.9)}
    for c in cases:
        goal = goals.get(c["engine"])
        pool = c["ratios"].get("pool")
        if goal is not None and pool is not None:
            paired = sorted(c.get("paired_pool") or [pool])
            spread = (f" (run by run {paired[0]:.2f}-{paired[-1]:.2f}x, median "
                      f"{statistics.median(paired):.2f}x)" if len(paired) > 1 else "")
            row(goal[0], f"{c['workload']} {label(c)}", f"{pool:.3f}x Pool{spread}",
                f"<= {goal[1]}x", pool <= goal[1])
    if "startup" in extra:
        st = extra["startup"]
        cpu = f"; cpu {st['cpu_ratio']:.2f}x" if "cpu_ratio" in st else ""
        row("4 start-up", "1,000-line job, fresh process, vs forked Pool(2)",
            f"{st['ratio']:.2f}x ({st['bp_median_s']:.3f} s vs {st['pool_median_s']:.3f} s"
            f"{cpu})", "<= 1.5x", st["ok"])
        row("4 warm path", "second 1,000-line job in the same interpreter",
            f"{st['warm_overhead_s']:.3f} s overhead", "<= 0.05 s", st["warm_ok"])
    if "import" in extra:
        im = extra["import"]
        row("4 start-up", "import blockproc (-X importtime)", f"{im['median_s'] * 1000:.0f} ms",
            "<= 60 ms", im["ok"])
    if "cli" in extra:
        for name, v in extra["cli"]["variants"].items():
            row("4 start-up", f"CLI {name}, 1 MiB", f"{v['median_s']:.2f} s", "<= 0.35 s",
                v["ok"])
    if "many_blocks" in extra:
        t = extra["many_blocks"]
        row("5 scheduling", f"{t['blocks']} x 4 KiB blocks, identity, on the data disk",
            f"{t['blocks_per_s']:.0f} blocks/s", ">= 2000", t["ok"])
    if "memory" in extra:
        mem = extra["memory"]
        peaks: dict[str, list[float]] = {}
        for r in mem["rows"]:
            row("7 memory", f"{fmt_size(r['size'])} {r['case']}", f"{r['peak_mib']:.0f} MiB",
                f"<= {mem['limit_mib']:.0f} MiB", r["ok"])
            peaks.setdefault(r["case"], []).append(r["peak_mib"])
        for case, p in peaks.items():
            if len(p) > 1:
                row("7 flat", f"{case}: big/small", f"{p[-1] / p[0]:.2f}x", "~1.0x (<= 1.1x)",
                    p[-1] / p[0] <= 1.1)
    if "scan" in extra:
        s = extra["scan"]
        row("raw scan", "map_blocks count bytes", f"{s['gb_s']:.2f} GB/s "
            f"(cat {s['cat_gb_s']:.1f})", ">= 2 GB/s", s["ok"])
    return out


# --- profile and calibration ------------------------------------------------------------------


def profile(workload: str, path: Path, args: argparse.Namespace, tmp: Path) -> None:
    """cProfile one worker's path (``executor="inline"``, in this process) of map_lines
    (W2: map_blocks per-line) and, if present, map_batches, then the Pool's per-range task
    over the same input, printing the top entries by own time and cumulative time."""
    import blockproc as bp

    out = tmp / "profile"
    kw: dict[str, Any] = {"output": str(out), "block_size": args.block_size,
                          "executor": "inline", "if_exists": "overwrite", "progress": False}
    targets: list[tuple[str, Any]] = []
    if workload == "W2":
        targets.append(("bp map_blocks per-line",
                        lambda: bp.map_blocks(wl.count_block, str(path), **kw)))
    else:
        targets.append(("bp map_lines",
                        lambda: bp.map_lines(peers.LINE_FNS[workload], str(path), **kw)))
    if hasattr(bp, "map_batches"):
        targets.append(("bp map_batches", lambda: bp.map_batches(
            peers.BATCH_FNS[workload], str(path), batch_size=MiB, **kw)))

    def pool_path() -> None:
        out.mkdir(parents=True, exist_ok=True)
        size = path.stat().st_size
        for i, off in enumerate(range(0, size, args.block_size)):
            peers._pool_task((workload, str(path), off, args.block_size,
                              str(out / f"part-{i:05d}")))

    targets.append(("hand-written Pool's task, in-process", pool_path))
    for name, target in targets:
        shutil.rmtree(out, ignore_errors=True)
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.runcall(target)
        elapsed = time.perf_counter() - t
        for sort in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(sort).print_stats(
                args.profile_top)
            text = buf.getvalue()
            text = text[text.find("   ncalls"):] if "   ncalls" in text else text
            print(f"\n=== {workload} {name}: {elapsed:.2f} s under cProfile, top "
                  f"{args.profile_top} by {sort} ===\n{text.rstrip()}")
    shutil.rmtree(out, ignore_errors=True)


_SPIN = ("import sys, time\n"
         "sys.stdin.readline()\n"
         "t = time.perf_counter()\n"
         "x = 0\n"
         "for i in range({n}):\n"
         "    x += i\n"
         "print(time.perf_counter() - t)\n")


def cpu_scaling(procs: int, iterations: int = 10_000_000, repeats: int = 3) -> float:
    """How much faster ``procs`` CPU-bound Python processes get through work than one,
    now: the ceiling for any ``--workers procs`` speedup on this machine."""
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

    ceilings = []
    for _ in range(repeats):  # pairs, so a slow spell hits both sides of one ratio
        alone = together(1)[0]
        ceilings.append(procs * alone / max(together(procs)))
    return statistics.median(ceilings)


def source_fingerprint(root: Path) -> str:
    """sha256 of blockproc's *.py files (others may edit them during a run)."""
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--block-size", type=parse_size, default=parse_size("64MiB"))
    p.add_argument("--workloads", nargs="*", default=["W1", "W2", "W3"],
                   choices=["W1", "W2", "W3"])
    p.add_argument("--engines", nargs="*", help="only these engines (seq always runs)")
    p.add_argument("--pool-mallopt", action="store_true",
                   help="also run the Pool with blockproc's malloc tuning (README, 'malloc')")
    p.add_argument("--targets", nargs="*", default=["blocks", "startup", "memory", "scan"],
                   choices=["blocks", "startup", "memory", "scan"])
    p.add_argument("--small-blocks", type=int, default=10_000,
                   help="T2: number of 4 KiB blocks (default 10000, a 41 MB file)")
    p.add_argument("--memory-sizes", nargs="*", type=parse_size, default=None,
                   help="T4 input sizes (default 1GiB 4GiB if the disk has room, else "
                        "256MiB 1GiB)")
    p.add_argument("--data-dir", default=str(HERE / "data"))
    p.add_argument("--results-dir", default=str(HERE / "results"))
    p.add_argument("--snapshot", action="store_true",
                   help="benchmark a frozen copy of blockproc/ taken at start")
    p.add_argument("--calibrate", action="store_true",
                   help="measure the machine's CPU scaling ceiling before and after")
    p.add_argument("--profile", choices=["W1", "W2", "W3"],
                   help="instead of benchmarking, cProfile one worker's path and the Pool's")
    p.add_argument("--profile-top", type=int, default=25)
    args = p.parse_args(argv)
    if args.runs < 1 or args.workers < 1:
        p.error("--runs and --workers must be >= 1")
    return args


def run_targets(args: argparse.Namespace, runner: Runner, path: Path,
                tmp: Path) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if "scan" in args.targets:
        extra["scan"] = run_scan(args, runner, path, tmp)
    if "blocks" in args.targets:
        extra["many_blocks"] = run_many_blocks(args, runner, tmp)
    if "startup" in args.targets:
        extra["import"] = run_import_time(args, runner)
        extra["startup"] = run_small_job(args, runner, tmp)
        extra["cli"] = run_cli_startup(args, runner, tmp)
    if "memory" in args.targets:
        extra["memory"] = run_memory(args, runner, tmp)
    return extra


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child_run(json.loads(args.child))))
        return 0
    data_dir = Path(args.data_dir).resolve()
    args.data_dir = str(data_dir)
    if args.memory_sizes is None:
        free = shutil.disk_usage(data_dir if data_dir.exists() else HERE).free
        args.memory_sizes = [2**30, 4 * 2**30] if free > 12 * 2**30 else [256 * MiB, 2**30]
    path = ensure_input(data_dir, args.size)
    input_bytes = path.stat().st_size
    tmp = Path(tempfile.mkdtemp(prefix="bench-suite-", dir=data_dir))
    pythonpath = [str(HERE)]
    source = ROOT / "blockproc"
    if args.snapshot:
        shutil.copytree(source, tmp / "snapshot" / "blockproc",
                        ignore=shutil.ignore_patterns("__pycache__"))
        pythonpath.insert(0, str(tmp / "snapshot"))
        source = tmp / "snapshot" / "blockproc"
    runner = Runner(pythonpath)
    sys.path[:0] = pythonpath
    # Byte-compile what the children import, once: a user's installed package has its
    # .pyc files, and PYTHONDONTWRITEBYTECODE would otherwise make every child compile.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(source), str(HERE)],
                   check=False, capture_output=True)
    if args.profile:
        try:
            warm(path)
            profile(args.profile, path, args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    fingerprint = source_fingerprint(source)
    try:
        import importlib.util
        have_dask = importlib.util.find_spec("dask") is not None
        have_parallel = peers.parallel_available()
        if not have_dask:
            print("dask is not installed: skipping the dask bag rows (pip install dask)")
        if not have_parallel:
            print("GNU parallel is not installed: skipping its rows (apt-get install parallel)")
        warm(path)
        lines_in = sum(chunk.count(b"\n") for chunk in _chunks(path))
        cases = throughput_cases(args, have_dask, have_parallel)
        if args.engines is not None:
            cases = [c for c in cases if c["engine"] in set(args.engines) | {"seq"}]
        scaling = [cpu_scaling(args.workers)] if args.calibrate else []
        load_before = os.getloadavg()
        started = time.time()
        print(f"input {path.name}: {input_bytes} bytes, {lines_in} lines; {len(cases)} cases "
              f"x {args.runs} runs; workers={args.workers} block_size="
              f"{fmt_size(args.block_size)}; load avg {load_before}", flush=True)
        run_throughput(args, runner, path, tmp, cases, lines_in)
        summarize(cases, input_bytes, args.workers)
        extra = run_targets(args, runner, path, tmp)
        scaling += [cpu_scaling(args.workers)] if args.calibrate else []
        load_after = os.getloadavg()
        fingerprint_after = source_fingerprint(source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, path, input_bytes, lines_in, cases, extra, started,
           {"load_before": load_before, "load_after": load_after, "scaling": scaling,
            "fingerprint": (fingerprint, fingerprint_after)})
    return 0


def report(args: argparse.Namespace, path: Path, input_bytes: int, lines_in: int,
           cases: list[dict[str, Any]], extra: dict[str, Any], started: float,
           env: dict[str, Any]) -> None:
    """Print the table and the targets; write them as JSON and Markdown."""
    before, after = env["load_before"], env["load_after"]
    fp = env["fingerprint"]
    header = [
        f"blockproc bench_suite | input {path.name}: {input_bytes} bytes ({fmt_size(args.size)}), "
        f"{lines_in} lines | runs={args.runs} workers={args.workers} "
        f"block_size={fmt_size(args.block_size)} | {os.cpu_count()} CPUs | Python "
        f"{platform.python_version()}",
        f"command: python benchmarks/bench_suite.py {' '.join(sys.argv[1:])}",
        f"load avg (1, 5, 15 min) before {tuple(round(x, 2) for x in before)}, after "
        f"{tuple(round(x, 2) for x in after)}",
        f"blockproc source {fp[0]}" + ("" if fp[0] == fp[1] else
                                       f" -> {fp[1]}: WARNING, edited during the run"),
        "all outputs verified equal to seq-python (W1/W3 byte-identical, W2 summed counts) "
        "before timing was reported",
    ]
    if env["scaling"]:
        header.append(f"CPU scaling ceiling for {args.workers} processes: "
                      f"{env['scaling'][0]:.2f}x before, {env['scaling'][-1]:.2f}x after")
    table = table_lines(cases)
    notes = [
        "median/min/max: wall s of a fresh process, interpreter start to exit (inner: the "
        "engine call alone); MB/s = input bytes/1e6/median;",
        "RSS = peak RSS of the largest process (max of the run's own and its children's "
        "maxrss); cpu s = user+sys of the process and its children (sys s: the sys part);",
        "/X = median / median of X for the same workload, same invocation (<1: faster); "
        "/ideal = median / (seq median / workers).",
    ]
    copies = [f"{c['name']} run {i + 1}: {a}" for c in cases
              for i, a in enumerate(c.get("attempts", [])) if "speculative" in a]
    notes.append("speculative copies in blockproc runs (each is a block's work done twice): "
                 + ("; ".join(copies) if copies else "none"))
    targets = targets_lines(cases, extra)
    text = "\n".join([*header, "", *table, "", *notes, "", "Targets (issue 14):", *targets])
    print("\n" + text)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(started))
    doc = {"started": stamp, "config": {k: v for k, v in vars(args).items() if k != "child"},
           "input": {"path": str(path), "bytes": input_bytes, "lines": lines_in},
           "env": {"python": platform.python_version(), "cpus": os.cpu_count(),
                   "platform": platform.platform(), **env},
           "cases": cases, "targets": extra}
    (results / f"suite-{stamp}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (results / f"suite-{stamp}.md").write_text(
        "# blockproc bench_suite\n\n" + "\n\n".join(header) + "\n\n" + "\n".join(table)
        + "\n\n" + "\n".join(notes) + "\n\n## Targets\n\n" + "\n".join(targets) + "\n")
    print(f"\nwrote {results}/suite-{stamp}.json and .md")


def _chunks(path: Path) -> Any:
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(16 * MiB):
            yield chunk


if __name__ == "__main__":
    sys.exit(main())
