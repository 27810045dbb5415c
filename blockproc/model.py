"""Values that cross processes and reach manifests: frozen, picklable, JSON-safe.

``Block`` and ``Plan`` describe the work; ``BlockResult`` and ``JobResult`` what came
of it. Each has ``to_dict``/``from_dict`` for the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from blockproc._frozen import FrozenSlots
from blockproc._units import format_size

F = TypeVar("F", bound=FrozenSlots)
_set = object.__setattr__

try:  # the built-in SHA-256, as the standard library's random does: hashlib loads OpenSSL
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - other Pythons
    from hashlib import sha256 as _sha256


def frozen_builder(cls: type[F], names: Sequence[str]) -> Callable[..., F]:
    """Return ``build(*values)``: ``cls(**dict(zip(names, values)))`` for a
    :class:`~blockproc._frozen.FrozenSlots` class, every field named, without the
    checks and conversions its ``__init__`` may make, and several times faster (the
    master makes a task and a result per block, a record per attempt, from values it
    already holds).

    How: the object is made as an instance of a class of the same layout whose
    attributes may be set (``object``'s own ``__setattr__``, a C slot, not a Python
    call per field), its fields set, then given its class (``__class__`` assignment,
    which Python allows between classes of the same layout); what comes out is an
    ordinary ``cls`` instance, frozen like any other.

    Examples
    --------
    >>> build = frozen_builder(Block, ("id", "path", "start", "end", "files"))
    >>> build(0, "a.log", 0, 10, ()) == Block(0, "a.log", 0, 10)
    True
    >>> type(build(0, "a.log", 0, 10, ())) is Block
    True
    >>> frozen_builder(Block, ("id",))
    Traceback (most recent call last):
    ...
    TypeError: frozen_builder(Block): name every field of ('id', 'path', 'start', 'end', \
'files') once, got ('id',)
    """
    if not (isinstance(cls, type) and cls.__bases__ == (FrozenSlots,)) \
            or sorted(names) != sorted(cls._fields) or cls.__slots__ != cls._fields:
        raise TypeError(f"frozen_builder({getattr(cls, '__name__', cls)}): name every field "
                        f"of {getattr(cls, '_fields', ())} once, got {tuple(names)}")
    # same base, same slots: the layout __class__ assignment asks for
    shadow = type(f"_{cls.__name__}Builder", (FrozenSlots,), {
        "__slots__": cls.__slots__, "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__})
    scope: dict[str, Any] = {"_new": object.__new__, "_shadow": shadow, "_cls": cls}
    lines = [f"def build({', '.join(f'_v{i}' for i in range(len(names)))}):",
             "    obj = _new(_shadow)"]
    lines += [f"    obj.{name} = _v{i}" for i, name in enumerate(names)]
    lines += ["    obj.__class__ = _cls", "    return obj"]
    exec("\n".join(lines), scope)  # the names are the class's own fields
    build: Callable[..., F] = scope["build"]
    build.__qualname__ = build.__name__ = f"build_{cls.__name__}"
    return build


class Block(FrozenSlots):
    """A half-open byte range ``[start, end)`` of one file; the format decides which
    records it owns (see DESIGN.md, "Blocks and record ownership").

    A *combined* block packs several small files whole (Hadoop's CombineFileInputFormat):
    ``files`` lists them in order, ``path`` is the first, and ``[start, end)`` is
    ``[0, total size)`` of their concatenation. Single-file blocks have ``files == ()``.

    Examples
    --------
    >>> Block(id=0, path="data/a.log", start=0, end=100)
    Block(id=0, path='data/a.log', start=0, end=100)
    >>> from blockproc.model import InputFile
    >>> Block(1, "s/a", 0, 7, files=(InputFile("s/a", 3), InputFile("s/b", 4)))
    Block(id=1, path='s/a', start=0, end=7, files=<2 files: 's/a' ... 's/b'>)
    """

    id: int
    path: str
    start: int
    end: int
    files: tuple[InputFile, ...]
    _fields = ("id", "path", "start", "end", "files")
    __slots__ = _fields

    def __init__(self, id: int, path: str, start: int, end: int,
                 files: tuple[InputFile, ...] = ()) -> None:
        _set(self, "id", id)
        _set(self, "path", path)
        _set(self, "start", start)
        _set(self, "end", end)
        _set(self, "files", files)

    def __repr__(self) -> str:
        base = f"Block(id={self.id!r}, path={self.path!r}, start={self.start!r}, end={self.end!r}"
        if not self.files:
            return base + ")"
        return (f"{base}, files=<{len(self.files)} files: {self.files[0].path!r} ... "
                f"{self.files[-1].path!r}>)")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (``files`` only for a combined block)."""
        data: dict[str, Any] = {"id": self.id, "path": self.path, "start": self.start,
                                "end": self.end}
        if self.files:
            data["files"] = [f.to_dict() for f in self.files]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Block:
        """Build a Block from :meth:`to_dict` output."""
        return cls(int(data["id"]), str(data["path"]), int(data["start"]), int(data["end"]),
                   tuple(InputFile.from_dict(f) for f in data.get("files", ())))


class InputFile(FrozenSlots):
    """One input file as the planner saw it: size and a change token (mtime or ETag)."""

    path: str
    size: int
    token: str
    compression: str | None
    _fields = ("path", "size", "token", "compression")
    __slots__ = _fields

    def __init__(self, path: str, size: int, token: str = "",
                 compression: str | None = None) -> None:
        _set(self, "path", path)
        _set(self, "size", size)
        _set(self, "token", token)
        _set(self, "compression", compression)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {"path": self.path, "size": self.size, "token": self.token,
                "compression": self.compression}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputFile:
        """Build an InputFile from :meth:`to_dict` output."""
        return cls(str(data["path"]), int(data["size"]), str(data.get("token", "")),
                   data.get("compression"))


class Plan(FrozenSlots):
    """The deterministic list of blocks for some inputs, format and block size.

    Made by :func:`blockproc.plan`; inspect it freely, nothing has run yet.

    Examples
    --------
    >>> import blockproc as bp
    >>> from blockproc.testing import write_files
    >>> write_files("memory://doc/plan", {"a.log": b"x\\n" * 50})
    ['memory://doc/plan/a.log']
    >>> p = bp.plan("memory://doc/plan", block_size=40)
    >>> p
    <Plan 1 file, 3 blocks, 100 B, format='lines'>
    >>> p.blocks[1]
    Block(id=1, path='/doc/plan/a.log', start=40, end=80)
    >>> p.num_bytes, len(p), len(p.fingerprint)
    (100, 3, 32)
    >>> p.fingerprint == bp.plan("memory://doc/plan", block_size=40).fingerprint
    True
    """

    protocol: str
    files: tuple[InputFile, ...]
    blocks: tuple[Block, ...]
    block_size: int
    format: Mapping[str, Any]
    storage_options: Mapping[str, Any]
    directories: tuple[str, ...]
    """The directories given as inputs, read recursively: an output may not be inside one."""
    skipped: tuple[str, ...]
    """blockproc outputs found inside those directories, and not read."""
    _cache: dict[str, Any]
    """What is worked out once from the (frozen) fields: the fingerprint, files by path."""
    _fields = ("protocol", "files", "blocks", "block_size", "format", "storage_options",
               "directories", "skipped")
    _compared = _fields[:6]
    __slots__ = (*_fields, "_cache")

    def __init__(self, protocol: str, files: tuple[InputFile, ...],
                 blocks: tuple[Block, ...], block_size: int, format: Mapping[str, Any],
                 storage_options: Mapping[str, Any] | None = None,
                 directories: tuple[str, ...] = (), skipped: tuple[str, ...] = ()) -> None:
        _set(self, "protocol", protocol)
        _set(self, "files", files)
        _set(self, "blocks", blocks)
        _set(self, "block_size", block_size)
        _set(self, "format", format)
        _set(self, "storage_options", {} if storage_options is None else storage_options)
        _set(self, "directories", directories)
        _set(self, "skipped", skipped)
        _set(self, "_cache", {})

    @property
    def num_bytes(self) -> int:
        """Total size of the input files."""
        return sum(f.size for f in self.files)

    @property
    def fingerprint(self) -> str:
        """A digest of the inputs (paths, sizes, change tokens) and the options.

        Two plans with the same fingerprint cut the same blocks from the same data,
        which is what ``if_exists="resume"`` checks.
        """
        if "fingerprint" not in self._cache:
            self._cache["fingerprint"] = self._digest()
        return str(self._cache["fingerprint"])

    def _digest(self) -> str:
        payload = {
            "protocol": self.protocol,
            "files": [f.to_dict() for f in self.files],
            "block_size": self.block_size,
            "format": dict(self.format),
        }
        if any(b.files for b in self.blocks):  # small files packed: another cut of blocks
            payload["packed"] = True
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return str(_sha256(text.encode()).hexdigest()[:32])

    def file(self, path: str) -> InputFile:
        """Return the :class:`InputFile` for ``path`` (a path as the plan lists it).

        Raises ``KeyError`` if the plan has no such file.

        Examples
        --------
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/plan-file", {"a.log": b"x\\n" * 5})
        ['memory://doc/plan-file/a.log']
        >>> p = bp.plan("memory://doc/plan-file")
        >>> p.file(p.blocks[0].path).size
        10
        """
        index = self._cache.get("files")
        if index is None:  # one dict, not a scan of the files per block
            index = self._cache["files"] = {f.path: f for f in self.files}
        return index[path]  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self.blocks)

    def __repr__(self) -> str:
        files = len(self.files)
        return (
            f"<Plan {files} file{'s' if files != 1 else ''}, {len(self.blocks)} "
            f"block{'s' if len(self.blocks) != 1 else ''}, "
            f"{format_size(self.num_bytes)}, format={self.format.get('name')!r}>"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (storage options are left out: they may hold secrets).

        Examples
        --------
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/plan-dict", {"a.log": b"x\\n" * 5})
        ['memory://doc/plan-dict/a.log']
        >>> d = bp.plan("memory://doc/plan-dict", block_size=4).to_dict()
        >>> sorted(d)
        ['block_size', 'blocks', 'directories', 'files', 'fingerprint', 'format', 'protocol']
        >>> d["blocks"][1]
        {'id': 1, 'path': '/doc/plan-dict/a.log', 'start': 4, 'end': 8}
        """
        data: dict[str, Any] = {
            "protocol": self.protocol,
            "block_size": self.block_size,
            "format": dict(self.format),
            "fingerprint": self.fingerprint,
            "files": [f.to_dict() for f in self.files],
            "blocks": [b.to_dict() for b in self.blocks],
        }
        if self.directories:  # only when there are some, as the manifest's optional fields
            data["directories"] = list(self.directories)
        if self.skipped:
            data["skipped"] = list(self.skipped)
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None
    ) -> Plan:
        """Build a Plan from :meth:`to_dict` output (and the storage options it leaves out).

        Examples
        --------
        >>> import json
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/plan-from", {"a.log": b"x\\n" * 5})
        ['memory://doc/plan-from/a.log']
        >>> p = bp.plan("memory://doc/plan-from", block_size=4)
        >>> bp.Plan.from_dict(json.loads(json.dumps(p.to_dict()))) == p
        True
        """
        return cls(
            protocol=str(data["protocol"]),
            files=tuple(InputFile.from_dict(f) for f in data["files"]),
            blocks=tuple(Block.from_dict(b) for b in data["blocks"]),
            block_size=int(data["block_size"]),
            format=dict(data["format"]),
            storage_options=dict(storage_options or {}),
            directories=tuple(data.get("directories", ())),
            skipped=tuple(data.get("skipped", ())),
        )


class FileTail(FrozenSlots):
    """The end of an input file as a block read it: the file's ``size`` and the CRC-32 of
    its last ``length`` bytes (up to 4 KiB), so a later ``if_exists="append"`` run can
    tell a file that only grew from one rewritten, truncated or rotated.

    Examples
    --------
    >>> FileTail("a.log", 10, 4, "crc32:0000abcd").to_dict()
    {'path': 'a.log', 'size': 10, 'length': 4, 'crc32': 'crc32:0000abcd'}
    """

    path: str
    size: int
    length: int
    crc32: str
    _fields = ("path", "size", "length", "crc32")
    __slots__ = _fields

    def __init__(self, path: str, size: int, length: int, crc32: str) -> None:
        _set(self, "path", path)
        _set(self, "size", size)
        _set(self, "length", length)
        _set(self, "crc32", crc32)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {"path": self.path, "size": self.size, "length": self.length,
                "crc32": self.crc32}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileTail:
        """Build a FileTail from :meth:`to_dict` output."""
        return cls(str(data["path"]), int(data["size"]), int(data["length"]),
                   str(data["crc32"]))


class BlockResult(FrozenSlots):
    """What one successful attempt of one block produced."""

    block: Block
    part: str
    attempt: int
    worker: str
    records_in: int
    records_out: int
    bytes_read: int
    bytes_written: int
    checksum: str
    started: float
    seconds: float
    bad_records: int
    stderr_bytes: int
    """Bytes a ``--cmd`` wrote to stderr (kept in ``_logs/part-NNNNN.stderr``)."""
    attempts: int
    """Attempts the block took in every run of the job, the committed one included (0:
    not recorded, as in older manifests)."""
    counters: Mapping[str, int]
    """What the function counted with ``bp.counter(name).add()`` in this attempt."""
    value: bytes | None
    """The block's value for the master, pickled (``pickle`` output only); it travels
    to the master and is never written to the manifest."""
    tails: tuple[FileTail, ...]
    """For each input file whose end this block read: its size and a checksum of its
    last bytes, which ``if_exists="append"`` checks the file against later (none for
    compressed files; one per file for a block of packed small files)."""
    _fields = ("block", "part", "attempt", "worker", "records_in", "records_out",
               "bytes_read", "bytes_written", "checksum", "started", "seconds",
               "bad_records", "stderr_bytes", "attempts", "counters", "value", "tails")
    _compared = tuple(name for name in _fields if name != "value")
    _shown = _compared
    __slots__ = _fields

    def __init__(self, block: Block, part: str, attempt: int, worker: str,
                 records_in: int, records_out: int, bytes_read: int, bytes_written: int,
                 checksum: str, started: float, seconds: float, bad_records: int = 0,
                 stderr_bytes: int = 0, attempts: int = 0,
                 counters: Mapping[str, int] | None = None, value: bytes | None = None,
                 tails: tuple[FileTail, ...] = ()) -> None:
        self._init(block, part, attempt, worker, records_in, records_out, bytes_read,
                   bytes_written, checksum, started, seconds, bad_records, stderr_bytes,
                   attempts, {} if counters is None else counters, value, tails)

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest entry for this block (``stderr_bytes``, ``attempts`` and
        ``counters`` only when not 0 or empty)."""
        entry = self.block.to_dict()
        entry.update(
            part=self.part, attempt=self.attempt, worker=self.worker,
            records_in=self.records_in, records_out=self.records_out,
            bytes_read=self.bytes_read, bytes_written=self.bytes_written,
            checksum=self.checksum, started=round(self.started, 6),
            seconds=round(self.seconds, 6), bad_records=self.bad_records,
        )
        if self.stderr_bytes:
            entry["stderr_bytes"] = self.stderr_bytes
        if self.attempts:
            entry["attempts"] = self.attempts
        if self.counters:
            entry["counters"] = dict(self.counters)
        if self.tails:
            entry["tails"] = [t.to_dict() for t in self.tails]
        return entry

    def committed(self, attempts: int, *, keep_value: bool = True) -> BlockResult:
        """This result as the master commits it: ``attempts`` set, and ``value`` dropped
        unless ``keep_value`` (the master keeps it once, elsewhere).

        ``dataclasses.replace`` does the same, many times slower: the master makes one
        per committed block.

        Examples
        --------
        >>> r = BlockResult(Block(0, "a", 0, 1), "part-00000.txt", 1, "w", 1, 1, 1, 1,
        ...                 "crc32:00000000", 0.0, 0.1, value=b"v")
        >>> r.committed(3).attempts, r.committed(3, keep_value=False).value
        (3, None)
        """
        return _build_result(
            self.block, self.part, self.attempt, self.worker, self.records_in,
            self.records_out, self.bytes_read, self.bytes_written, self.checksum,
            self.started, self.seconds, self.bad_records, self.stderr_bytes, attempts,
            self.counters, self.value if keep_value else None, self.tails)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlockResult:
        """Build a BlockResult from a manifest entry."""
        return cls(
            block=Block.from_dict(data), part=str(data["part"]), attempt=int(data["attempt"]),
            worker=str(data["worker"]), records_in=int(data["records_in"]),
            records_out=int(data["records_out"]), bytes_read=int(data["bytes_read"]),
            bytes_written=int(data["bytes_written"]), checksum=str(data["checksum"]),
            started=float(data.get("started", 0.0)), seconds=float(data["seconds"]),
            bad_records=int(data.get("bad_records", 0)),
            stderr_bytes=int(data.get("stderr_bytes", 0)),
            attempts=int(data.get("attempts", 0)),
            counters={str(k): int(v) for k, v in data.get("counters", {}).items()},
            tails=tuple(FileTail.from_dict(t) for t in data.get("tails", ())),
        )


_build_result = frozen_builder(BlockResult, (
    "block", "part", "attempt", "worker", "records_in", "records_out", "bytes_read",
    "bytes_written", "checksum", "started", "seconds", "bad_records", "stderr_bytes",
    "attempts", "counters", "value", "tails"))
"""Every field of a BlockResult, in order (``committed`` gives each; a new field must be
added here, or it gets its default: tests/unit/test_master_fast_paths.py checks)."""


class AttemptRecord(FrozenSlots):
    """One attempt as the master saw it, for the timeline: who ran what, when, how it ended."""

    block_id: int
    attempt: int
    worker: str
    started: float
    finished: float
    status: str  # "committed" | "failed" | "lost" | "discarded"
    error: str
    speculative: bool
    _fields = ("block_id", "attempt", "worker", "started", "finished", "status", "error",
               "speculative")
    __slots__ = _fields

    def __init__(self, block_id: int, attempt: int, worker: str, started: float,
                 finished: float, status: str, error: str = "",
                 speculative: bool = False) -> None:
        _set(self, "block_id", block_id)
        _set(self, "attempt", attempt)
        _set(self, "worker", worker)
        _set(self, "started", started)
        _set(self, "finished", finished)
        _set(self, "status", status)
        _set(self, "error", error)
        _set(self, "speculative", speculative)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {"block_id": self.block_id, "attempt": self.attempt, "worker": self.worker,
                "started": self.started, "finished": self.finished, "status": self.status,
                "error": self.error, "speculative": self.speculative}


def blocks_summary(blocks: Sequence[BlockResult]) -> dict[str, Any]:
    """Return the totals a manifest carries for ``blocks`` (``counters`` when a function
    counted anything)."""
    counters = sum_counters(b.counters for b in blocks)
    return {
        **({"counters": counters} if counters else {}),
        "num_blocks": len(blocks),
        "records_in": sum(b.records_in for b in blocks),
        "records_out": sum(b.records_out for b in blocks),
        "bytes_read": sum(b.bytes_read for b in blocks),
        "bytes_written": sum(b.bytes_written for b in blocks),
        "bad_records": sum(b.bad_records for b in blocks),
        "blocks_with_stderr": sum(1 for b in blocks if b.stderr_bytes),
    }


def sum_counters(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Return the counters in ``counts`` (one mapping per block) summed, sorted by name.

    >>> sum_counters([{"x": 2}, {"x": 2, "a": 1}])
    {'a': 1, 'x': 4}
    """
    total: dict[str, int] = {}
    for entry in counts:
        for name, amount in entry.items():
            total[name] = total.get(name, 0) + int(amount)
    return dict(sorted(total.items()))
