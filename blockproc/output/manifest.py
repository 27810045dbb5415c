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
import json.encoder
import math
import os
import posixpath
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from blockproc._frozen import field_names
from blockproc.model import AttemptRecord, Block, BlockResult, Plan, blocks_summary
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
                   job: Mapping[str, Any],
                   texts: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Return the manifest of a finished job: its id, ``job`` (executor, workers, seconds,
    options...), the plan's inputs and one entry per committed block.

    ``blocks`` holds the results themselves (and ``job["attempts"]`` may hold attempt
    records): :func:`iter_rows` turns each row into JSON as it writes it, so no dict per
    block is ever built for a million blocks at once. ``texts``, if given, holds for
    each result its row already formatted (``block_json``, as the ledger wrote it) or
    None (see :class:`KnownRows`). ``attempt_totals`` (see :func:`attempt_totals`) lets
    ``status`` answer without reading every row.
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
        "attempt_totals": attempt_totals(results, job.get("attempts") or ()),
        "blocks": results if texts is None else KnownRows(results, texts),
    }


def attempt_totals(results: Sequence[BlockResult], attempts: Sequence[Any]) -> dict[str, int]:
    """Counts of a job's attempts for the manifest's header: ``attempts`` in this run, how
    many ended in each status, how many were ``speculative``, and ``committed_attempts``,
    the attempt numbers of the committed blocks summed (rows are dicts or records).

    Examples
    --------
    >>> from blockproc.model import AttemptRecord
    >>> attempt_totals([], [AttemptRecord(0, 1, "w", 0.0, 1.0, "failed"),
    ...                     {"block_id": 0, "attempt": 2, "status": "committed"}])
    {'attempts': 2, 'committed': 1, 'failed': 1, 'speculative': 0, 'committed_attempts': 0}
    """
    by_status: dict[str, int] = {}
    speculative = 0
    for row in attempts:
        if isinstance(row, Mapping):
            status, spec = row.get("status", ""), row.get("speculative", False)
        else:
            status, spec = row.status, row.speculative
        by_status[status] = by_status.get(status, 0) + 1
        speculative += bool(spec)
    return {"attempts": len(attempts), **dict(sorted(by_status.items())),
            "speculative": speculative,
            "committed_attempts": sum(r.attempt for r in results)}


class KnownRows(Sequence[Any]):
    """Rows (objects with ``to_dict``) with some of their JSON texts already made: the
    ledger line of each block a job committed is its row of ``_SUCCESS`` as well, so
    :func:`iter_rows` writes that text as it is and formats only the rows whose text is
    None (``texts[i]`` is the text of ``rows[i]``).

    Examples
    --------
    >>> rows = KnownRows([{"id": 0}, {"id": 1}], ['{"id": 0}', None])
    >>> len(rows), rows[1], list(rows.texts(0, 2))
    (2, {'id': 1}, ['{"id": 0}', '{"id": 1}'])
    """

    def __init__(self, rows: Sequence[Any], texts: Sequence[str | None]) -> None:
        if len(rows) != len(texts):
            raise ValueError(f"KnownRows: {len(texts)} texts for {len(rows)} rows; give one "
                             f"text (or None) per row")
        self._rows, self._texts = rows, texts

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        return self._rows[index]

    def texts(self, start: int, stop: int) -> Iterator[str]:
        """The JSON texts of rows ``start`` to ``stop``."""
        for row, text in zip(self._rows[start:stop], self._texts[start:stop], strict=True):
            yield _row_json(row) if text is None else text


class WrittenRows(Sequence[Any]):
    """Rows that a local file already holds as a JSON list, one row per line (the layout
    of :func:`iter_list`, as the attempts file is written): :func:`iter_rows` copies their
    text from the file instead of formatting each row again, once it has checked that
    the file has one line per row and the first and last rows as they would be written;
    otherwise it formats them.

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkstemp()[1]
    >>> with open(path, "wb") as f:
    ...     f.writelines(iter_list([{"n": 1}, {"n": 2}]))
    >>> print(dumps_rows({"rows": WrittenRows([{"n": 1}, {"n": 2}], path)}).decode())
    {
     "rows": [
      {"n": 1},
      {"n": 2}
     ]
    }
    <BLANKLINE>
    """

    CHUNK = 1 << 20
    """Bytes read at a time (a few times this is held at once)."""

    def __init__(self, rows: Sequence[Any], path: str) -> None:
        self._rows, self._path = rows, path

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        return self._rows[index]

    def copied(self) -> Iterator[bytes] | None:
        """The rows' text as the manifest lays it out (rows joined by ``",\\n  "``), read
        from the file; None if the file does not hold these rows."""
        rows, path = self._rows, self._path
        if not rows:
            return None
        first, last = _row_json(rows[0]).encode(), _row_json(rows[-1]).encode()
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(self.CHUNK), b""))
                f.seek(0)
                start = f.read(len(first) + 3)
                f.seek(max(0, size - len(last) - 3))
                end = f.read()
        except OSError:
            return None
        after = b"," if len(rows) > 1 else b"\n"
        if lines != len(rows) + 2 or start != b"[\n" + first + after or end != last + b"\n]\n":
            return None
        return self._body(size)

    def _body(self, size: int) -> Iterator[bytes]:
        with open(self._path, "rb") as f:
            f.seek(2)  # after "[\n", up to "\n]\n"; no row holds a raw newline
            left = size - 5
            while left > 0:
                chunk = f.read(min(self.CHUNK, left))
                if not chunk:
                    raise OSError(f"{self._path!r} got shorter while it was copied")
                left -= len(chunk)
                yield chunk.replace(b"\n", b"\n  ")


def _is_rows(value: Any) -> bool:
    """A non-empty list or tuple of objects (dicts, or rows with ``to_dict``), or
    :class:`KnownRows`."""
    if not isinstance(value, list | tuple | KnownRows | WrittenRows) or not value:
        return False
    first = value[0]
    return isinstance(first, dict) or hasattr(first, "to_dict")


def _row_json(row: Any) -> str:
    if isinstance(row, BlockResult):
        return block_json(row)
    if isinstance(row, AttemptRecord):  # its fields, without a dict in between
        return _attempt_text(row.block_id, row.attempt, row.worker, row.started,
                             row.finished, row.status, row.error, row.speculative) \
            or json.dumps(row.to_dict())
    data = row.to_dict() if hasattr(row, "to_dict") else row
    if isinstance(data, dict) and tuple(data) == ATTEMPT_KEYS:
        return attempt_json(data)
    return json.dumps(data)


_BLOCK_RESULT_FIELDS = ("block", "part", "attempt", "worker", "records_in", "records_out",
                        "bytes_read", "bytes_written", "checksum", "started", "seconds",
                        "bad_records", "stderr_bytes", "attempts", "counters", "value",
                        "tails")
_KNOWN_FIELDS = (field_names(BlockResult) == _BLOCK_RESULT_FIELDS
                 and field_names(Block) == ("id", "path", "start", "end", "files"))
"""block_json formats the fields it knows; a BlockResult with others goes through
``to_dict`` (and tests/unit/test_scale.py says to teach block_json the new ones)."""

_quote = json.encoder.encode_basestring_ascii  # what json.dumps does to a str


def block_json(r: BlockResult) -> str:
    """Return ``json.dumps(r.to_dict())``, the block's row of the manifest and the ledger,
    formatted directly (a few times faster) unless something unusual is in it (packed
    files, counters, tails, a float that is not finite).

    Examples
    --------
    >>> r = BlockResult(Block(0, "in.txt", 0, 10), "part-00000.txt", 1, "w", 2, 2, 10, 10,
    ...                 "crc32:00000000", 1.5, 0.25, attempts=1)
    >>> block_json(r) == json.dumps(r.to_dict())
    True
    """
    b = r.block
    if (not _KNOWN_FIELDS or b.files or r.counters or r.tails
            or not (math.isfinite(r.started) and math.isfinite(r.seconds))):
        return json.dumps(r.to_dict())
    q = _quote
    row = (f'{{"id": {b.id}, "path": {q(b.path)}, "start": {b.start}, "end": {b.end}, '
           f'"part": {q(r.part)}, "attempt": {r.attempt}, "worker": {q(r.worker)}, '
           f'"records_in": {r.records_in}, "records_out": {r.records_out}, '
           f'"bytes_read": {r.bytes_read}, "bytes_written": {r.bytes_written}, '
           f'"checksum": {q(r.checksum)}, "started": {round(r.started, 6)!r}, '
           f'"seconds": {round(r.seconds, 6)!r}, "bad_records": {r.bad_records}')
    if r.stderr_bytes:
        row += f', "stderr_bytes": {r.stderr_bytes}'
    if r.attempts:
        row += f', "attempts": {r.attempts}'
    return row + "}"


ATTEMPT_KEYS = ("block_id", "attempt", "worker", "started", "finished", "status", "error",
                "speculative")
"""The keys of an attempt's row, in order (``AttemptRecord.to_dict``)."""


def attempt_json(row: Mapping[str, Any]) -> str:
    """Return ``json.dumps(row)`` for an attempt's row (keys :data:`ATTEMPT_KEYS`),
    formatted directly when its values have the usual types.

    Examples
    --------
    >>> from blockproc.model import AttemptRecord
    >>> row = AttemptRecord(3, 2, "h:1", 1.25, 2.5, "failed", "ValueError: x").to_dict()
    >>> attempt_json(row) == json.dumps(row)
    True
    """
    return _attempt_text(*(row[k] for k in ATTEMPT_KEYS)) or json.dumps(row)


def _attempt_text(block_id: Any, attempt: Any, worker: Any, started: Any, finished: Any,
                  status: Any, error: Any, speculative: Any) -> str:
    """An attempt's row as json.dumps writes it, or "" if a value has an unusual type."""
    if not (type(started) is float and type(finished) is float
            and math.isfinite(started) and math.isfinite(finished)
            and type(block_id) is int and type(attempt) is int and type(speculative) is bool
            and type(worker) is str and type(status) is str and type(error) is str):
        return ""
    q = _quote
    return (f'{{"block_id": {block_id}, "attempt": {attempt}, "worker": {q(worker)}, '
            f'"started": {started!r}, "finished": {finished!r}, "status": {q(status)}, '
            f'"error": {q(error)}, "speculative": {"true" if speculative else "false"}}}')


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
            empty = isinstance(value, KnownRows | WrittenRows)  # no rows: an empty list
            lead += f"{sep} {json.dumps(key)}: {'[]' if empty else json.dumps(value)}"
            continue
        copied = value.copied() if isinstance(value, WrittenRows) else None
        yield (lead + f"{sep} {json.dumps(key)}: [\n  ").encode()
        lead = "\n ]"
        if copied is not None:
            yield from copied
            continue
        for start in range(0, len(value), ROWS_PER_CHUNK):
            stop = start + ROWS_PER_CHUNK
            rows = ",\n  ".join(value.texts(start, stop) if isinstance(value, KnownRows)
                                else map(_row_json, value[start:stop]))
            yield (rows + (",\n  " if stop < len(value) else "")).encode()
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
    staging = posixpath.join(directory, f".{name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")

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


ROWS_START = b'": [\n  {'
"""Where a list of rows starts in the manifest's layout (also in ``indent=1`` JSON):
raw newlines appear only between JSON tokens, never inside a string, so this cannot
occur inside a value."""


class Manifest(Mapping[str, Any]):
    """A manifest read lazily: its keys and small values are parsed at once, each list of
    rows (``blocks``, ``attempts``...) only when asked for, so reading the header of a
    million-block manifest costs a read of the file, not a million dicts.

    Any JSON object can be read this way; a document not in the manifest's layout is
    parsed whole.

    Examples
    --------
    >>> m = Manifest(dumps_rows({"job_id": "j", "blocks": [{"id": 0}, {"id": 1}]}))
    >>> m.num_rows("blocks"), m.is_parsed("blocks")
    (2, False)
    >>> m["job_id"], m["blocks"], m.is_parsed("blocks")
    ('j', [{'id': 0}, {'id': 1}], True)
    >>> dict(Manifest(b'{"a": [1, 2]}'))
    {'a': [1, 2]}
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        try:
            self._values, self._sections = _split_rows(data)
        except (ValueError, TypeError):  # another layout: parse it whole
            self._values, self._sections = json.loads(data), {}
        if not isinstance(self._values, dict):
            raise TypeError(f"a manifest is a JSON object, not {type(self._values).__name__}")

    def __getitem__(self, key: str) -> Any:
        if key in self._sections:
            self._values[key] = json.loads(b"[" + self.raw_rows(key) + b"]")
            del self._sections[key]
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values  # never parses (Mapping's would, through __getitem__)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def is_parsed(self, key: str) -> bool:
        """False while the rows of ``key`` are still unparsed bytes."""
        return key not in self._sections

    def raw_rows(self, key: str) -> bytes:
        """The unparsed rows of ``key``: the text between its ``[`` and ``]``."""
        start, end = self._sections[key]
        return self._data[start:end]

    def findall(self, pattern: re.Pattern[bytes], key: str) -> list[Any]:
        """``pattern.findall`` over the unparsed rows of ``key`` (no copy of them)."""
        start, end = self._sections[key]
        return pattern.findall(self._data, start, end)

    def num_rows(self, key: str) -> int:
        """How many rows ``key`` has, without parsing them (0 if it is no list)."""
        if key in self._sections:
            start, end = self._sections[key]
            return self._data.count(b"\n  {", start, end)
        value = self._values.get(key)
        return len(value) if isinstance(value, list) else 0


def _split_rows(data: bytes) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Parse ``data`` with each list of rows left out (an empty list in its place), and
    say where each list's rows are: ``{key: (start, end)}``."""
    head: list[bytes] = []
    sections: dict[str, tuple[int, int]] = {}
    pos = 0
    while (found := data.find(ROWS_START, pos)) >= 0:
        quote = data.rfind(b'\n "', pos, found)
        start = found + len(b'": [')
        end = data.find(b"\n ]", start)
        if quote < 0 or end < 0:
            raise ValueError("not the manifest's layout")
        sections[str(json.loads(data[quote + 2:found + 1]))] = (start, end)
        head += [data[pos:start], b"]"]
        pos = end + len(b"\n ]")
    head.append(data[pos:])
    values = json.loads(b"".join(head))
    if not isinstance(values, dict) or not sections.keys() <= values.keys():
        raise ValueError("not the manifest's layout")
    return values, sections


def read_manifest_lazily(fs: AbstractFileSystem, path: str) -> Manifest:
    """Return the ``_SUCCESS`` manifest of an output directory as a :class:`Manifest`."""
    name = posixpath.join(path.rstrip("/"), SUCCESS)
    return Manifest(retry_call(lambda: fs.cat_file(name), f"to read {name!r}"))


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
