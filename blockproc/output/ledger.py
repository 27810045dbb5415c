"""The ledger of committed blocks, which resume trusts, and the attempts files of each run.

::

    _blockproc/committed/<job>.jsonl        local disks: one line appended per block
    _blockproc/committed/part-00042.txt.json  object stores (no append): one object per block
    _blockproc/attempts/<job>.json          the attempts of a run that ended

Examples
--------
>>> from blockproc.model import Block, BlockResult
>>> from blockproc.storage import filesystem
>>> fs = filesystem("memory")
>>> result = BlockResult(Block(0, "in.txt", 0, 10), "part-00000.txt", attempt=1, worker="w",
...                      records_in=1, records_out=1, bytes_read=10, bytes_written=10,
...                      checksum="crc32:00000000", started=0.0, seconds=0.1)
>>> ledger = Ledger(fs, "/doc/ledger", "job-1")
>>> ledger.record(result)
>>> ledger.flush()
>>> ledger.close()
>>> sorted(read_ledger(fs, "/doc/ledger"))
[0]
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Sequence
from typing import Any, BinaryIO

from blockproc.model import BlockResult
from blockproc.output.layout import ATTEMPTS, LEDGER, STATE_DIR
from blockproc.output.manifest import block_json, iter_list, write_stream_atomic
from blockproc.storage import (
    AbstractFileSystem,
    is_local,
    read_json,
    retry_call,
    write_bytes_atomic,
)


class Ledger:
    """The writer of one job's ledger entries (the reader is :func:`read_ledger`)."""

    def __init__(self, fs: AbstractFileSystem, root: str, job_id: str) -> None:
        self.fs = fs
        self.dir = posixpath.join(root, STATE_DIR, LEDGER)
        self.job_id = job_id
        self._local = is_local(fs)  # asked once: record() runs once per committed block
        self._file: BinaryIO | None = None
        self._lines: list[str] = []  # recorded, not written yet (local disks)

    def record(self, result: BlockResult, row: str | None = None) -> None:
        """Add a committed block to the ledger; ``row`` is ``block_json(result)`` if the
        caller has it already.

        On a local disk: one line for this job's ``committed/<job>.jsonl``, appended by
        the next :meth:`flush` (the master flushes every tenth of a second or so, so the
        lines of the blocks committed meanwhile take one write; no file creation or
        rename per block); a line cut short by a crash is ignored on resume. Elsewhere
        (object stores have no append): one small JSON object per block, written now.
        """
        if row is None:
            row = block_json(result)
        if not self._local:
            write_bytes_atomic(self.fs, posixpath.join(self.dir, result.part + ".json"),
                               row.encode())
            return
        self._lines.append(row)

    @property
    def pending(self) -> int:
        """Lines recorded and not written yet."""
        return len(self._lines)

    def flush(self) -> None:
        """Append the lines recorded since the last flush to the ledger file, in one write
        (the file is opened at the first, and kept open until :meth:`close`)."""
        if not self._lines:
            return
        file = self._file
        if file is None:
            self.fs.makedirs(self.dir, exist_ok=True)
            # held open for the whole job (closed by close()): one open per job, not per
            # block; unbuffered, so each flush is one write call
            file = self._file = open(  # noqa: SIM115
                posixpath.join(self.dir, f"{self.job_id}.jsonl"), "ab", buffering=0)
        data = ("\n".join(self._lines) + "\n").encode()
        self._lines.clear()  # written or not (an error is the job's): never twice
        written = file.write(data)
        while written is not None and written < len(data):  # a short write: the rest
            data = data[written:]
            written = file.write(data)

    def close(self) -> None:
        """Close the local ledger file, if one is open (never raises); lines not flushed
        are dropped (the master flushes them, under the job's lock, before it ends)."""
        self._lines.clear()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def read_ledger(fs: AbstractFileSystem, path: str) -> dict[int, dict[str, Any]]:
    """Return the ledger entries of the output directory ``path``, by block id.

    Reads the per-job ``.jsonl`` files of local disks and the per-block ``.json`` objects
    of object stores; a later job's entry for a block replaces an earlier one, and an
    entry cut short by a crash, or listed but gone, is skipped (its block runs again).
    """
    ledger = posixpath.join(path, STATE_DIR, LEDGER)
    entries: dict[int, dict[str, Any]] = {}
    try:
        listed = retry_call(lambda: fs.ls(ledger, detail=False), f"to list {ledger!r}")
    except FileNotFoundError:
        return entries
    for name in sorted(listed):
        for row in _rows(fs, name):
            try:
                entry = json.loads(row)
            except ValueError:
                continue
            entries[int(entry["id"])] = entry
    return entries


def _rows(fs: AbstractFileSystem, name: str) -> list[bytes]:
    """The entries of one ledger file (none if it is not one, or is gone)."""
    if not name.endswith((".jsonl", ".json")):
        return []
    try:
        data: bytes = retry_call(lambda: fs.cat_file(name), f"to read {name!r}")
    except FileNotFoundError:
        return []
    return data.splitlines() if name.endswith(".jsonl") else [data]


def save_attempts(fs: AbstractFileSystem, root: str, job_id: str,
                  records: Sequence[Any]) -> None:
    """Write the attempts of run ``job_id`` for the runs that resume it: ``records`` are
    dicts, or objects with ``to_dict()`` (each turned into JSON as it is written)."""
    rows = records if isinstance(records, list | tuple) else list(records)
    write_stream_atomic(fs, posixpath.join(root, STATE_DIR, ATTEMPTS, f"{job_id}.json"),
                        lambda: iter_list(rows))


def earlier_attempts(fs: AbstractFileSystem, root: str,
                     job_id: str | None = None) -> list[dict[str, Any]]:
    """Return the attempts saved by the runs of the output ``root`` other than ``job_id``,
    each with its ``job_id`` (empty for a new or overwritten output).

    Examples
    --------
    >>> from blockproc.storage import filesystem
    >>> fs = filesystem("memory")
    >>> save_attempts(fs, "/doc/attempts", "run-1", [{"block": 0, "status": "failed"}])
    >>> earlier_attempts(fs, "/doc/attempts", "run-2")
    [{'block': 0, 'status': 'failed', 'job_id': 'run-1'}]
    """
    folder = posixpath.join(root, STATE_DIR, ATTEMPTS)
    records: list[dict[str, Any]] = []
    try:
        listed = retry_call(lambda: fs.ls(folder, detail=False), f"to list {folder!r}")
    except FileNotFoundError:
        return records
    for name in sorted(listed):
        run = posixpath.splitext(posixpath.basename(name))[0]
        if not name.endswith(".json") or run == job_id:
            continue
        with contextlib.suppress(FileNotFoundError, ValueError):
            records += [{**r, "job_id": run} for r in read_json(fs, name)]
    return records
