"""Executor benchmark: the same job on ``processes``, ``cluster`` and ``dask``.

    python benchmarks/bench_executors.py [--size 1GiB] [--runs 3] [--workers 2]
        [--block-size 64MiB] [--workload W3] [--data-dir benchmarks/data] [--json out.json]

One job over a synthetic Apache access log (blockproc.datasets.access_log, cached in
--data-dir), with the per-line code of benchmarks/workloads.py (W3 parse by default: the
CPU-bound ``ip,status,bytes`` of every line). Every case runs ``--workers`` workers on
this machine; every run is a whole job (plan, workers, run, commit, _SUCCESS):

    processes           the default executor: spawned worker processes
    cluster             the master starts --workers local `blockproc worker` processes
                        that join it over TCP (authkey handshake, one slot each)
    cluster, warm       --workers `blockproc worker` processes started once, before the
                        runs; each job's master listens on the same port and they join
    dask                executor="dask" without a client: a LocalCluster of --workers
                        processes (one thread each) started and closed by the job
    dask, warm          one LocalCluster for all runs, passed as executor_options client

Runs are interleaved (run 1 of every case, then run 2...); the table gives the median
wall time, the throughput and the ratio to ``processes``. Every output is checked to be
byte-identical to the first ``processes`` run before any time is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # workers import workloads by reference, like bench_suite
    sys.path.insert(0, str(HERE))

import workloads as wl  # noqa: E402
from bench_suite import ensure_input, parse_size, warm  # noqa: E402

import blockproc as bp  # noqa: E402
from blockproc.testing import read_parts  # noqa: E402


def human(n: float) -> str:
    """``1073741824`` -> ``"1.00 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


AUTHKEY = "bench-executors-" + os.urandom(8).hex()
FUNCTIONS: dict[str, Callable[[str], Any]] = {"W1": wl.grep_5xx_upper, "W3": wl.parse_project}


@dataclass
class Case:
    name: str
    options: Callable[[], dict[str, Any]]
    times: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


@contextmanager
def warm_cluster_workers(count: int, port: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` persistent `blockproc worker` processes that serve every master on port."""
    env = dict(os.environ, BLOCKPROC_AUTHKEY=AUTHKEY,
               PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))
    procs = [subprocess.Popen([sys.executable, "-m", "blockproc", "worker", "--connect",
                               f"127.0.0.1:{port}", "--slots", "1", "--quiet"],
                              env=env, stdin=subprocess.DEVNULL)
             for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def warm_dask(count: int) -> Iterator[Any]:
    import distributed

    with distributed.LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.ERROR) as c, \
            distributed.Client(c, set_as_default=False) as client:
        client.wait_for_workers(count, timeout=60)
        yield client


def digest(out_dir: Path) -> str:
    return hashlib.sha256(read_parts(str(out_dir))).hexdigest()


def run_case(case: Case, path: Path, out_dir: Path, args: argparse.Namespace) -> float:
    shutil.rmtree(out_dir, ignore_errors=True)
    case.load.append(os.getloadavg()[0])
    started = time.perf_counter()
    bp.map_lines(FUNCTIONS[args.workload], str(path), output=str(out_dir),
                 block_size=args.block_size, progress=False, **case.options())
    elapsed = time.perf_counter() - started
    case.times.append(elapsed)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"),
                   help="input size, e.g. 256MiB, 1GiB (default 1GiB)")
    p.add_argument("--runs", type=int, default=3, help="fresh runs per case (default 3)")
    p.add_argument("--workers", type=int, default=2, help="workers per case (default 2)")
    p.add_argument("--block-size", default="64MiB", help="block size (default 64MiB)")
    p.add_argument("--workload", choices=sorted(FUNCTIONS), default="W3",
                   help="W3 parse (default) or W1 grep-upper, as in bench_core")
    p.add_argument("--data-dir", default=str(HERE / "data"),
                   help="input cache and temp outputs (default benchmarks/data)")
    p.add_argument("--seed", type=int, default=0, help="access_log seed (default 0)")
    p.add_argument("--cases", nargs="+", help="subset of case names to run")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.runs < 1 or args.workers < 1:
        p.error("--runs and --workers must be >= 1")

    data_dir = Path(args.data_dir).resolve()
    path = ensure_input(data_dir, args.size, args.seed)
    input_bytes = path.stat().st_size
    started = time.perf_counter()
    warm(path)
    print(f"page cache warmed: read {human(input_bytes)} in {time.perf_counter() - started:.2f} s",
          flush=True)
    port = free_port()
    n = args.workers
    tmp = Path(tempfile.mkdtemp(prefix="bench-executors-", dir=data_dir))
    with warm_cluster_workers(n, port), warm_dask(n) as client:
        cases = [
            Case("processes", lambda: {"executor": "processes", "workers": n}),
            Case("cluster", lambda: {"executor": "cluster", "workers": n,
                                     "executor_options": {"authkey": AUTHKEY}}),
            Case("cluster, warm", lambda: {"executor": "cluster", "executor_options": {
                "listen": f"127.0.0.1:{port}", "authkey": AUTHKEY}}),
            Case("dask", lambda: {"executor": "dask", "workers": n}),
            Case("dask, warm", lambda: {"executor": "dask",
                                        "executor_options": {"client": client}}),
        ]
        if args.cases:
            cases = [c for c in cases if c.name in args.cases]
        reference = ""
        try:
            for run in range(args.runs):
                for case in cases:
                    out = tmp / case.name.replace(", ", "-")
                    seconds = run_case(case, path, out, args)
                    got = digest(out)
                    reference = reference or got
                    if got != reference:
                        raise SystemExit(f"{case.name} run {run + 1}: output differs from the "
                                         f"first run's; aborting")
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"run {run + 1}/{args.runs} {case.name:<14} {seconds:7.2f} s",
                          flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    base = statistics.median(cases[0].times)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print()
    print(f"blockproc executors | {args.workload} map_lines over {path.name} "
          f"({human(input_bytes)}) | runs={args.runs} workers={n} block_size={args.block_size}"
          f" | {cpus} CPUs | Python {platform.python_version()}")
    print("all outputs byte-identical | medians of wall time per whole job (startup included)")
    print()
    header = f"{'executor':<15} {'median s':>9} {'min s':>8} {'max s':>8} {'MiB/s':>8} " \
             f"{'vs processes':>13} {'load':>6}"
    print(header)
    print("-" * len(header))
    rows = []
    for case in cases:
        med = statistics.median(case.times)
        row = {"executor": case.name, "median_s": round(med, 3),
               "min_s": round(min(case.times), 3), "max_s": round(max(case.times), 3),
               "mib_per_s": round(input_bytes / 2**20 / med, 1),
               "ratio": round(med / base, 3), "load_avg": round(statistics.mean(case.load), 2),
               "times": [round(t, 3) for t in case.times]}
        rows.append(row)
        print(f"{case.name:<15} {med:9.2f} {min(case.times):8.2f} {max(case.times):8.2f} "
              f"{row['mib_per_s']:8.1f} {row['ratio']:12.2f}x {row['load_avg']:6.2f}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({
            "benchmark": "bench_executors", "workload": args.workload,
            "input": {"path": str(path), "bytes": input_bytes},
            "config": {"runs": args.runs, "workers": n, "block_size": args.block_size},
            "env": {"python": platform.python_version(), "cpus": cpus,
                    "platform": platform.platform()},
            "results": rows}, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
