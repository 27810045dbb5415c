"""CSV tables against DuckDB and Polars: filter, group-by and convert on the reviews CSV.

    python benchmarks/bench_csv.py [--size 1GiB] [--runs 3] [--workers 2]
                                   [--block-size 16MiB] [--queries C1 C2 C3]
                                   [--engines duckdb polars bp-processes bp-threads]
                                   [--data-dir benchmarks/data] [--json out.json]
                                   [--profile C1] [--max-busy 30] [--max-wait 20]

The input is ``python -m blockproc.datasets csv`` (product reviews with quoted commas,
doubled quotes and quoted newlines), cached in ``--data-dir`` as
``reviews-<bytes>-seed0.csv``. Queries:

* C1: ``rating <= 2``, columns review_id, product, rating -> Parquet;
* C2: group by product: count and mean rating -> one CSV, sorted by product;
* C3: every column typed (ints, timestamp, bool, strings) -> Parquet.

Every engine runs each query as a fresh process (``python -c`` importing this module),
timed from spawn to exit, with ``--workers`` threads (DuckDB ``SET threads``, Polars
``POLARS_MAX_THREADS``) or workers (blockproc); runs are interleaved (run 1 of every
case, then run 2, ...), and ``--max-busy 30`` waits before each run until other work on
the machine has calmed down. Peak RSS is the largest sum of RSS over the process and all its
descendants, sampled every 20 ms (not ``ru_maxrss``, which Linux carries over
fork+exec from the driver); forked workers' shared pages count once per process. Every
run's output is checked, outside the timing and in a child process (the driver stays
small), against a digest computed first from the CSV by pyarrow's streaming reader (rows
sorted by key; strings with null read as "", means rounded to 9 digits); a mismatch
stops the script with exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
QUERIES = ("C1", "C2", "C3")
ENGINES = ("duckdb", "polars", "bp-processes", "bp-threads")
TYPES = {
    "review_id": "int64", "created_at": "timestamp[s]", "product_id": "int64",
    "product": "string", "customer": "string", "rating": "int64", "verified": "bool",
    "helpful_votes": "int64", "title": "string", "body": "string",
}
C1_COLUMNS = ("review_id", "product", "rating")
DUCK_TYPES = {"int64": "BIGINT", "timestamp[s]": "TIMESTAMP", "string": "VARCHAR",
              "bool": "BOOLEAN"}
KEYS = {"C1": "review_id", "C2": "product", "C3": "review_id"}


def parse_size(text: str) -> int:
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
    t = text.strip().upper()
    for unit, mult in units.items():
        if t.endswith(unit):
            return int(float(t[:-len(unit)]) * mult)
    return int(t)


# -- the engines (run in the child process) ------------------------------------------------


def c1_block(table: Any) -> Any:
    """C1 per block: keep rating <= 2 (the columns come projected by the format)."""
    import pyarrow.compute as pc
    return table.filter(pc.less_equal(table["rating"], 2))


def c2_block(table: Any) -> Any:
    """C2 per block: count and sum of rating per product (combined by the driver)."""
    return table.group_by("product").aggregate([("rating", "count"), ("rating", "sum")])


def c3_block(table: Any) -> Any:
    """C3 per block: the typed table as is."""
    return table


def c2_finish(partials: list[Any], out: Path) -> None:
    """Combine C2's per-block partials into one CSV sorted by product."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    total = pa.concat_tables(partials).group_by("product").aggregate(
        [("rating_count", "sum"), ("rating_sum", "sum")])
    count = total["rating_count_sum"]
    mean = pc.divide(pc.cast(total["rating_sum_sum"], pa.float64()), pc.cast(count, pa.float64()))
    table = pa.table({"product": total["product"], "count": count, "mean_rating": mean})
    pa_csv.write_csv(table.sort_by("product"), str(out))


def run_blockproc(query: str, path: str, out: Path, executor: str, workers: int,
                  block_size: int) -> None:
    import blockproc as bp
    from blockproc.formats import CSV
    common = {"executor": executor, "workers": workers, "block_size": block_size,
              "progress": False}
    if query == "C1":
        fmt = CSV(columns=C1_COLUMNS, column_types={c: TYPES[c] for c in C1_COLUMNS})
        bp.map_blocks(c1_block, path, format=fmt, output=str(out), output_format="parquet",
                      **common)
    elif query == "C2":
        fmt = CSV(columns=("product", "rating"), column_types={"rating": "int64"})
        res = bp.map_blocks(c2_block, path, format=fmt, **common)
        c2_finish(list(res.values), out)
    else:
        bp.map_blocks(c3_block, path, format=CSV(column_types=TYPES), output=str(out),
                      output_format="parquet", **common)


def run_duckdb(query: str, path: str, out: Path, workers: int) -> None:
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads = {workers}")
    con.execute("SET enable_progress_bar = false")
    columns = ", ".join(f"'{n}': '{DUCK_TYPES[t]}'" for n, t in TYPES.items())
    src = (f"read_csv('{path}', header = true, quote = '\"', escape = '\"', "
           f"columns = {{{columns}}})")
    if query == "C1":
        sql = f"SELECT {', '.join(C1_COLUMNS)} FROM {src} WHERE rating <= 2"
        con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet, COMPRESSION snappy)")
    elif query == "C2":
        sql = (f"SELECT product, count(*) AS count, avg(rating) AS mean_rating FROM {src} "
               f"GROUP BY product ORDER BY product")
        con.execute(f"COPY ({sql}) TO '{out}' (HEADER, DELIMITER ',')")
    else:
        con.execute(f"COPY (SELECT * FROM {src}) TO '{out}' (FORMAT parquet, "
                    f"COMPRESSION snappy)")


def run_polars(query: str, path: str, out: Path) -> None:
    import polars as pl
    kinds = {"int64": pl.Int64, "timestamp[s]": pl.Datetime("us"), "string": pl.String,
             "bool": pl.Boolean}
    lf = pl.scan_csv(path, schema={n: kinds[t] for n, t in TYPES.items()})
    if query == "C1":
        lf.filter(pl.col("rating") <= 2).select(C1_COLUMNS).sink_parquet(
            out, compression="snappy")
    elif query == "C2":
        lf.group_by("product").agg(pl.len().alias("count"),
                                   pl.col("rating").mean().alias("mean_rating")
                                   ).sort("product").sink_csv(out)
    else:
        lf.sink_parquet(out, compression="snappy")


def child(spec: dict[str, Any]) -> None:
    """Run one case once in this fresh process."""
    out = Path(spec["out"])
    engine, query, path = spec["engine"], spec["query"], spec["path"]
    if engine == "duckdb":
        run_duckdb(query, path, out, spec["workers"])
    elif engine == "polars":
        run_polars(query, path, out)
    else:
        run_blockproc(query, path, out, engine.removeprefix("bp-"), spec["workers"],
                      spec["block_size"])


# -- the digest ------------------------------------------------------------------------------


def digest_table(table: Any, key: str) -> str:
    """A digest of a table's rows, independent of chunking, row order (sorted by ``key``),
    string storage (string, large_string, view) and null-vs-empty strings."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    table = table.sort_by(key)
    h = hashlib.sha256(str(table.num_rows).encode())
    for name in sorted(table.column_names):
        col = table[name]
        h.update(name.encode())
        t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or \
                pa.types.is_string_view(t):
            arr = pc.fill_null(col, "").cast(pa.large_string()).combine_chunks()
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
                arr.offset:arr.offset + len(arr) + 1]
            h.update(np.diff(offsets).tobytes())
            h.update(arr.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]])
            continue
        h.update(pc.is_null(col).combine_chunks().to_numpy(zero_copy_only=False).tobytes())
        if pa.types.is_timestamp(t):
            col = col.cast(pa.timestamp("s")).cast(pa.int64())
        elif pa.types.is_boolean(t):
            col = col.cast(pa.uint8())
        elif pa.types.is_floating(t):
            col = pc.round(col.cast(pa.float64()), 9)
        elif pa.types.is_integer(t):
            col = col.cast(pa.int64())
        h.update(pc.fill_null(col, 0).combine_chunks().to_numpy(zero_copy_only=False).tobytes())
    return h.hexdigest()


def expected_digests(path: Path) -> dict[str, str]:
    """Compute each query's digest straight from the CSV (cached next to it)."""
    cache = path.with_suffix(".digests.json")
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("stamp") == stamp:
            return dict(saved["digests"])
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    reader = pa_csv.open_csv(
        str(path), read_options=pa_csv.ReadOptions(block_size=16 << 20),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={n: pa.type_for_alias(t) for n, t in TYPES.items()}))
    c1, c2, c3 = [], [], []
    for batch in reader:
        t = pa.Table.from_batches([batch])
        c3.append(t)
        c1.append(t.select(list(C1_COLUMNS)).filter(pc.less_equal(t["rating"], 2)))
        c2.append(c2_block(t.select(["product", "rating"])))
    full = pa.concat_tables(c3)
    tmp = path.parent / "digest-c2.csv"
    c2_finish(c2, tmp)
    c2_table = read_c2(tmp)
    tmp.unlink()
    digests = {"C1": digest_table(pa.concat_tables(c1), "review_id"),
               "C2": digest_table(c2_table, "product"),
               "C3": digest_table(full, "review_id"),
               "rows": str(full.num_rows)}
    cache.write_text(json.dumps({"stamp": stamp, "digests": digests}))
    return digests


def read_c2(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    return pa_csv.read_csv(str(path), parse_options=pa_csv.ParseOptions(
        newlines_in_values=True), convert_options=pa_csv.ConvertOptions(column_types={
            "product": pa.string(), "count": pa.int64(), "mean_rating": pa.float64()}))


def child_digest(query: str, out: Path, env: dict[str, str]) -> str:
    """Return :func:`output_digest` computed in a child process."""
    code = (f"import bench_csv, pathlib; print(bench_csv.output_digest({query!r}, "
            f"pathlib.Path({str(out)!r})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


def output_digest(query: str, out: Path) -> str:
    import pyarrow.parquet as pq
    table = read_c2(out) if query == "C2" else pq.read_table(str(out))
    return digest_table(table, KEYS[query])


# -- the driver ------------------------------------------------------------------------------


def ensure_input(data_dir: Path, size: int, seed: int = 0) -> Path:
    path = data_dir / f"reviews-{size}-seed{seed}.csv"
    if not path.exists() or path.stat().st_size < size * 0.9:
        data_dir.mkdir(parents=True, exist_ok=True)
        print(f"generating {path} ...", flush=True)
        subprocess.run([sys.executable, "-m", "blockproc.datasets", "csv", "--size", str(size),
                        "-o", str(path), "--seed", str(seed)], check=True)
    return path


def tree_rss(proc: Any) -> int:
    """Sum of RSS over ``proc`` and its descendants (bytes), 0 once it is gone."""
    import psutil
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_case(spec: dict[str, Any], env: dict[str, str]) -> dict[str, float]:
    """Spawn one case; return its wall seconds, CPU seconds and peak tree RSS (MiB)."""
    import psutil
    code = f"import bench_csv, json; bench_csv.child(json.loads({json.dumps(json.dumps(spec))}))"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while True:
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, tree_rss(ps))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{spec['engine']} {spec['query']} failed (exit {proc.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "rss": peak / 2**20}


def child_env(workers: int) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["POLARS_MAX_THREADS"] = str(workers)
    return env


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def wait_for_quiet(max_busy: float, timeout: float) -> float:
    """Wait until the machine's CPUs are at most ``max_busy`` percent busy over 0.5 s
    (other users' work), at most ``timeout`` seconds; return the last reading."""
    import psutil
    deadline = time.monotonic() + timeout
    while True:
        busy = float(psutil.cpu_percent(interval=0.5))
        if busy <= max_busy or time.monotonic() > deadline:
            return busy


def run_all(args: argparse.Namespace, path: Path, digests: dict[str, str]) -> list[dict[str, Any]]:
    env = child_env(args.workers)
    cases = [{"query": q, "engine": e, "walls": [], "cpus": [], "rsss": []}
             for q in args.queries for e in args.engines]
    tmp = args.data_dir / "bench-csv-out"
    for run in range(args.runs):
        for case in cases:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            suffix = ".csv" if case["query"] == "C2" else ".parquet"
            out = tmp / ("out" if case["engine"].startswith("bp-") and case["query"] != "C2"
                         else f"out{suffix}")
            spec = {"engine": case["engine"], "query": case["query"], "path": str(path),
                    "out": str(out), "workers": args.workers, "block_size": args.block_size}
            busy = wait_for_quiet(args.max_busy, args.max_wait) if args.max_busy < 100 else -1.0
            res = run_case(spec, env)
            got = child_digest(case["query"], out, env)
            if got != digests[case["query"]]:
                keep = args.data_dir / f"FAILED-{case['engine']}-{case['query']}"
                shutil.rmtree(keep, ignore_errors=True)
                shutil.move(str(out), str(keep))
                raise SystemExit(f"{case['engine']} {case['query']}: output differs from the "
                                 f"digest of the CSV; kept in {keep}")
            case["walls"].append(res["wall"])
            case["cpus"].append(res["cpu"])
            case["rsss"].append(res["rss"])
            print(f"run {run + 1} {case['query']} {case['engine']:<13} {res['wall']:6.2f} s "
                  f"cpu {res['cpu']:6.2f} s rss {res['rss']:5.0f} MiB ok, busy before "
                  f"{busy:3.0f}%, load {os.getloadavg()[0]:.2f}", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
    return cases


def table(cases: list[dict[str, Any]]) -> list[str]:
    lines = ["| query | engine | median s | min s | max s | x DuckDB | x Polars | cpu s | "
             "peak RSS MiB | RSS x DuckDB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        c["median"] = statistics.median(c["walls"])
        c["peak_rss"] = max(c["rsss"])
    by = {(c["query"], c["engine"]): c for c in cases}
    for c in cases:
        duck = by.get((c["query"], "duckdb"))
        pol = by.get((c["query"], "polars"))
        rd = f"{c['median'] / duck['median']:.2f}" if duck else "-"
        rp = f"{c['median'] / pol['median']:.2f}" if pol else "-"
        rr = f"{c['peak_rss'] / duck['peak_rss']:.2f}" if duck else "-"
        lines.append(f"| {c['query']} | {c['engine']} | {c['median']:.2f} | {min(c['walls']):.2f} "
                     f"| {max(c['walls']):.2f} | {rd} | {rp} | "
                     f"{statistics.median(c['cpus']):.2f} | {c['peak_rss']:.0f} | {rr} |")
    return lines


def profile(query: str, path: Path, block_size: int) -> None:
    """Where blockproc's time goes for ``query``, its pieces one after another in this
    process: plan, read each block, parse, the function, write Parquet (wall and CPU
    seconds of this thread: the CPU figures hold under load from other processes)."""
    import io

    import pyarrow.parquet as pq

    import blockproc as bp
    from blockproc.formats import CSV
    fmts = {"C1": CSV(columns=C1_COLUMNS, column_types={c: TYPES[c] for c in C1_COLUMNS}),
            "C2": CSV(columns=("product", "rating"), column_types={"rating": "int64"}),
            "C3": CSV(column_types=TYPES)}
    fn = {"C1": c1_block, "C2": c2_block, "C3": c3_block}[query]
    wall = dict.fromkeys(("plan", "read", "parse", "function", "write"), 0.0)
    cpu = dict(wall)

    def timed(key: str, call: Any) -> Any:
        w, c = time.perf_counter(), time.thread_time()
        value = call()
        wall[key] += time.perf_counter() - w
        cpu[key] += time.thread_time() - c
        return value

    bp.plan(str(path), format=fmts[query], block_size=block_size)  # imports, not timed
    plan = timed("plan", lambda: bp.plan(str(path), format=fmts[query], block_size=block_size))
    fmt = CSV.from_dict(plan.format)
    with open(path, "rb") as f:
        for b in plan.blocks:
            f.seek(b.start)
            data = timed("read", lambda b=b: f.read(b.end - b.start))
            table_ = timed("parse", lambda b=b, data=data: fmt.decode_block(
                data, at_file_start=b.start == 0))
            result = timed("function", lambda t=table_: fn(t))
            if query != "C2":
                timed("write", lambda r=result: pq.write_table(r, io.BytesIO()))
    print(f"profile {query}, {len(plan.blocks)} blocks of {block_size / 2**20:g} MiB, one "
          f"thread, load {os.getloadavg()[0]:.2f}:")
    for k in wall:
        print(f"  {k:<9} wall {wall[k]:6.2f} s  cpu {cpu[k]:6.2f} s")
    print(f"  {'total':<9} wall {sum(wall.values()):6.2f} s  cpu {sum(cpu.values()):6.2f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-size", type=parse_size, default=parse_size("16MiB"))
    ap.add_argument("--queries", nargs="+", choices=QUERIES, default=list(QUERIES))
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    ap.add_argument("--data-dir", type=Path, default=HERE / "data")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", choices=QUERIES)
    ap.add_argument("--max-busy", type=float, default=100.0,
                    help="before each run, wait (up to --max-wait seconds) until the CPUs "
                         "are at most this percent busy: other users' work skews the timings")
    ap.add_argument("--max-wait", type=float, default=20.0)
    args = ap.parse_args(argv)
    path = ensure_input(args.data_dir, args.size)
    warm(path)
    if args.profile:
        profile(args.profile, path, args.block_size)
        return 0
    t = time.perf_counter()
    code = ("import bench_csv, json, pathlib; print(json.dumps(bench_csv.expected_digests("
            f"pathlib.Path({str(path)!r}))))")
    digests = json.loads(subprocess.run([sys.executable, "-c", code], env=child_env(args.workers),
                                        check=True, capture_output=True, text=True).stdout)
    print(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB, {digests['rows']} rows; "
          f"digests from the CSV ({time.perf_counter() - t:.1f} s); {args.workers} workers, "
          f"blockproc blocks {args.block_size / 2**20:g} MiB, load {os.getloadavg()[0]:.2f}",
          flush=True)
    cases = run_all(args, path, digests)
    lines = table(cases)
    print("\n".join(lines))
    print(f"load after {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cases": cases, "size": path.stat().st_size,
                                         "workers": args.workers}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
