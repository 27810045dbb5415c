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
from blockproc.model import Block, InputFile, Plan
from blockproc.storage import list_inputs, protocol_of


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
    return Plan(
        protocol=protocol_of(fs),
        files=tuple(files),
        blocks=tuple(cut_blocks(files, block_size)),
        block_size=block_size,
        format=format.to_dict(),
        storage_options=dict(storage_options or {}),
    )
