"""Formats benchmark: map_blocks (pyarrow / numpy) against map_lines (a Python call per
record), for the same job over a >= 1 GiB CSV and a >= 1 GiB fixed-width file.

    python benchmarks/bench_formats.py [--size 1GiB] [--runs 3] [--workers 2]
        [--block-size 64MiB] [--data-dir benchmarks/data] [--json out.json]

Jobs (both paths write the same records, checked before any time is reported):

    CSV    rows: id (int64), name (text; 1 in 8 quoted with a comma, 1 in 16 with a
           newline), amount (float64), cat. Keep the rows with amount > 900, write
           id,amount as CSV part-files.
             map_lines:  fn(row: dict) -> dict | None            output_format="csv"
             map_blocks: fn(table) -> table.filter(...)          output_format="csv"
    FIXED  32-byte records [id <u8, x <f8, y <f4, flag u1, pad]. Keep x > 0.9 with y
           doubled, write them as .npy part-files.
             map_lines:  fn(record: np.void) -> record | None    output_format="npy"
             map_blocks: fn(array) -> array[mask] (y doubled)    output_format="npy"

Every case is a whole fresh run (plan, including the CSV quote-parity pass, + spawn
workers + run + commit) with the processes executor, repeated --runs times, interleaved.
The CSV plan time (the parity pass reads the file once) is reported separately too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import blockproc as bp  # noqa: E402
from blockproc._units import format_size, parse_size  # noqa: E402
from blockproc.formats import CSV, Fixed  # noqa: E402

DTYPE = np.dtype([("id", "<u8"), ("x", "<f8"), ("y", "<f4"), ("flag", "u1"), ("pad", "V11")])
CSV_FORMAT = CSV(column_types={"id": "int64", "amount": "float64"})
THRESHOLD_CSV = 900.0
THRESHOLD_FIXED = 0.9


# -- data ------------------------------------------------------------------------------


def make_csv(path: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = np.array(["alpha", "beta", "gamma delta", "with, a comma", "epsilon", "zeta",
                      "eta theta", "iota", "kappa", "lambda", "mu", "nu", "two\nlines", "xi",
                      "omicron", "pi"])
    tmp = path.with_suffix(".tmp")
    written, start, n = 0, 0, 500_000
    with open(tmp, "wb") as f:
        options = pa_csv.WriteOptions(include_header=True)
        while written < size:
            table = pa.table({
                "id": np.arange(start, start + n, dtype=np.int64),
                "name": pa.array(names[rng.integers(0, len(names), n)]),
                "amount": np.round(rng.random(n) * 1000, 2),
                "cat": pa.array(rng.integers(0, 50, n).astype(str)),
            })
            buf = pa.BufferOutputStream()
            pa_csv.write_csv(table, buf, write_options=options)
            data = buf.getvalue().to_pybytes()
            f.write(data)
            written += len(data)
            start += n
            options = pa_csv.WriteOptions(include_header=False)
    tmp.rename(path)


def make_fixed(path: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = 4_000_000
    count = -(-size // DTYPE.itemsize)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for start in range(0, count, n):
            k = min(n, count - start)
            arr = np.zeros(k, DTYPE)
            arr["id"] = np.arange(start, start + k)
            arr["x"] = rng.random(k)
            arr["y"] = rng.random(k, dtype=np.float32)
            arr["flag"] = rng.integers(0, 2, k)
            f.write(arr.tobytes())
    tmp.rename(path)


# -- the jobs (module level: worker processes import them) ------------------------------


def csv_row(row: dict[str, Any]) -> dict[str, Any] | None:
    """map_lines: one row (a dict)."""
    return {"id": row["id"], "amount": row["amount"]} if row["amount"] > THRESHOLD_CSV else None


def csv_table(table: pa.Table) -> pa.Table:
    """map_blocks: the block's rows (a pyarrow.Table)."""
    return table.select(["id", "amount"]).filter(pc.greater(table["amount"], THRESHOLD_CSV))


def fixed_record(rec: Any) -> Any:
    """map_lines: one record (a numpy structured scalar)."""
    if rec["x"] <= THRESHOLD_FIXED:
        return None
    out = rec.copy()
    out["y"] = rec["y"] * 2
    return out


def fixed_array(arr: np.ndarray) -> np.ndarray:
    """map_blocks: the block's records (a read-only numpy array over its bytes)."""
    out = arr[arr["x"] > THRESHOLD_FIXED]  # a copy, so writable
    out["y"] *= 2
    return out


# -- running ---------------------------------------------------------------------------


def run_case(fn: Callable[..., Any], per: str, src: Path, fmt: Any, out: Path,
             output_format: str, args: argparse.Namespace) -> tuple[float, bp.JobResult]:
    if out.exists():
        shutil.rmtree(out)
    runner = bp.map_blocks if per == "block" else bp.map_lines
    t0 = time.perf_counter()
    res = runner(fn, str(src), output=str(out), format=fmt, block_size=args.block_size,
                 output_format=output_format, executor="processes", workers=args.workers,
                 progress=False)
    return time.perf_counter() - t0, res


def csv_result(out: Path) -> tuple[int, float]:
    rows, total = 0, 0.0
    types = pa_csv.ConvertOptions(column_types={"id": pa.int64(), "amount": pa.float64()})
    for p in sorted(out.glob("part-*.csv")):
        if p.stat().st_size:
            t = pa_csv.read_csv(p, convert_options=types)
            rows += t.num_rows
            total += pc.sum(t["amount"]).as_py() or 0.0
    return rows, round(total, 2)


def npy_result(out: Path) -> tuple[int, float]:
    arrays = [np.load(p) for p in sorted(out.glob("part-*.npy"))]
    arr = np.concatenate(arrays)
    return len(arr), float(arr["y"].astype(np.float64).sum().round(3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block-size", default="64MiB")
    parser.add_argument("--data-dir", default=str(HERE / "data"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    csv_path = data_dir / f"formats-{size}-seed0.csv"
    bin_path = data_dir / f"formats-{size}-seed0.bin"
    for path, make in ((csv_path, make_csv), (bin_path, make_fixed)):
        if not path.exists():
            t0 = time.perf_counter()
            make(path, size)
            print(f"generated {path} ({format_size(path.stat().st_size)}) in "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
    fixed = Fixed(DTYPE)
    cases = {
        ("CSV", "map_lines"): (csv_row, "record", csv_path, CSV_FORMAT, "csv", csv_result),
        ("CSV", "map_blocks"): (csv_table, "block", csv_path, CSV_FORMAT, "csv", csv_result),
        ("FIXED", "map_lines"): (fixed_record, "record", bin_path, fixed, "npy", npy_result),
        ("FIXED", "map_blocks"): (fixed_array, "block", bin_path, fixed, "npy", npy_result),
    }
    times: dict[tuple[str, str], list[float]] = {k: [] for k in cases}
    plan_times: list[float] = []
    checks: dict[tuple[str, str], Any] = {}
    records: dict[tuple[str, str], int] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-formats-"))
    try:
        for run in range(args.runs):
            t0 = time.perf_counter()
            plan = bp.plan(str(csv_path), block_size=args.block_size, format=CSV_FORMAT)
            plan_times.append(time.perf_counter() - t0)
            for key, (fn, per, src, fmt, output_format, check) in cases.items():
                out = work / f"{key[0]}-{key[1]}"
                seconds, res = run_case(fn, per, src, fmt, out, output_format, args)
                result = check(out)
                if key in checks and checks[key] != result:
                    raise SystemExit(f"{key}: run {run} gave {result}, before {checks[key]}")
                checks[key] = result
                records[key] = res.num_records
                times[key].append(seconds)
                print(f"run {run + 1}: {key[0]:5} {key[1]:10} {seconds:7.2f}s  "
                      f"{res.num_records:,} records in, {result[0]:,} out", flush=True)
        for name in ("CSV", "FIXED"):
            if checks[(name, "map_lines")] != checks[(name, "map_blocks")]:
                raise SystemExit(f"{name}: map_lines and map_blocks disagree: "
                                 f"{checks[(name, 'map_lines')]} != "
                                 f"{checks[(name, 'map_blocks')]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"pyarrow {pa.__version__}, numpy {np.__version__}; workers={args.workers}, "
          f"block_size={args.block_size}, runs={args.runs} (medians)")
    print(f"CSV plan (quote-parity pass over {format_size(csv_path.stat().st_size)}, "
          f"{len(plan.blocks)} blocks): median {statistics.median(plan_times):.2f}s")
    print("\n| input | size | records | map_lines (s) | map_blocks (s) | speed-up |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name, path in (("CSV", csv_path), ("FIXED", bin_path)):
        lines = statistics.median(times[(name, "map_lines")])
        blocks = statistics.median(times[(name, "map_blocks")])
        n = records[(name, "map_blocks")]
        print(f"| {name} | {format_size(path.stat().st_size)} | {n:,} | {lines:.2f} | "
              f"{blocks:.2f} | {lines / blocks:.1f}x |")
        summary[name] = {"size": path.stat().st_size, "records": n,
                         "map_lines": times[(name, "map_lines")],
                         "map_blocks": times[(name, "map_blocks")],
                         "median_ratio": lines / blocks}
    summary["csv_plan_seconds"] = plan_times
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
