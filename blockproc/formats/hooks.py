"""Optional seams a format may add to :class:`~blockproc.formats.RecordFormat`.

- :class:`PlanHook`: the planner calls ``plan_blocks`` once, with access to the inputs,
  to check them (a trailing partial fixed-width record), resolve options that depend on
  the data (CSV column names, the byte order of ``utf-16``) or cut exact record-aligned
  blocks (CSV with quoted newlines). Its result is what the plan stores.
- :class:`BlockDecoder`: ``map_blocks`` functions get ``decode_block(data)`` (a
  ``pyarrow.Table`` or a numpy array) instead of a :class:`~blockproc.Batch`.
- :class:`BlockReader`: formats that need random access inside their range (Parquet
  reads its footer) produce the block's chunks themselves instead of the worker reading
  the aligned byte range.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from blockproc.formats.base import ReadFn, RecordFormat
from blockproc.model import Block, InputFile


class Source(Protocol):
    """Ranged reads from one file."""

    def read(self, start: int, end: int) -> bytes:
        """Return the bytes ``[start, end)`` (fewer only at end of file)."""
        ...


class FileAccess(Protocol):
    """What a planning hook may read: ranges of plain files, the head of any file."""

    def open(self, path: str) -> AbstractContextManager[Source]:
        """Open ``path`` for ranged reads (one per thread)."""
        ...

    def head(self, file: InputFile, size: int) -> bytes:
        """Return the first ``size`` bytes of ``file``, decompressed if it is compressed."""
        ...


@runtime_checkable
class PlanHook(Protocol):
    """A format that looks at its inputs while the plan is made."""

    def plan_blocks(self, files: Sequence[InputFile], blocks: Sequence[Block],
                    access: FileAccess) -> tuple[RecordFormat, list[Block]]:
        """Return the format and blocks the plan stores (blocks with dense ids)."""
        ...


@runtime_checkable
class BlockDecoder(Protocol):
    """A format whose ``map_blocks`` functions get a table or an array."""

    def decode_block(self, data: bytes, *, at_file_start: bool) -> Any:
        """Return the records of an aligned range as one value with ``len()``."""
        ...


@runtime_checkable
class BlockReader(Protocol):
    """A format that reads its own blocks from ranged reads."""

    def read_block(self, read: ReadFn, start: int, end: int, size: int) -> Iterator[bytes]:
        """Yield the chunks ``iter_batches`` and ``decode_block`` take for the block
        ``[start, end)`` of a file of ``size`` bytes."""
        ...


def reads_own_blocks(fmt: object) -> BlockReader | None:
    """Return ``fmt`` if it is a :class:`BlockReader`, else None: the answer of
    ``isinstance(fmt, BlockReader)`` for 1/300 of its cost (a runtime Protocol check takes
    ~12 us, and the worker asks per block).

    Examples
    --------
    >>> from blockproc.formats import Lines
    >>> reads_own_blocks(Lines()) is None
    True
    """
    return fmt if _has_method(fmt, "read_block") else None  # type: ignore[return-value]


def decodes_blocks(fmt: object) -> BlockDecoder | None:
    """Return ``fmt`` if it is a :class:`BlockDecoder`, else None (as
    :func:`reads_own_blocks`)."""
    return fmt if _has_method(fmt, "decode_block") else None  # type: ignore[return-value]


def _has_method(obj: object, name: str) -> bool:
    return callable(getattr(obj, name, None))


def renumber(blocks: Sequence[tuple[str, int, int]]) -> list[Block]:
    """Return Blocks with dense ids for ``(path, start, end)`` triples, in order.

    Examples
    --------
    >>> renumber([("a", 0, 4), ("b", 0, 2)])
    [Block(id=0, path='a', start=0, end=4), Block(id=1, path='b', start=0, end=2)]
    """
    return [Block(i, path, start, end) for i, (path, start, end) in enumerate(blocks)]
