"""The master's planning: list the inputs and cut them into nominal byte ranges.

The plan holds nominal ranges; each worker aligns its range to record boundaries with
:func:`blockproc.formats.find_boundary` (as Hadoop's LineRecordReader does), so
planning reads nothing but file sizes and scales to very many blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blockproc.errors import ConfigError
from blockproc.formats import RecordFormat
from blockproc.formats.base import has_border
from blockproc.formats.hooks import PlanHook
from blockproc.model import Block, InputFile, Plan
from blockproc.storage import (
    AbstractFileSystem,
    RangeSource,
    list_inputs,
    open_decompressed,
    protocol_of,
)


def nominal_ranges(size: int, block_size: int) -> list[tuple[int, int]]:
    """Cut ``[0, size)`` into consecutive ranges of ``block_size`` bytes (the last shorter).

    Examples
    --------
    >>> nominal_ranges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    >>> nominal_ranges(0, 4)
    []
    """
    if block_size < 1:
        raise ConfigError(f"block_size must be >= 1 byte, got {block_size!r}")
    return [(start, min(start + block_size, size)) for start in range(0, size, block_size)]


def cut_blocks(files: Sequence[InputFile], block_size: int) -> list[Block]:
    """Return the blocks of ``files`` in order: compressed files whole, others in ranges.

    Examples
    --------
    >>> files = [InputFile("a", 5), InputFile("b.gz", 9, compression="gzip")]
    >>> [(b.id, b.path, b.start, b.end) for b in cut_blocks(files, 4)]
    [(0, 'a', 0, 4), (1, 'a', 4, 5), (2, 'b.gz', 0, 9)]
    """
    blocks: list[Block] = []
    for f in files:
        ranges = [(0, f.size)] if f.compression and f.size else nominal_ranges(f.size, block_size)
        for start, end in ranges:
            blocks.append(Block(len(blocks), f.path, start, end))
    return blocks


PACKED_FORMATS = ("lines", "delimited")
"""Formats whose small files are packed into combined blocks unless they say otherwise."""


def is_packable(format: RecordFormat) -> bool:
    """Return True if whole small files of ``format`` may share one block.

    A format says so with a ``packable`` attribute; otherwise ``lines`` and ``delimited``
    are. Never when the delimiter can overlap itself (``b"aa"``): a file that does not end
    with it could then not be told apart from the next one.

    Examples
    --------
    >>> from blockproc.formats import Delimited, Lines, Raw
    >>> is_packable(Lines()), is_packable(Delimited(b"\\0")), is_packable(Delimited(b"aa"))
    (True, True, False)
    >>> is_packable(Raw())
    False
    """
    delimiter = getattr(format, "delimiter", None)
    if isinstance(delimiter, bytes) and has_border(delimiter):
        return False
    flag = getattr(format, "packable", None)
    return bool(flag) if flag is not None else format.name in PACKED_FORMATS


def pack_blocks(files: Sequence[InputFile], block_size: int) -> list[Block]:
    """Return the blocks of ``files`` as :func:`cut_blocks` does, except that runs of
    consecutive files smaller than ``block_size`` are packed whole into combined blocks
    of at most ``block_size`` bytes (Hadoop's CombineFileInputFormat), so ten thousand
    small inputs make a few blocks, not ten thousand. A run of one file stays a plain
    block; empty files make none.

    Examples
    --------
    >>> files = [InputFile("a", 3), InputFile("b", 4), InputFile("c", 9), InputFile("d", 2)]
    >>> [(b.id, b.path, b.start, b.end, len(b.files)) for b in pack_blocks(files, 8)]
    [(0, 'a', 0, 7, 2), (1, 'c', 0, 8, 0), (2, 'c', 8, 9, 0), (3, 'd', 0, 2, 0)]
    """
    blocks: list[Block] = []
    run: list[InputFile] = []
    run_size = 0

    def close_run() -> None:
        nonlocal run, run_size
        if len(run) == 1:
            blocks.append(Block(len(blocks), run[0].path, 0, run[0].size))
        elif run:
            blocks.append(Block(len(blocks), run[0].path, 0, run_size, files=tuple(run)))
        run, run_size = [], 0

    for f in files:
        if f.size == 0:
            continue
        if f.size >= block_size:
            close_run()
            for b in cut_blocks([f], block_size):
                blocks.append(Block(len(blocks), b.path, b.start, b.end))
            continue
        if run_size + f.size > block_size:
            close_run()
        run.append(f)
        run_size += f.size
    close_run()
    return blocks


class _FileAccess:
    """What a format's planning hook may read (``formats.hooks.FileAccess``)."""

    def __init__(self, fs: AbstractFileSystem) -> None:
        self._fs = fs

    def open(self, path: str) -> RangeSource:
        """Open ``path`` for ranged reads."""
        return RangeSource(self._fs, path)

    def head(self, file: InputFile, size: int) -> bytes:
        """Return the first ``size`` bytes of ``file``, decompressed."""
        if file.compression:
            with open_decompressed(self._fs, file.path, file.compression) as f:
                parts: list[bytes] = []
                got = 0
                while got < size and (piece := f.read(size - got)):
                    parts.append(piece)
                    got += len(piece)
                return b"".join(parts)
        with RangeSource(self._fs, file.path) as source:
            return source.read(0, min(size, file.size))


def make_plan(
    urlpaths: Sequence[str],
    *,
    block_size: int,
    format: RecordFormat,
    storage_options: Mapping[str, Any] | None = None,
) -> Plan:
    """List ``urlpaths`` and return their :class:`~blockproc.model.Plan`."""
    if block_size < 1:
        raise ConfigError(
            f"block_size must be >= 1 byte, got {block_size!r}; pass an int or a string "
            f"like '64MiB'"
        )
    fs, files = list_inputs(urlpaths, storage_options)
    blocks = (pack_blocks(files, block_size) if is_packable(format)
              else cut_blocks(files, block_size))
    if isinstance(format, PlanHook):  # csv: true row starts; fixed: whole records; ...
        format, blocks = format.plan_blocks(files, blocks, _FileAccess(fs))
    return Plan(
        protocol=protocol_of(fs),
        files=tuple(files),
        blocks=tuple(blocks),
        block_size=block_size,
        format=format.to_dict(),
        storage_options=dict(storage_options or {}),
    )
