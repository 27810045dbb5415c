"""Baselines ("peers") for benchmarks/bench_suite.py, and the block-level workload code.

Every engine runs the same code from ``benchmarks/workloads.py``: per line
(``grep_5xx_upper``, ``parse_project``) for ``map_lines``, per batch of lines
(``grep_5xx_upper_batch``, ``count_batch``, ``parse_project_batch``) for everything that
hands its code a batch. This module adds:

* vectorised block functions for ``bp.map_blocks`` (``w1_block``, ``w2_block``,
  ``w3_block``): one regex pass over the block's bytes instead of a Python call per line;
* the baselines: single-process sequential Python (``run_seq``); the hand-written
  ``multiprocessing.Pool`` in its strongest form (``run_pool``: the default start method,
  one task per ``block_size`` range, each streamed in ~1 MiB whole-line batches with one
  call of the per-batch function per batch, one part-file per range); the 1,000-line job
  of a forked ``Pool(2)`` (``run_small_pool``); Dask bag with the processes scheduler
  (``run_dask``) and GNU parallel ``--pipepart`` (``run_parallel``, which calls this file
  as its per-block filter: ``python peers.py --stdin W1``).

Functions are module-level so that cloudpickle and multiprocessing send them *by
reference* (``peers.w1_block``); the suite puts ``benchmarks/`` on ``sys.path`` (and
``PYTHONPATH`` for its children), which spawned workers inherit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import workloads as wl  # noqa: E402

BATCH_SIZE = 1 << 20
"""Bytes of lines per batch handed to the per-line code (the batched baselines)."""

# --- per-line code by workload -----------------------------------------------------------

LINE_FNS: dict[str, Callable[[str], Any]] = {"W1": wl.grep_5xx_upper, "W3": wl.parse_project}
BATCH_FNS: dict[str, Callable[[list[str]], list[str]]] = {
    "W1": wl.grep_5xx_upper_batch, "W2": wl.count_batch, "W3": wl.parse_project_batch}
"""The per-batch code the Pool, the sequential baseline and ``map_batches`` run."""


def identity(line: str) -> str:
    """The identity map (scheduling-overhead and start-up cases)."""
    return line


def lines_out(lines: list[str], fn: Callable[[str], Any]) -> list[str]:
    """Apply a per-line ``fn`` and keep the non-None results (W1, W3)."""
    out = []
    append = out.append
    for line in lines:
        r = fn(line)
        if r is not None:
            append(r)
    return out


# --- vectorised block functions for bp.map_blocks ----------------------------------------
# Same results as the per-line code on this generator's lines (the status is the field after
# the quote that closes the request, and requests hold no '"'); the suite verifies that the
# output is byte-identical to the per-line sequential baseline before timing anything.

_W1_RE = re.compile(rb'" 5')
_W2_METHOD_RE = re.compile(rb'\] "([^ "\n]*)')
_W2_STATUS_RE = re.compile(rb'" (\d\d\d) ')


def w1_block(batch: Any) -> bytes:
    """W1 vectorised: find each ``" 5`` with one regex scan, keep its line if that is the
    line's first ``" `` (the per-line test), and upper-case the kept bytes at once (ASCII
    input: bytes.upper == str.upper)."""
    data = batch.data
    out = []
    for m in _W1_RE.finditer(data):
        at = m.start()
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at) + 1 or len(data)
        if data.find(b'" ', start, end) == at:
            out.append(data[start:end])
    return b"".join(out).upper()


def w2_block(batch: Any) -> list[str]:
    """W2 vectorised: one regex scan for the methods and one for the statuses, zipped
    (falls back to the per-line code unless both find exactly one per line)."""
    data = batch.data
    methods = _W2_METHOD_RE.findall(data)
    statuses = _W2_STATUS_RE.findall(data)
    if not len(methods) == len(statuses) == data.count(b"\n"):
        return wl.count_block(batch)
    counts = Counter(zip(methods, statuses, strict=True))
    return [f"{m.decode()},{s.decode()},{n}" for (m, s), n in sorted(counts.items())]


_W3_COLUMNS = [f"c{i}" for i in range(10)]  # ip - - [date +zone] "request" status bytes ...


def w3_block(batch: Any) -> bytes | str:
    """W3 vectorised with pyarrow (if installed): parse the block as space-separated,
    quoted fields in C++ (``[date +zone]`` splits into two columns), join
    ``ip,status,bytes`` element-wise and return the joined values' data buffer, which
    is already the part-file's bytes. Without pyarrow: the per-line code over ~1 MiB
    batches of the block's lines."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
    except ImportError:
        return _w3_block_lines(batch)
    if not batch.data:
        return b""
    table = pcsv.read_csv(
        pa.py_buffer(batch.data),
        read_options=pcsv.ReadOptions(column_names=_W3_COLUMNS, use_threads=False,
                                      block_size=1 << 22),
        parse_options=pcsv.ParseOptions(delimiter=" ", quote_char='"', double_quote=False,
                                        escape_char=False),
        convert_options=pcsv.ConvertOptions(
            column_types={c: pa.string() for c in _W3_COLUMNS},
            include_columns=["c0", "c6", "c7"], strings_can_be_null=False,
            quoted_strings_can_be_null=False))
    if table.num_rows == 0:
        return b""
    joined = pc.binary_join_element_wise(table["c0"], table["c6"], table["c7"], ",")
    lines = pc.binary_join_element_wise(joined, "", "\n").combine_chunks()
    offsets = memoryview(lines.buffers()[1]).cast("i")
    first, last = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return lines.buffers()[2].to_pybytes()[first:last]


def _w3_block_lines(batch: Any) -> str:
    parse = wl.parse_project
    out = []
    for lines in iter_line_batches(batch.data):
        out.append("\n".join([parse(line) for line in lines]))
        out.append("\n")
    return "".join(out)


def records_block(batch: Any, workload: str) -> list[str]:
    """``map_blocks`` with the Pool's per-batch code over the whole block's records."""
    return BATCH_FNS[workload](batch.records)


def w1_records(batch: Any) -> list[str]:
    """W1 per-batch code over a block's records (``map_blocks``)."""
    return wl.grep_5xx_upper_batch(batch.records)


def w3_records(batch: Any) -> list[str]:
    """W3 per-batch code over a block's records (``map_blocks``)."""
    return wl.parse_project_batch(batch.records)


RECORDS_FNS: dict[str, Callable[[Any], Any]] = {"W1": w1_records, "W2": wl.count_block,
                                                "W3": w3_records}


def scan_block(batch: Any) -> str:
    """Raw scan: count the block's bytes; the part-file is that one number."""
    return f"{len(batch.data)}\n"


BLOCK_FNS: dict[str, Callable[[Any], Any]] = {"W1": w1_block, "W2": w2_block, "W3": w3_block}

# --- sequential Python -------------------------------------------------------------------


def iter_line_batches(f: Any, end: int | None = None,
                      batch_size: int = BATCH_SIZE) -> Iterator[list[str]]:
    """Yield lists of lines from binary file ``f`` (or ``bytes``), ~batch_size bytes each."""
    if isinstance(f, (bytes, memoryview)):
        data = f
        pos, n = 0, len(data)
        while pos < n:
            cut = data.rfind(b"\n", pos, pos + batch_size) + 1 if pos + batch_size < n else n
            if cut <= pos:
                cut = data.find(b"\n", pos + batch_size) + 1 or n
            yield _split(bytes(data[pos:cut]).decode())
            pos = cut
        return
    carry = b""
    while chunk := f.read(batch_size):
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
    if lines and lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [s[:-1] if s.endswith("\r") else s for s in lines]
    return lines


def process_lines(workload: str, batches: Iterator[list[str]], out: Any) -> int:
    """Run ``workload``'s per-batch code over batches of lines (one call per batch),
    writing the results to binary ``out``; return the number of lines."""
    n = 0
    fn = BATCH_FNS[workload]
    write = out.write
    for lines in batches:
        res = fn(lines)
        if res:
            write(("\n".join(res) + "\n").encode())
        n += len(lines)
    return n


def run_seq(workload: str, path: str, out_dir: str, workers: int, block_size: int) -> int:
    """Single-process sequential Python: read ~1 MiB at a time, one output file."""
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "rb", buffering=0) as f, open(os.path.join(out_dir, "out.txt"), "wb") as out:
        return process_lines(workload, iter_line_batches(f), out)


# --- hand-written multiprocessing.Pool ---------------------------------------------------


def line_start(f: Any, pos: int) -> int:
    """The offset right after the first newline at or after ``pos`` (0 stays 0): the
    rule of fsspec's read_block, Hadoop and blockproc, so the ranges' lines tile the file."""
    if pos <= 0:
        return 0
    f.seek(pos)
    while chunk := f.read(1 << 16):
        found = chunk.find(b"\n")
        if found >= 0:
            return pos + found + 1
        pos += len(chunk)
    return pos


def range_batches(f: Any, start: int, end: int,
                  batch_size: int = BATCH_SIZE) -> Iterator[list[str]]:
    """Yield the lines of ``[start, end)`` of binary file ``f`` (aligned offsets) in
    ~``batch_size`` whole-line batches, decoded like blockproc's ``lines`` format."""
    f.seek(start)
    pos, carry = start, b""
    while pos < end:
        chunk = f.read(min(batch_size, end - pos))
        if not chunk:
            break
        pos += len(chunk)
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        if cut:
            yield _split(data[:cut].decode())
    if carry:
        yield _split(carry.decode() + "\n")


def _pool_task(args: tuple[str, str, int, int, str]) -> int:
    """One range: stream it in ~1 MiB batches, one call of the batch code per batch."""
    workload, path, offset, block_size, part = args
    with open(path, "rb", buffering=0) as f, open(part, "wb") as out:
        start = line_start(f, offset)
        end = line_start(f, offset + block_size)
        return process_lines(workload, range_batches(f, start, end), out)


def run_pool(workload: str, path: str, out_dir: str, workers: int, block_size: int) -> int:
    """multiprocessing.Pool (the platform's default start method: fork on Linux) over
    ``block_size`` ranges, one part-file per range; return the lines read."""
    import multiprocessing

    os.makedirs(out_dir, exist_ok=True)
    size = os.path.getsize(path)
    jobs = [(workload, path, off, block_size, os.path.join(out_dir, f"part-{i:05d}"))
            for i, off in enumerate(range(0, size, block_size))]
    with multiprocessing.Pool(workers) as pool:
        n = sum(pool.imap(_pool_task, jobs))
        pool.close()
        pool.join()
    return n


def run_small_pool(path: str, out_dir: str, workers: int) -> int:
    """The small job the way a script does it: read the lines, a forked ``Pool`` maps W3's
    per-batch code over ``workers`` slices, one output file; return the lines read."""
    import multiprocessing

    os.makedirs(out_dir, exist_ok=True)
    with open(path, "rb") as f:
        lines = _split(f.read().decode())
    step = -(-len(lines) // workers)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(wl.parse_project_batch,
                         [lines[i:i + step] for i in range(0, len(lines), step)])
    with open(os.path.join(out_dir, "out.txt"), "wb") as out:
        for res in parts:
            if res:
                out.write(("\n".join(res) + "\n").encode())
    return len(lines)


# --- Dask bag ----------------------------------------------------------------------------


def _dask_partition(lines: list[str], workload: str) -> list[str]:
    stripped = [s[:-1] if s.endswith("\n") else s for s in lines]
    return BATCH_FNS[workload](stripped)


def run_dask(workload: str, path: str, out_dir: str, workers: int, block_size: int) -> None:
    """Dask bag: read_text(blocksize) -> map_partitions -> to_textfiles, processes scheduler."""
    import dask
    import dask.bag as db

    bag = db.read_text(path, blocksize=block_size)
    out = bag.map_partitions(_dask_partition, workload)
    with dask.config.set(scheduler="processes", num_workers=workers):
        out.to_textfiles(os.path.join(out_dir, "*.part"), last_endline=True,
                         name_function=lambda i: f"{i:05d}")


# --- GNU parallel --pipepart ---------------------------------------------------------------


def parallel_available() -> bool:
    """True if GNU parallel is on PATH."""
    exe = shutil.which("parallel")
    if exe is None:
        return False
    try:
        text = subprocess.run([exe, "--version"], capture_output=True, text=True,
                              timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "GNU parallel" in text


def run_parallel(workload: str, path: str, out_dir: str, workers: int, block_size: int) -> None:
    """GNU parallel --pipepart --block: each block through ``python peers.py --stdin W``."""
    os.makedirs(out_dir, exist_ok=True)
    filt = f"{sys.executable} -S {Path(__file__).resolve()} --stdin {workload}"
    with open(os.path.join(out_dir, "out.txt"), "wb") as out:
        subprocess.run(["parallel", "--will-cite", "--pipepart", "-a", path, "--block",
                        str(block_size), "-k", "-j", str(workers), filt],
                       stdout=out, check=True)


def run_parallel_grep(workload: str, path: str, out_dir: str, workers: int,
                      block_size: int) -> None:
    """GNU parallel --pipepart with the W1 shell pipeline (grep | tr)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "out.txt"), "wb") as out:
        subprocess.run(["parallel", "--will-cite", "--pipepart", "-a", path, "--block",
                        str(block_size), "-k", "-j", str(workers), wl.GREP_5XX_UPPER_CMD],
                       stdout=out, check=True)


def _stdin_filter(workload: str) -> None:
    process_lines(workload, iter_line_batches(sys.stdin.buffer.raw), sys.stdout.buffer)
    sys.stdout.buffer.flush()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--stdin":
    _stdin_filter(sys.argv[2])
