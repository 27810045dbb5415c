"""The master's planning: list the inputs and cut them into nominal byte ranges.

The plan holds nominal ranges; each worker aligns its range to record boundaries with
:func:`blockproc.formats.find_boundary` (as Hadoop's LineRecordReader does), so
planning reads nothing but file sizes and scales to very many blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blockproc._units import format_size
from blockproc.errors import ConfigError
from blockproc.formats import RecordFormat
from blockproc.formats.base import has_border
from blockproc.formats.hooks import PlanHook
from blockproc.model import Block, InputFile, Plan
from blockproc.storage import (
    AbstractFileSystem,
    RangeSource,
    open_decompressed,
    protocol_of,
    scan_inputs,
)

MAX_BLOCKS = 1_000_000
"""A plan of more blocks is refused: the master keeps every block in memory and the output
would hold as many part-files."""

SMALL_BLOCK_SIZE = 64 * 2**10
"""Blocks under this size (64 KiB) cost more in scheduling, a part-file and a commit than
their bytes take to process ..."""

MAX_SMALL_BLOCKS = 100_000
"""... so a plan of blocks under ``SMALL_BLOCK_SIZE`` may have at most this many (enough
for 10,000 blocks of 4 KiB, the scheduling benchmark, not for ``--block-size 100`` on
16 MiB)."""


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
    listing = scan_inputs(urlpaths, storage_options)
    fs, files = listing.fs, listing.files
    packable = is_packable(format)
    num_bytes = sum(f.size for f in files)
    # before cutting: a plan of millions of blocks would take the memory it warns about
    cut = sum(-(-f.size // block_size) for f in files
              if not f.compression and (f.size >= block_size or not packable))
    check_block_count(cut, block_size, num_bytes)
    blocks = pack_blocks(files, block_size) if packable else cut_blocks(files, block_size)
    check_block_count(len(blocks), block_size, num_bytes)
    if isinstance(format, PlanHook):  # csv: true row starts; fixed: whole records; ...
        format, blocks = format.plan_blocks(files, blocks, _FileAccess(fs))
    return Plan(
        protocol=protocol_of(fs),
        files=tuple(files),
        blocks=tuple(blocks),
        block_size=block_size,
        format=format.to_dict(),
        storage_options=dict(storage_options or {}),
        directories=listing.directories,
        skipped=listing.skipped,
    )


def check_block_count(num_blocks: int, block_size: int, num_bytes: int) -> None:
    """Refuse a plan of absurdly many blocks, before any work, naming a block size that
    fits: more than :data:`MAX_BLOCKS` blocks, or more than :data:`MAX_SMALL_BLOCKS`
    blocks under :data:`SMALL_BLOCK_SIZE` (``--block-size 100`` on a 16 MiB file).

    Examples
    --------
    >>> check_block_count(9, 2**20, 9 * 2**20)          # 9 blocks of 1 MiB: fine
    >>> check_block_count(50, 100, 5000)                # tiny blocks, but few: fine
    >>> check_block_count(167773, 100, 16 * 2**20)
    Traceback (most recent call last):
    ...
    blockproc.ConfigError: block_size=100 B cuts 16.0 MiB of input into 167,773 blocks; ...
    """
    if num_blocks > MAX_BLOCKS:
        limit = f"more than the limit of {MAX_BLOCKS:,}"
    elif block_size < SMALL_BLOCK_SIZE and num_blocks > MAX_SMALL_BLOCKS:
        limit = (f"blocks under {format_size(SMALL_BLOCK_SIZE)} cost more to schedule and "
                 f"commit than to process, so a plan of them may have at most "
                 f"{MAX_SMALL_BLOCKS:,}")
    else:
        return
    fits = max(SMALL_BLOCK_SIZE, -(-num_bytes // MAX_SMALL_BLOCKS))
    suggested = 1 << (fits - 1).bit_length()  # a power of two: 64KiB, 1MiB, 64MiB...
    raise ConfigError(
        f"block_size={format_size(block_size)} cuts {format_size(num_bytes)} of input into "
        f"{num_blocks:,} blocks; {limit}. Pass a larger block size: "
        f"block_size='{_size_text(suggested)}' (CLI: --block-size {_size_text(suggested)}) "
        f"or more; the default is 64MiB"
    )


def _size_text(size: int) -> str:
    """Return ``size`` as a power-of-two size a user would type: ``64KiB``, ``2MiB``.

    Examples
    --------
    >>> _size_text(65536), _size_text(2**21), _size_text(3 * 2**40)
    ('64KiB', '2MiB', '3TiB')
    """
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = 2 ** (10 * ("KMGT".index(unit[0]) + 1))
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)
