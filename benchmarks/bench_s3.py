"""S3 read benchmark: blockproc's ranged, parallel reads vs. one whole-object GET.

    python benchmarks/bench_s3.py [--size 1GiB] [--workers 2] [--block-size 64MiB]
        [--runs 1] [--executors processes,threads] [--source PATH] [--json out.json]

Starts the local S3-compatible server (moto, ``tests/s3server.py``) in its own process on
127.0.0.1, uploads a >= 1 GiB text object once, then times, interleaved:

    cat_file   ``fs.cat_file(key)``: the whole object in one GET, in this process
    blockproc  ``bp.map_blocks(count_bytes, s3://...)`` with ``--workers`` workers, for
               each of ``--executors`` (processes, threads): every worker fetches only
               its blocks, in ranged GETs of up to 8 MiB

and reports throughput (input bytes / wall seconds) and the ratio blockproc / cat_file.
blockproc's time is the whole job: plan, worker start, reads, part-files, commit.

The server answers ranged GETs with one seek into the stored object (``--fast-ranges``):
moto itself copies the whole object for every ranged GET, which at 1 MiB ranges of a
1 GiB object would measure moto, not the client. Whole-object GETs go through moto.
Client and server share the machine's cores, so the figures are for this machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import blockproc as bp  # noqa: E402
from blockproc._units import format_size, parse_size  # noqa: E402
from tests.s3server import OFFLINE_ENV  # noqa: E402

BUCKET = "bench"
KEY = "input/access.log"


def count_bytes(batch: bp.Batch) -> list[str]:
    """The byte-counting mapper: one line per block, its size."""
    return [str(len(batch.data))]


def start_server() -> tuple[subprocess.Popen[str], str]:
    """Run ``python -m tests.s3server --fast-ranges`` and return it with its endpoint."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.s3server", "--fast-ranges"], cwd=ROOT,
        env={**os.environ, **OFFLINE_ENV}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    if not endpoint.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"the S3 server did not start (printed {endpoint!r})")
    return proc, endpoint


def source_file(size: int, path: str | None) -> Path:
    """A local text file of about ``size`` bytes to upload (made once, then reused)."""
    if path:
        return Path(path)
    cached = HERE / "data" / f"access-{size}-seed0.log"
    if not cached.exists():
        from blockproc.datasets import access_log

        cached.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {cached} ...", flush=True)
        access_log(cached, size, seed=0)
    return cached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block-size", default="64MiB")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--executors", default="processes,threads",
                        help="comma-separated executors to time (default: both local ones)")
    parser.add_argument("--source", default=None, help="upload this file instead")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.update(OFFLINE_ENV)  # inherited by the worker processes
    load_before = os.getloadavg()

    import s3fs

    source = source_file(parse_size(args.size), args.source)
    size = source.stat().st_size
    server, endpoint = start_server()
    options: dict[str, Any] = {"key": "testing", "secret": "testing",
                               "client_kwargs": {"endpoint_url": endpoint}}
    try:
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir(BUCKET)
        started = time.perf_counter()
        fs.put_file(str(source), f"{BUCKET}/{KEY}")
        print(f"uploaded {format_size(size)} in {time.perf_counter() - started:.1f}s "
              f"to {endpoint}", flush=True)
        rows: list[dict[str, Any]] = []
        for run in range(args.runs):
            started = time.perf_counter()
            data = fs.cat_file(f"{BUCKET}/{KEY}")
            seconds = time.perf_counter() - started
            assert len(data) == size
            del data
            rows.append({"case": "cat_file (1 GET, 1 process)", "run": run,
                         "seconds": seconds, "bytes": size})
            print(f"run {run}: cat_file {seconds:.2f}s", flush=True)

            for executor in args.executors.split(","):
                out = f"{BUCKET}/out-{executor}-{run}"
                started, wall_start = time.perf_counter(), time.time()
                result = bp.map_blocks(count_bytes, f"s3://{BUCKET}/{KEY}",
                                       output=f"s3://{out}", block_size=args.block_size,
                                       executor=executor, workers=args.workers,
                                       storage_options=options, progress=False)
                seconds = time.perf_counter() - started
                counted = sum(int(line) for line in b"".join(
                    fs.cat_file(f"{out}/{b.part}") for b in result.blocks).split())
                assert counted == size, (counted, size)
                first = min(b.started for b in result.blocks) - wall_start
                span = max(b.started + b.seconds for b in result.blocks) - wall_start - first
                rows.append({"case": f"blockproc map_blocks ({executor}, {args.workers} "
                                     f"workers)",
                             "run": run, "seconds": seconds, "bytes": size,
                             "bytes_fetched": result.num_bytes_read,
                             "blocks": len(result.blocks), "first_block_after": first,
                             "blocks_span": span})
                print(f"run {run}: blockproc/{executor} {seconds:.2f}s ({len(result.blocks)} "
                      f"blocks, {format_size(result.num_bytes_read)} fetched; first block "
                      f"after {first:.2f}s, blocks ran for {span:.2f}s)", flush=True)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)

    table = report(rows, size, args, load_before)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "table": table}, indent=1))
    return 0


def report(rows: list[dict[str, Any]], size: int, args: argparse.Namespace,
           load_before: tuple[float, float, float]) -> str:
    """A Markdown table: best run of each case, throughput and the ratio to cat_file."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["case"] not in best or row["seconds"] < best[row["case"]]["seconds"]:
            best[row["case"]] = row
    baseline = next(r for c, r in best.items() if c.startswith("cat_file"))
    base_rate = size / baseline["seconds"]
    lines = [
        f"S3 read of one {format_size(size)} object from the local S3 server (moto, "
        f"loopback), block size {args.block_size}, best of {args.runs} run(s); "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average before: "
        f"{' '.join(f'{x:.1f}' for x in load_before)}",
        "",
        "| case | seconds | MiB/s | vs cat_file | bytes fetched | first block after | "
        "blocks ran for |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, row in best.items():
        rate = size / row["seconds"]
        fetched = format_size(row.get("bytes_fetched", size))
        timing = (f"{row['first_block_after']:.2f}s | {row['blocks_span']:.2f}s"
                  if "blocks_span" in row else "- | -")
        lines.append(f"| {case} | {row['seconds']:.2f} | {rate / 2**20:.0f} | "
                     f"{rate / base_rate:.2f}x | {fetched} | {timing} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
