"""blockproc vs. its peers, and the issue-8 targets, side by side in one run.

    python benchmarks/bench_suite.py --size 1GiB --runs 3 --workers 2

Generates (or reuses) a synthetic access log with blockproc.datasets.access_log, then runs,
interleaved (run 1 of every case, then run 2, ...), each case as a fresh child process:

  W1 grep-upper / W2 counts / W3 parse, with the per-line code of benchmarks/workloads.py:
    seq-python, pool-lists, pool-batches (multiprocessing.Pool + fsspec.utils.read_block),
    dask-bag (processes scheduler; skipped if dask is missing), gnu-parallel --pipepart
    (skipped if not installed), bp map_lines (W2: map_blocks with per-line code),
    bp map_blocks vectorised (peers.w*_block), and for W1 bp map_command grep|tr;
  T2 10,000 blocks of 4 KiB, identity map_lines: blocks/s;
  T3 CLI start-up on a 1 MiB input (wall including interpreter start);
  T4 peak RSS on a small vs a big input; T5 raw scan (map_blocks counting bytes): GB/s.

Every output is verified against the sequential baseline before any time is reported.
Results: a table on stdout, and benchmarks/results/suite-<stamp>.{json,md}.
See benchmarks/README.md ("bench_suite.py").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
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


def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one case once in this (fresh) process; return wall, CPU, peak RSS, records."""
    engine, workload, path, out = spec["engine"], spec["workload"], spec["path"], spec["out"]
    workers, block_size = spec["workers"], spec["block_size"]
    records: int | None = None
    t = time.perf_counter()
    if engine.startswith("bp-"):
        import blockproc as bp

        kw = _bp_common(spec)
        if engine == "bp-lines":
            if workload == "W2":
                res = bp.map_blocks(wl.count_block, path, output=out, **kw)
            else:
                res = bp.map_lines(peers.LINE_FNS.get(workload, peers.identity), path,
                                   output=out, **kw)
        elif engine == "bp-blocks":
            res = bp.map_blocks(peers.BLOCK_FNS[workload], path, output=out, **kw)
        elif engine == "bp-cmd":
            res = bp.map_command(wl.GREP_5XX_UPPER_CMD, path, output=out, **kw)
        elif engine == "bp-scan":
            res = bp.map_blocks(peers.scan_block, path, output=out, **kw)
        else:
            raise SystemExit(f"unknown engine {engine}")
        records = res.num_records
    elif engine == "seq":
        records = peers.run_seq(workload, path, out, workers, block_size)
    elif engine in ("pool-lists", "pool-batches"):
        records = peers.run_pool(workload, path, out, workers, block_size,
                                 batched=engine == "pool-batches")
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
            "rss_self_kib": _own_peak_rss_kib(me.ru_maxrss), "rss_children_kib": kids.ru_maxrss}


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
    if engine in ("pool-lists", "pool-batches"):
        return b"".join(p.read_bytes() for p in sorted(out.glob("part-*")))
    if engine == "dask":
        return b"".join(p.read_bytes() for p in sorted(out.glob("*.part")))
    return (out / "out.txt").read_bytes()


class Verifier:
    """Compares every run's output with the first sequential run of its workload."""

    def __init__(self, lines_in: int) -> None:
        self.refs: dict[str, tuple[str, int, Counter[tuple[str, str]] | None]] = {}
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
            if w == "W2" and sum(got.values()) != self.lines_in:
                raise SystemExit("the W2 baseline does not count every line")
        ref = self.refs[w]
        ok = (ref[2] == key) if w == "W2" else (ref[0] == key and ref[1] == len(data))
        if res.get("records") is not None and res["records"] != self.lines_in:
            ok = False
            detail += f"; read {res['records']} records of {self.lines_in}"
        if not ok:
            keep = out.parents[2] / f"FAILED-{case['name'].replace(' ', '_')}"  # data dir
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(str(out), keep)
            raise SystemExit(f"VERIFICATION FAILED for {case['name']}: {detail}; expected "
                             f"{ref[1]} bytes; output kept in {keep}. No timings reported.")
        return detail


def throughput_cases(args: argparse.Namespace, have_dask: bool,
                     have_parallel: bool) -> list[dict[str, Any]]:
    cases = []
    for w in args.workloads:
        engines = ["seq", "pool-lists", "pool-batches"]
        if have_dask:
            engines.append("dask")
        if have_parallel:
            engines.append("parallel")
        engines += ["bp-lines", "bp-blocks"]
        if w == "W1":
            engines += ["bp-cmd", "shell-grep"] + (["parallel-grep"] if have_parallel else [])
        for e in engines:
            cases.append({"workload": w, "engine": e, "name": f"{w} {e}"})
    return cases


ENGINE_LABEL = {
    "seq": "seq-python (1 proc)", "pool-lists": "Pool read_block, lists",
    "pool-batches": "Pool read_block, 1MiB batches", "dask": "dask bag (processes)",
    "parallel": "GNU parallel --pipepart py", "bp-lines": "bp map_lines",
    "bp-blocks": "bp map_blocks vectorised", "bp-cmd": "bp map_command grep|tr",
    "shell-grep": "grep|tr (1 proc)", "parallel-grep": "GNU parallel --pipepart grep|tr",
    "bp-scan": "bp map_blocks count bytes",
}


def label(case: dict[str, Any]) -> str:
    if case["engine"] == "bp-lines" and case["workload"] == "W2":
        return "bp map_blocks per-line"
    return ENGINE_LABEL[case["engine"]]


def run_throughput(args: argparse.Namespace, runner: Runner, path: Path, tmp: Path,
                   cases: list[dict[str, Any]], lines_in: int) -> None:
    verifier = Verifier(lines_in)
    for case in cases:
        case.update(walls=[], outer=[], cpu=[], rss=[], load=[], check="")
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
            case["walls"].append(res["wall"])
            case["outer"].append(res["outer_wall"])
            case["cpu"].append(res["cpu"])
            case["rss"].append(max(res["rss_self_kib"], res["rss_children_kib"]) / 1024)
            case["load"].append(load)
            print(f"  run {r + 1}/{args.runs} {case['workload']} {label(case):<32} "
                  f"{res['wall']:6.2f} s cpu {res['cpu']:6.2f} s rss "
                  f"{case['rss'][-1]:6.0f} MiB load {load:4.2f} ok ({case['check']})",
                  flush=True)
            shutil.rmtree(out, ignore_errors=True)
            os.sync()


def summarize(cases: list[dict[str, Any]], input_bytes: int, workers: int) -> None:
    med = {(c["workload"], c["engine"]): statistics.median(c["walls"]) for c in cases}
    for c in cases:
        m = statistics.median(c["walls"])
        c["median_s"], c["min_s"], c["max_s"] = m, min(c["walls"]), max(c["walls"])
        c["mb_s"] = input_bytes / 1e6 / m
        c["peak_rss_mib"] = max(c["rss"])
        c["median_cpu_s"] = statistics.median(c["cpu"])
        c["ratios"] = {}
        for base in ("seq", "pool-lists", "pool-batches", "dask", "parallel"):
            if (c["workload"], base) in med:
                c["ratios"][base] = m / med[c["workload"], base]
        c["ratios"]["ideal"] = m / (med[c["workload"], "seq"] / workers)


def _r(c: dict[str, Any], key: str) -> str:
    v = c["ratios"].get(key)
    return "-" if v is None else f"{v:.2f}"


def table_lines(cases: list[dict[str, Any]]) -> list[str]:
    head = (f"| {'workload':<8} | {'engine':<32} | {'median s':>8} | {'min s':>6} | "
            f"{'max s':>6} | {'MB/s':>6} | {'RSS MiB':>7} | {'cpu s':>6} | {'/seq':>5} | "
            f"{'/pool-l':>7} | {'/pool-b':>7} | {'/dask':>5} | {'/par':>5} | {'/ideal':>6} |")
    lines = [head, "|" + "|".join("-" * (len(s) + 0) for s in head.split("|")[1:-1]) + "|"]
    for c in cases:
        lines.append(
            f"| {c['workload']:<8} | {label(c):<32} | {c['median_s']:>8.2f} | "
            f"{c['min_s']:>6.2f} | {c['max_s']:>6.2f} | {c['mb_s']:>6.0f} | "
            f"{c['peak_rss_mib']:>7.0f} | {c['median_cpu_s']:>6.2f} | {_r(c, 'seq'):>5} | "
            f"{_r(c, 'pool-lists'):>7} | {_r(c, 'pool-batches'):>7} | {_r(c, 'dask'):>5} | "
            f"{_r(c, 'parallel'):>5} | {_r(c, 'ideal'):>6} |")
    return lines


# --- the other targets ----------------------------------------------------------------------


def run_many_blocks(args: argparse.Namespace, runner: Runner, tmp: Path) -> dict[str, Any]:
    """T2: 4 KiB blocks of a ~40 MB file, identity map_lines, blocks/s end to end."""
    size = args.small_blocks * 4096
    path = ensure_input(Path(args.data_dir), size)
    warm(path)
    expected = path.read_bytes()
    walls, nblocks = [], 0
    for _ in range(args.runs):
        out = tmp / "t2"
        shutil.rmtree(out, ignore_errors=True)
        res = runner.child({"engine": "bp-lines", "workload": "identity", "path": str(path),
                            "out": str(out), "workers": args.workers, "block_size": 4096})
        manifest = json.loads((out / "_SUCCESS").read_text())
        nblocks = len(manifest["blocks"])
        if read_output("bp-lines", out) != expected:
            raise SystemExit("T2: identity output differs from the input")
        walls.append(res["wall"])
        print(f"  T2 {nblocks} blocks in {res['wall']:.2f} s = {nblocks / res['wall']:.0f} "
              f"blocks/s ok (output == input)", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    m = statistics.median(walls)
    return {"blocks": nblocks, "bytes": size, "walls": walls, "median_s": m,
            "blocks_per_s": nblocks / m, "target": 2000, "ok": nblocks / m >= 2000}


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
        rows[name] = {"walls": walls, "median_s": m, "min_s": min(walls), "ok": m <= 0.8}
        print(f"  T3 CLI {name}: median {m:.3f} s (min {min(walls):.3f}) ok (output == input)",
              flush=True)
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - t
    return {"variants": rows, "bare_python_s": bare, "target_s": 0.8,
            "ok": all(r["ok"] for r in rows.values())}


def run_memory(args: argparse.Namespace, runner: Runner, tmp: Path) -> dict[str, Any]:
    """T4: peak RSS of the largest blockproc process on a small vs a big input."""
    limit = 2.5 * args.block_size / MiB + 120
    rows = []
    for size in args.memory_sizes:
        path = ensure_input(Path(args.data_dir), size)
        warm(path)
        for engine, workload in (("bp-lines", "W3"), ("bp-blocks", "W1"), ("bp-scan", "scan")):
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

    for c in cases:
        if c["engine"] == "bp-lines":
            pb = c["ratios"].get("pool-batches")
            if pb is not None:
                row("1 per-line", f"{c['workload']} {label(c)}", f"{pb:.3f}x pool-batches",
                    "<= 1.0x", pb <= 1.0)
            d = c["ratios"].get("dask")
            if d is not None:
                row("1 vs dask", f"{c['workload']} {label(c)}", f"{d:.3f}x dask", "<= 0.4x",
                    d <= 0.4)
            row("1 vs ideal", f"{c['workload']} {label(c)}",
                f"{c['ratios']['ideal']:.2f}x seq/workers", "~<= 1.6x",
                c["ratios"]["ideal"] <= 1.6)
        if c["engine"] == "bp-blocks":
            pb = c["ratios"].get("pool-batches")
            if pb is not None:
                row("1 vectorised", f"{c['workload']} {label(c)}", f"{pb:.3f}x pool-batches",
                    "<= 0.8x", pb <= 0.8)
    if "many_blocks" in extra:
        t = extra["many_blocks"]
        row("2 scheduling", f"{t['blocks']} x 4 KiB blocks, identity",
            f"{t['blocks_per_s']:.0f} blocks/s", ">= 2000", t["ok"])
    if "cli" in extra:
        for name, v in extra["cli"]["variants"].items():
            row("3 start-up", f"CLI {name}, 1 MiB", f"{v['median_s']:.2f} s", "<= 0.8 s",
                v["ok"])
    if "memory" in extra:
        mem = extra["memory"]
        peaks: dict[str, list[float]] = {}
        for r in mem["rows"]:
            row("4 memory", f"{fmt_size(r['size'])} {r['case']}", f"{r['peak_mib']:.0f} MiB",
                f"<= {mem['limit_mib']:.0f} MiB", r["ok"])
            peaks.setdefault(r["case"], []).append(r["peak_mib"])
        for case, p in peaks.items():
            if len(p) > 1:
                row("4 flat", f"{case}: big/small", f"{p[-1] / p[0]:.2f}x", "~1.0x (<= 1.1x)",
                    p[-1] / p[0] <= 1.1)
    if "scan" in extra:
        s = extra["scan"]
        row("5 raw scan", "map_blocks count bytes", f"{s['gb_s']:.2f} GB/s "
            f"(cat {s['cat_gb_s']:.1f})", ">= 2 GB/s", s["ok"])
    return out


def main(argv: list[str] | None = None) -> int:
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
    p.add_argument("--targets", nargs="*", default=["blocks", "cli", "memory", "scan"],
                   choices=["blocks", "cli", "memory", "scan"])
    p.add_argument("--small-blocks", type=int, default=10_000,
                   help="T2: number of 4 KiB blocks (default 10000, a 41 MB file)")
    p.add_argument("--memory-sizes", nargs="*", type=parse_size, default=None,
                   help="T4 input sizes (default 1GiB 4GiB if the disk has room, else "
                        "256MiB 1GiB)")
    p.add_argument("--data-dir", default=str(HERE / "data"))
    p.add_argument("--results-dir", default=str(HERE / "results"))
    p.add_argument("--snapshot", action="store_true",
                   help="benchmark a frozen copy of blockproc/ taken at start")
    args = p.parse_args(argv)
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
    if args.snapshot:
        shutil.copytree(ROOT / "blockproc", tmp / "snapshot" / "blockproc",
                        ignore=shutil.ignore_patterns("__pycache__"))
        pythonpath.insert(0, str(tmp / "snapshot"))
    runner = Runner(pythonpath)
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
        load_before = os.getloadavg()
        started = time.time()
        print(f"input {path.name}: {input_bytes} bytes, {lines_in} lines; {len(cases)} cases "
              f"x {args.runs} runs; workers={args.workers} block_size="
              f"{fmt_size(args.block_size)}; load avg {load_before}", flush=True)
        run_throughput(args, runner, path, tmp, cases, lines_in)
        summarize(cases, input_bytes, args.workers)
        extra: dict[str, Any] = {}
        if "scan" in args.targets:
            extra["scan"] = run_scan(args, runner, path, tmp)
        if "blocks" in args.targets:
            extra["many_blocks"] = run_many_blocks(args, runner, tmp)
        if "cli" in args.targets:
            extra["cli"] = run_cli_startup(args, runner, tmp)
        if "memory" in args.targets:
            extra["memory"] = run_memory(args, runner, tmp)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    header = [
        f"blockproc bench_suite | input {path.name}: {input_bytes} bytes ({fmt_size(args.size)}), "
        f"{lines_in} lines | runs={args.runs} workers={args.workers} "
        f"block_size={fmt_size(args.block_size)} | {os.cpu_count()} CPUs | Python "
        f"{platform.python_version()}",
        f"load avg (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, after "
        f"{tuple(round(x, 2) for x in load_after)}",
        "all outputs verified equal to seq-python (W1/W3 byte-identical, W2 summed counts) "
        "before timing was reported",
    ]
    table = table_lines(cases)
    notes = [
        "median/min/max: wall s of the engine call in a fresh process (blockproc: plan, spawn "
        "workers, run, commit); MB/s = input bytes/1e6/median;",
        "RSS = peak RSS of the largest process (max of the run's own and its children's "
        "maxrss); cpu s = user+sys of the process and its children;",
        "/X = median / median of X for the same workload, same invocation (<1: faster); "
        "/ideal = median / (seq median / workers).",
    ]
    targets = targets_lines(cases, extra)
    text = "\n".join([*header, "", *table, "", *notes, "", "Targets (issue 8):", *targets])
    print("\n" + text)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(started))
    doc = {"started": stamp, "config": {k: v for k, v in vars(args).items() if k != "child"},
           "input": {"path": str(path), "bytes": input_bytes, "lines": lines_in},
           "env": {"python": platform.python_version(), "cpus": os.cpu_count(),
                   "platform": platform.platform(), "loadavg_before": load_before,
                   "loadavg_after": load_after},
           "cases": cases, "targets": extra}
    (results / f"suite-{stamp}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (results / f"suite-{stamp}.md").write_text(
        "# blockproc bench_suite\n\n" + "\n\n".join(header) + "\n\n" + "\n".join(table)
        + "\n\n" + "\n".join(notes) + "\n\n## Targets\n\n" + "\n".join(targets) + "\n")
    print(f"\nwrote {results}/suite-{stamp}.json and .md")
    return 0


def _chunks(path: Path) -> Any:
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(16 * MiB):
            yield chunk


if __name__ == "__main__":
    sys.exit(main())
