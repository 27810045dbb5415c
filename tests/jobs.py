"""Module-level, picklable mapper functions for tests (worker processes import them)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from blockproc import Batch


def identity(record: Any) -> Any:
    """Return the record unchanged."""
    return record


def upper(line: str) -> str:
    """Upper-case a line."""
    return line.upper()


def drop_empty(line: str) -> str | None:
    """Drop empty lines."""
    return line or None


def fail_on(bad: str) -> Any:
    """Return a mapper that raises ValueError on the record ``bad``."""

    def mapper(line: str) -> str:
        if line == bad:
            raise ValueError(f"bad record {line!r}")
        return line

    return mapper


def count_block(batch: Batch) -> list[str]:
    """One line per block: its id and record count."""
    return [f"{batch.block.id},{len(batch.records)}"]


def kill_once(marker: str, trigger: str) -> Any:
    """Return a mapper that kill -9s its own worker process the first time it sees
    ``trigger`` (the marker file makes it happen only once across processes)."""

    def mapper(line: str) -> str:
        if line == trigger and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return line

    return mapper


def exit_once(marker: str, trigger: str) -> Any:
    """Like :func:`kill_once` but with ``os._exit(3)``."""

    def mapper(line: str) -> str:
        if line == trigger and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(3)
        return line

    return mapper


def slow(seconds: float) -> Any:
    """Return a mapper that sleeps ``seconds`` per record."""

    def mapper(line: str) -> str:
        time.sleep(seconds)
        return line

    return mapper


def fail_while(flag: str, bad: str) -> Any:
    """Return a mapper that raises ValueError on the record ``bad`` while the file
    ``flag`` exists (so a resumed job, with the flag gone, succeeds)."""

    def mapper(line: str) -> str:
        if line == bad and Path(flag).exists():
            raise ValueError(f"bad record {line!r} while {flag} exists")
        return line

    return mapper


def word_counts(batch: Batch) -> dict[str, int]:
    """The block's partial for reduce tests: lines per first word; counts its lines and
    blocks with bp.counter."""
    import blockproc as bp

    counts: dict[str, int] = {}
    for line in batch.records:
        word = line.split(" ", 1)[0]
        counts[word] = counts.get(word, 0) + 1
    bp.counter("lines").add(len(batch.records))
    bp.counter("blocks").add()
    return counts


def merge_counts(total: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    """Add ``counts`` into ``total`` (associative and commutative)."""
    for word, n in counts.items():
        total[word] = total.get(word, 0) + n
    return total


def block_id_list(batch: Batch) -> list[int]:
    """The block's id, as a one-item list (to fold with an order-sensitive ``+``)."""
    return [batch.block.id]


def concatenate(a: list[int], b: list[int]) -> list[int]:
    """List concatenation: associative, but not commutative."""
    return a + b
