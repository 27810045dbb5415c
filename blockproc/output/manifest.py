"""The ``_SUCCESS`` manifest: building it, writing it, reading it, checking files against it.

Examples
--------
>>> from blockproc.storage import filesystem, write_bytes_atomic
>>> fs = filesystem("memory")
>>> fs.pipe_file("/doc/manifest/part-00000.txt", b"a\\n")
>>> write_bytes_atomic(fs, "/doc/manifest/_SUCCESS", dumps_rows({"job_id": "j", "blocks": [
...     {"part": "part-00000.txt", "bytes_written": 2, "checksum": "crc32:ddeaa107"}]}))
>>> read_manifest(fs, "/doc/manifest")["job_id"]
'j'
>>> verify_output(fs, "/doc/manifest", read_manifest(fs, "/doc/manifest"))
[]
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from blockproc.model import BlockResult, Plan, blocks_summary
from blockproc.output.layout import SUCCESS
from blockproc.storage import (
    AbstractFileSystem,
    is_local,
    read_json,
    retry_call,
    write_bytes_atomic,
)
from blockproc.storage.urls import is_object_store

MANIFEST_VERSION = 1

ROWS_PER_CHUNK = 2048
"""Rows serialised per chunk of a streamed manifest: big enough that writes are few,
small enough that a million-block manifest never exists whole in memory as objects."""


def build_manifest(job_id: str, plan: Plan, results: Sequence[BlockResult],
                   job: Mapping[str, Any]) -> dict[str, Any]:
    """Return the manifest of a finished job: its id, ``job`` (executor, workers, seconds,
    options...), the plan's inputs and one entry per committed block.

    ``blocks`` holds the results themselves (and ``job["attempts"]`` may hold attempt
    records): :func:`iter_rows` turns each row into JSON as it writes it, so no dict per
    block is ever built for a million blocks at once.
    """
    return {
        "version": MANIFEST_VERSION,
        "job_id": job_id,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **job,
        "fingerprint": plan.fingerprint,
        "block_size": plan.block_size,
        "format": dict(plan.format),
        "inputs": [f.to_dict() for f in plan.files],
        "totals": blocks_summary(results),
        "blocks": results,
    }


def _is_rows(value: Any) -> bool:
    """A non-empty list or tuple of objects (dicts, or rows with ``to_dict``)."""
    if not isinstance(value, list | tuple) or not value:
        return False
    first = value[0]
    return isinstance(first, dict) or hasattr(first, "to_dict")


def _row_json(row: Any) -> str:
    return json.dumps(row.to_dict() if hasattr(row, "to_dict") else row)


def iter_rows(doc: Mapping[str, Any]) -> Iterator[bytes]:
    """Yield :func:`dumps_rows` of ``doc`` in chunks of :data:`ROWS_PER_CHUNK` rows.

    A list of row objects (anything with ``to_dict()``, as a ``BlockResult``) is written as
    the list of their dicts, each made and dropped in turn.

    Examples
    --------
    >>> from blockproc.model import AttemptRecord
    >>> chunks = list(iter_rows({"job_id": "j", "attempts": [
    ...     AttemptRecord(0, 1, "w", 0.0, 1.0, "committed")]}))
    >>> print(b"".join(chunks).decode())
    {
     "job_id": "j",
     "attempts": [
      {"block_id": 0, "attempt": 1, "worker": "w", "started": 0.0, "finished": 1.0, ...}
     ]
    }
    <BLANKLINE>
    """
    lead = "{\n"
    for i, (key, value) in enumerate(doc.items()):
        sep = "" if i == 0 else ",\n"
        if not _is_rows(value):
            lead += f"{sep} {json.dumps(key)}: {json.dumps(value)}"
            continue
        yield (lead + f"{sep} {json.dumps(key)}: [\n  ").encode()
        for start in range(0, len(value), ROWS_PER_CHUNK):
            rows = ",\n  ".join(map(_row_json, value[start:start + ROWS_PER_CHUNK]))
            yield (rows + (",\n  " if start + ROWS_PER_CHUNK < len(value) else "")).encode()
        lead = "\n ]"
    yield (lead + "\n}\n").encode()


def iter_list(rows: Sequence[Any]) -> Iterator[bytes]:
    """Yield the JSON list of ``rows`` (dicts, or objects with ``to_dict()``), one row per
    line, in chunks of :data:`ROWS_PER_CHUNK` rows.

    Examples
    --------
    >>> b"".join(iter_list([{"id": 0}, {"id": 1}]))
    b'[\\n{"id": 0},\\n{"id": 1}\\n]\\n'
    >>> json.loads(b"".join(iter_list([])))
    []
    """
    yield b"[\n"
    for start in range(0, len(rows), ROWS_PER_CHUNK):
        chunk = ",\n".join(map(_row_json, rows[start:start + ROWS_PER_CHUNK]))
        yield (chunk + (",\n" if start + ROWS_PER_CHUNK < len(rows) else "")).encode()
    yield b"\n]\n"


def write_manifest(fs: AbstractFileSystem, path: str, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` to ``path`` as :func:`dumps_rows` does, atomically for readers (see
    :func:`write_stream_atomic`)."""
    write_stream_atomic(fs, path, lambda: iter_rows(doc))


def write_stream_atomic(fs: AbstractFileSystem, path: str,
                        chunks: Callable[[], Iterable[bytes]]) -> None:
    """Write the bytes that ``chunks()`` yields to ``path`` so that readers see all of it
    or nothing: streamed to a staging file that is renamed on a filesystem (retried from
    the start on a transient error), one PUT of the whole on an object store (atomic
    there). Nothing the size of the file is held in memory on a filesystem.
    """
    if is_object_store(fs):
        write_bytes_atomic(fs, path, b"".join(chunks()))
        return
    directory, name = posixpath.split(path)
    staging = posixpath.join(directory, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")

    def write() -> None:
        if is_local(fs):
            os.makedirs(directory, exist_ok=True)
            with open(staging, "wb") as f:
                f.writelines(chunks())
            os.replace(staging, path)
            return
        fs.makedirs(directory, exist_ok=True)
        with fs.open(staging, "wb") as f:
            for chunk in chunks():
                f.write(chunk)
        fs.mv(staging, path)

    try:
        retry_call(write, f"to write {path!r}")
    except BaseException:
        with contextlib.suppress(Exception):  # nothing half-written stays behind
            fs.rm_file(staging)
        raise


def dumps_rows(doc: Mapping[str, Any]) -> bytes:
    """Return ``doc`` as JSON with one line per key and per row of its lists of objects.

    Readable, and fast for 1,000,000 blocks (each row goes through json's C encoder, which
    ``indent=`` would disable). Lists of row objects (with ``to_dict()``) are written as
    the list of their dicts.

    Examples
    --------
    >>> print(dumps_rows({"job_id": "j", "blocks": [{"id": 0}, {"id": 1}]}).decode())
    {
     "job_id": "j",
     "blocks": [
      {"id": 0},
      {"id": 1}
     ]
    }
    <BLANKLINE>
    """
    return b"".join(iter_rows(doc))


def read_manifest(fs: AbstractFileSystem, path: str) -> dict[str, Any]:
    """Return the ``_SUCCESS`` manifest of an output directory."""
    return dict(read_json(fs, posixpath.join(path.rstrip("/"), SUCCESS)))


def verify_output(fs: AbstractFileSystem, path: str, manifest: Mapping[str, Any]) -> list[str]:
    """Return the part-files that are missing or differ from the manifest (size, CRC-32)."""
    bad = []
    for entry in manifest["blocks"]:
        part = posixpath.join(path, entry["part"])
        data = _read_or_none(fs, part)
        if data is None or len(data) != entry["bytes_written"] or \
                f"crc32:{zlib.crc32(data):08x}" != entry["checksum"]:
            bad.append(entry["part"])
    return bad


def _read_or_none(fs: AbstractFileSystem, path: str) -> bytes | None:
    try:
        data: bytes = retry_call(lambda: fs.cat_file(path), f"to read {path!r}")
    except FileNotFoundError:
        return None
    return data
