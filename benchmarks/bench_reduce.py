"""W2 as a reduce: blockproc's reduce_blocks vs. a hand-written Pool and Dask (issue 13).

    python benchmarks/bench_reduce.py --size 1GiB --runs 3 --workers 2

W2 counts the ``(method, status)`` pairs of an access log: every engine counts its
lines with the same function, ``workloads.count_lines`` (one ``Counter.update`` over a
batch of lines), and sums the per-block ``Counter``s with the same ``merge``:

  bp reduce_blocks       bp.reduce_blocks(count_block, merge, path), processes executor;
                         count_block is ``count_lines(batch.records)``, no output directory
  bp ..., 1MiB batches   the same, the mapper decoding its block ~1 MiB at a time with
                         ``batch.format.iter_batches`` instead of ``batch.records``
  pool imap_unordered    multiprocessing.Pool(workers), one task per --block-size range:
                         it aligns its range to lines, counts ~1 MiB whole-line batches
                         into one Counter and returns it; the parent merges as they arrive
  dask fold              dask.bag.read_text(blocksize).map_partitions(count).fold(merge)
  dask frequencies       dask.bag.read_text(blocksize).map(method_status).frequencies()
  seq (1 proc)           one process, ~1 MiB batches, for scale

Each case is a fresh process timed end to end (interpreter start to exit); runs are
interleaved (run 1 of every case, then run 2, ...); the table gives medians and the
ratios of medians of this invocation. Every run's totals must equal the first run's, and
sum to the input's line count, before any time is printed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
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
from bench_suite import (  # noqa: E402
    Runner,
    cpu_scaling,
    ensure_input,
    fmt_size,
    parse_size,
    warm,
)

ENGINES = {
    "bp": "bp reduce_blocks",
    "bp-stream": "bp reduce_blocks, 1MiB batches",
    "pool": "pool imap_unordered",
    "dask-fold": "dask map_partitions.fold",
    "dask-freq": "dask map.frequencies",
    "seq": "seq python (1 proc)",
}

# --- the code every engine shares ----------------------------------------------------------


def merge(acc: Counter[Any], partial: Counter[Any]) -> Counter[Any]:
    """Add ``partial``'s counts to ``acc`` in place and return it (associative, commutative)."""
    acc.update(partial)
    return acc


def count_block(batch: Any) -> Counter[tuple[str, str]]:
    """The mapper of ``bp.reduce_blocks``: the block's ``(method, status)`` counts."""
    return wl.count_lines(batch.records)


def count_block_streamed(batch: Any) -> Counter[tuple[str, str]]:
    """The same counts, decoding the block ~1 MiB at a time with the block's own format
    (what ``batch.records`` does, without holding the whole block's lines at once)."""
    data, step = batch.data, 1 << 20
    chunks = (data[i:i + step] for i in range(0, len(data), step))
    counts: Counter[tuple[str, str]] = Counter()
    for lines in batch.format.iter_batches(chunks, at_file_start=batch.at_file_start):
        wl.count_lines(lines, counts)
    return counts


def count_partition(lines: list[str]) -> list[Counter[tuple[str, str]]]:
    """Dask's partition function: the partition's counts, as a one-element partition."""
    return [wl.count_lines(lines)]


# --- the engines, each run in a fresh child process ----------------------------------------


def _pool_task(args: tuple[str, int, int]) -> tuple[Counter[tuple[str, str]], int]:
    """One byte range: align it to lines, count ~1 MiB batches into one Counter."""
    path, offset, block_size = args
    counts: Counter[tuple[str, str]] = Counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        start = peers.line_start(f, offset)
        end = peers.line_start(f, offset + block_size)
        for lines in peers.range_batches(f, start, end):
            wl.count_lines(lines, counts)
            n += len(lines)
    return counts, n


def run_pool(path: str, workers: int, block_size: int) -> tuple[Counter[Any], int]:
    import multiprocessing

    size = os.path.getsize(path)
    tasks = [(path, off, block_size) for off in range(0, size, block_size)]
    total: Counter[Any] = Counter()
    n = 0
    with multiprocessing.Pool(workers) as pool:
        for counts, lines in pool.imap_unordered(_pool_task, tasks):
            merge(total, counts)
            n += lines
    return total, n


def run_bp(path: str, workers: int, block_size: int,
           streamed: bool = False) -> tuple[Counter[Any], int]:
    import blockproc as bp

    fn = count_block_streamed if streamed else count_block
    result = bp.reduce_blocks(fn, merge, path, block_size=block_size,
                              workers=workers, executor="processes", progress=False)
    return result.value, result.num_records


def run_dask(path: str, workers: int, block_size: int,
             frequencies: bool) -> tuple[Counter[Any], None]:
    import dask
    import dask.bag as db

    bag = db.read_text(path, blocksize=block_size)
    with dask.config.set(scheduler="processes", num_workers=workers):
        if frequencies:
            return Counter(dict(bag.map(wl.method_status).frequencies().compute())), None
        return bag.map_partitions(count_partition).fold(merge).compute(), None


def run_seq(path: str) -> tuple[Counter[Any], int]:
    counts: Counter[Any] = Counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        for lines in peers.iter_line_batches(f):
            wl.count_lines(lines, counts)
            n += len(lines)
    return counts, n


def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """One run of one engine in this fresh process: its totals, records, wall and CPU."""
    engine, path = spec["engine"], spec["path"]
    workers, block_size = spec["workers"], spec["block_size"]
    t = time.perf_counter()
    if engine in ("bp", "bp-stream"):
        counts, records = run_bp(path, workers, block_size, engine == "bp-stream")
    elif engine == "pool":
        counts, records = run_pool(path, workers, block_size)
    elif engine in ("dask-fold", "dask-freq"):
        counts, records = run_dask(path, workers, block_size, engine == "dask-freq")
    elif engine == "seq":
        counts, records = run_seq(path)
    else:
        raise SystemExit(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    wall = time.perf_counter() - t
    me, kids = (resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN))
    return {"inner": wall, "records": records,
            "cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            "counts": sorted([m, s, n] for (m, s), n in counts.items())}


# --- the parent: interleaved runs, verification, the table ---------------------------------


_CHILD = "import sys, bench_reduce; sys.exit(bench_reduce.main())"


def run_child(runner: Runner, spec: dict[str, Any]) -> dict[str, Any]:
    t = time.perf_counter()
    # Imported as a module, not run as __main__, so that every engine sends the
    # functions above to its workers by reference (bench_reduce.count_block).
    proc = subprocess.run([sys.executable, "-c", _CHILD, "--child", json.dumps(spec)],
                          env=runner.env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{spec['engine']} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def check(engine: str, run: dict[str, Any], expected: list[Any], lines: int) -> None:
    """Stop unless ``run`` counted exactly ``expected`` and every one of ``lines``."""
    total = sum(n for _, _, n in run["counts"])
    if run["counts"] != expected or total != lines or run["records"] not in (None, lines):
        diff = sorted(set(map(tuple, run["counts"])) ^ set(map(tuple, expected)))
        raise SystemExit(f"{engine}: totals differ from the first run ({total} counted, "
                         f"{run['records']} records, {lines} lines in the input); "
                         f"differing entries: {diff[:10]}")


def count_newlines(path: Path) -> int:
    with open(path, "rb", buffering=0) as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(16 << 20), b""))


def table(runs: dict[str, list[dict[str, Any]]], size: int) -> list[str]:
    med = {e: statistics.median(r["wall"] for r in rs) for e, rs in runs.items()}
    bases = [b for b in ("pool", "dask-fold", "dask-freq") if b in med]
    cpu = {e: statistics.median(r["cpu"] for r in rs) for e, rs in runs.items()}
    head = (f"| {'engine':<32} | median s |  min s |  max s | inner s | cpu s |  MB/s | "
            + " | ".join(f"/{b}" for b in bases) + " | cpu " + " | cpu ".join(
                f"/{b}" for b in bases) + " |")
    lines = [head, "|" + "|".join("---" for _ in range(7 + 2 * len(bases))) + "|"]
    for e, rs in runs.items():
        walls = [r["wall"] for r in rs]
        ratios = " | ".join([f"{med[e] / med[b]:.2f}x" for b in bases]
                            + [f"{cpu[e] / cpu[b]:.2f}x" for b in bases])
        lines.append(
            f"| {ENGINES[e]:<32} | {med[e]:8.2f} | {min(walls):6.2f} | {max(walls):6.2f} | "
            f"{statistics.median(r['inner'] for r in rs):7.2f} | "
            f"{cpu[e]:5.1f} | {size / 1e6 / med[e]:5.0f} | "
            f"{ratios} |")
    return lines


def profile(path: Path, block_size: int, top: int) -> None:
    """cProfile blockproc's whole path in this process (inline executor: the worker's
    reading, decoding and counting, and the master's fold) and the Pool's task over every
    range, with the time the fold itself took."""
    import cProfile
    import pstats

    import blockproc as bp

    folding = [0.0]

    def timed_merge(acc: Counter[Any], partial: Counter[Any]) -> Counter[Any]:
        t = time.perf_counter()
        merge(acc, partial)
        folding[0] += time.perf_counter() - t
        return acc

    size = path.stat().st_size
    for name, call in [
        ("bp reduce_blocks (inline)", lambda: bp.reduce_blocks(
            count_block, timed_merge, str(path), block_size=block_size, executor="inline",
            progress=False)),
        ("pool task over every range", lambda: [
            _pool_task((str(path), off, block_size)) for off in range(0, size, block_size)]),
    ]:
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.runcall(call)
        print(f"\n=== {name}: {time.perf_counter() - t:.2f} s under cProfile")
        pstats.Stats(prof).sort_stats("tottime").print_stats(top)
    print(f"the master's fold (merge of every block's Counter): {folding[0] * 1e3:.2f} ms")
    records_vs_batches(path, block_size)


def records_vs_batches(path: Path, block_size: int, repeats: int = 7) -> None:
    """CPU seconds (min of ``repeats``) to count the first block from its bytes in memory:
    decoded whole into one list, as ``batch.records``, vs ~1 MiB at a time."""
    from blockproc.formats import lines as line_format

    with open(path, "rb") as f:
        data = f.read(block_size)
    data = data[:data.rfind(b"\n") + 1]
    fmt = line_format.Lines()
    step = 1 << 20

    def chunks() -> Any:
        return (data[i:i + step] for i in range(0, len(data), step))

    def whole() -> None:
        lines = [x for batch in fmt.iter_batches(chunks(), at_file_start=True) for x in batch]
        wl.count_lines(lines)

    def streamed() -> None:
        counts: Counter[Any] = Counter()
        for batch in fmt.iter_batches(chunks(), at_file_start=True):
            wl.count_lines(batch, counts)

    best = {"whole block's records": float("inf"), "1 MiB batches": float("inf")}
    for _ in range(repeats):
        for name, fn in zip(best, (whole, streamed), strict=True):
            t = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - t)
    print(f"decode + count one {fmt_size(len(data))} block, CPU s (min of {repeats}): "
          + ", ".join(f"{k} {v:.3f}" for k, v in best.items()))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--block-size", type=parse_size, default=parse_size("64MiB"))
    p.add_argument("--engines", nargs="*", default=list(ENGINES), choices=list(ENGINES))
    p.add_argument("--data-dir", default=str(HERE / "data"))
    p.add_argument("--profile", action="store_true",
                   help="instead of timing, cProfile blockproc's path and the Pool's task")
    p.add_argument("--profile-top", type=int, default=12)
    args = p.parse_args(argv)
    if args.runs < 1 or args.workers < 1:
        p.error("--runs and --workers must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child_run(json.loads(args.child))))
        return 0
    path = ensure_input(Path(args.data_dir).resolve(), args.size)
    if args.profile:
        warm(path)
        profile(path, args.block_size, args.profile_top)
        return 0
    runner = Runner([str(ROOT), str(HERE)])
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "blockproc"),
                    str(HERE)], check=False, capture_output=True)
    warm(path)
    lines = count_newlines(path)
    load = os.getloadavg()[0]
    ceiling = cpu_scaling(args.workers)
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in args.engines}
    expected: list[Any] | None = None
    for i in range(args.runs):
        for engine in args.engines:
            spec = {"engine": engine, "path": str(path), "workers": args.workers,
                    "block_size": args.block_size}
            run = run_child(runner, spec)
            expected = expected or run["counts"]
            check(engine, run, expected, lines)
            runs[engine].append(run)
            print(f"run {i + 1} {ENGINES[engine]}: {run['wall']:.2f} s", file=sys.stderr,
                  flush=True)
    print(f"W2 (method, status) counts, reduced: {fmt_size(args.size)} input "
          f"({path.stat().st_size:,} B, {lines:,} lines), {args.workers} workers, "
          f"{fmt_size(args.block_size)} blocks, median of {args.runs} interleaved runs, "
          f"each a fresh process; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (a shared machine: compare rows of one run); "
          f"CPU scaling ceiling ({args.workers} CPU-bound processes vs 1) "
          f"{ceiling:.2f}x before, {cpu_scaling(args.workers):.2f}x after")
    print(f"totals verified equal across engines: {len(expected or [])} (method, status) "
          f"pairs summing to {lines:,} lines\n")
    print("\n".join(table(runs, path.stat().st_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
