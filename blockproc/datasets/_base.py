"""What the generators share: weighted draws, digits, byte pools, row layouts, atomic writes.

Every text generator builds a chunk of rows as a fixed-width ``uint8`` matrix (constant
bytes written once, fields copied from pre-formatted pools or written as digits, unused
bytes left NUL) and keeps its non-NUL bytes, so no Python code runs per row.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from blockproc._units import parse_size

START = date(2026, 11, 27)
"""The day every dataset starts, at 00:00:00 UTC."""

RecordEnd = Callable[[NDArray[np.uint8], int], int]
"""``end(chunk, i)``: the index just past the record that holds byte ``i`` of ``chunk``."""

MONTHS = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
          b"Nov", b"Dec"]


def check_size(size: int | str) -> int:
    """Return ``size`` in bytes; accept an int >= 0 or a string such as ``"256MiB"``."""
    if isinstance(size, str):
        size = parse_size(size)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be an int >= 0 bytes or a string like '256MiB', "
                         f"got {size!r}")
    return size


def cdf(weights: Sequence[float] | NDArray[np.floating]) -> NDArray[np.float64]:
    """Return the cumulative distribution of ``weights``, for :func:`pick`."""
    total = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.asarray(total / total[-1], dtype=np.float64)


def pick(rng: np.random.Generator, dist: NDArray[np.float64], n: int) -> NDArray[np.intp]:
    """Draw ``n`` indices distributed as ``dist`` (stable across numpy versions)."""
    return np.searchsorted(dist, rng.random(n), side="right")


def digits(values: NDArray[np.int64], width: int, *, zeros: bool = False) -> NDArray[np.uint8]:
    """Return ASCII digits of ``values`` in ``width`` columns, leading zeros as NUL bytes."""
    places = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    out = (values[:, None] // places % 10 + ord("0")).astype(np.uint8)
    if not zeros:
        lead = values[:, None] < places
        lead[:, -1] = False  # 0 is written "0"
        out[lead] = 0
    return out


def pool(items: Sequence[bytes]) -> NDArray[np.bytes_]:
    """Return ``items`` as a NUL-padded fixed-width bytes array."""
    return np.array(items, dtype=f"S{max(1, *map(len, items))}")


def cells(items: NDArray[np.bytes_], index: NDArray[np.integer]) -> NDArray[np.uint8]:
    """Return ``items[index]`` as a ``(len(index), itemsize)`` byte matrix."""
    out: NDArray[np.uint8] = items[index].view(np.uint8).reshape(len(index), items.itemsize)
    return out


def layout(parts: Sequence[bytes | int], n: int) -> tuple[NDArray[np.uint8], list[slice]]:
    """Return ``n`` rows of constant ``bytes`` parts, and a column slice per ``int`` width."""
    row, slots = bytearray(), []
    for part in parts:  # constant bytes once; NUL placeholders for the fields
        if isinstance(part, int):
            slots.append(slice(len(row), len(row) + part))
        row += bytes(part)
    return np.tile(np.frombuffer(bytes(row), dtype=np.uint8), (n, 1)), slots


@cache
def clock() -> NDArray[np.uint8]:
    """Return ``HH:MM:SS`` of every second of a day, as an ``(86400, 8)`` byte matrix."""
    sec = np.arange(86400, dtype=np.int64)
    out = np.full((86400, 8), ord(":"), dtype=np.uint8)
    out[:, [0, 1, 3, 4, 6, 7]] = digits(sec // 3600 * 10000 + sec // 60 % 60 * 100 + sec % 60,
                                        6, zeros=True)
    out.setflags(write=False)
    return out


def days(day: NDArray[np.int64], fmt: Callable[[date], bytes]) -> NDArray[np.uint8]:
    """Return ``fmt(START + day)`` for each day number in the sorted array ``day``."""
    first, last = int(day[0]), int(day[-1])
    items = pool([fmt(START + timedelta(days=d)) for d in range(first, last + 1)])
    return cells(items, day - first)


def iso_day(d: date) -> bytes:
    """Return ``2026-11-27``."""
    return d.isoformat().encode()


def line_end(chunk: NDArray[np.uint8], i: int) -> int:
    """Records end at every ``\\n``."""
    return i + 1 + int(np.argmax(chunk[i:] == ord("\n")))


def quoted_line_end(chunk: NDArray[np.uint8], i: int) -> int:
    """Records end at a ``\\n`` outside double quotes (CSV); ``chunk`` starts a record."""
    newlines = i + np.flatnonzero(chunk[i:] == ord("\n"))
    quotes = np.cumsum(chunk == ord('"'), dtype=np.int64)
    return int(newlines[np.argmax(quotes[newlines] % 2 == 0)]) + 1


def fixed_end(record_size: int) -> RecordEnd:
    """Records are ``record_size`` bytes each."""
    def end(chunk: NDArray[np.uint8], i: int) -> int:
        return (i // record_size + 1) * record_size
    return end


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; rename it to ``path`` only if all went well."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], chunks: Iterator[NDArray[np.uint8]], size: int,
                 end: RecordEnd = line_end) -> int:
    """Write ``chunks`` of whole records to ``path``, up to the end of the record that holds
    byte ``size - 1``, and return the number of bytes written."""
    written = 0
    with atomic_file(path) as f:
        while written < size:
            chunk = next(chunks)
            if written + len(chunk) >= size:
                chunk = chunk[: end(chunk, size - written - 1)]
            f.write(chunk.data)
            written += len(chunk)
    return written
