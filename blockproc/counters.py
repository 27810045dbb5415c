"""Counters a mapper bumps, summed per block and per job exactly once (Hadoop's counters).

Inside a function that blockproc runs, ``bp.counter("bad_lines").add()`` counts into the
attempt that runs it. Only the attempt that commits its block hands its counts to the
master, so a retried or speculative attempt never counts twice. The job's totals are in
``JobResult.counters``, the summary line, the manifest and ``blockproc status``.

Outside a job, counts go to a running tally of this thread, which :attr:`Counter.value`
reads; a unit test of a function's counters counts into a fresh dict with
:func:`blockproc.testing.counting`.

Examples
--------
>>> with collecting() as counts:
...     for line in ["ok", "", "ok", ""]:
...         if not line:
...             counter("empty_lines").add()
>>> counts
{'empty_lines': 2}
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

_counts: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "blockproc_counters", default=None)
_outside: dict[str, int] = {}  # counts made outside any attempt, for unit tests


class Counter:
    """A named counter of the running attempt; get one with :func:`counter`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def add(self, amount: int = 1) -> None:
        """Add ``amount`` (an int, may be negative) to this counter.

        Examples
        --------
        >>> counter("doc_add").add(3)
        >>> counter("doc_add").value
        3
        >>> counter("doc_add").add(0.5)
        Traceback (most recent call last):
        ...
        TypeError: counter 'doc_add' adds whole numbers, got 0.5; count events, ...
        """
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"counter {self.name!r} adds whole numbers, got {amount!r}; "
                            f"count events, and return measured values from the function")
        counts = _current()
        counts[self.name] = counts.get(self.name, 0) + amount

    @property
    def value(self) -> int:
        """The count so far in this attempt (or this thread's tally outside a job)."""
        return _current().get(self.name, 0)

    def __repr__(self) -> str:
        return f"<Counter {self.name!r} = {self.value}>"


def counter(name: str) -> Counter:
    """Return the counter ``name`` of the running attempt, to ``.add()`` to.

    Examples
    --------
    >>> counter("")
    Traceback (most recent call last):
    ...
    ValueError: a counter name must be a non-empty str, got ''
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a counter name must be a non-empty str, got {name!r}")
    return Counter(name)


@contextmanager
def collecting() -> Iterator[dict[str, int]]:
    """Count into a fresh dict for the duration (one attempt); yield the dict."""
    counts: dict[str, int] = {}
    token = _counts.set(counts)
    try:
        yield counts
    finally:
        _counts.reset(token)


def _current() -> dict[str, int]:
    counts = _counts.get()
    return _outside if counts is None else counts

