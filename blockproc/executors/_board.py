"""Which worker runs which block, how fast, and who lags: the status of remote executors.

The ``cluster`` and ``dask`` executors feed it from their heartbeats; ``describe()`` on
either executor prints it. The master's progress bar already shows the totals.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from blockproc._units import format_size

AttemptKey = tuple[int, int]

LAG_FACTOR = 0.5
"""An attempt running slower than this fraction of the median rate is lagging."""
MIN_SECONDS = 2.0
"""Rates of attempts younger than this are too noisy to call anyone slow."""


@dataclass
class Running:
    """One attempt in flight on a worker."""

    worker: str
    size: int
    started: float
    bytes_done: int = 0
    records_done: int = 0

    def rate(self, now: float) -> float:
        """Bytes per second since the attempt started."""
        return self.bytes_done / max(now - self.started, 1e-3)


class Board:
    """Running attempts per worker, blocks done per worker, and their rates.

    Examples
    --------
    >>> board = Board(clock=lambda: 10.0)
    >>> board.start((3, 1), "host:42", size=1000)
    >>> board.progress((3, 1), 500, 7)
    >>> board.finish((3, 1))
    >>> board.describe({"host:42": 2})
    ['host:42 (2 slots): idle; 1 block done, 500 B']
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.running: dict[AttemptKey, Running] = {}
        self.done: Counter[str] = Counter()
        self.bytes_done: Counter[str] = Counter()

    def start(self, key: AttemptKey, worker: str, size: int) -> None:
        """Note that ``worker`` started ``key`` (a block of ``size`` nominal bytes)."""
        self.running[key] = Running(worker, size, self._clock())

    def progress(self, key: AttemptKey, bytes_done: int, records_done: int) -> None:
        """Record a heartbeat of ``key``."""
        entry = self.running.get(key)
        if entry is not None:
            entry.bytes_done, entry.records_done = bytes_done, records_done

    def finish(self, key: AttemptKey, *, ok: bool = True) -> None:
        """Forget ``key``; count it for its worker when it succeeded."""
        entry = self.running.pop(key, None)
        if entry is not None and ok:
            self.done[entry.worker] += 1
            self.bytes_done[entry.worker] += entry.bytes_done

    def lagging(self) -> set[AttemptKey]:
        """Attempts running at less than ``LAG_FACTOR`` of the median rate."""
        now = self._clock()
        aged = {k: e.rate(now) for k, e in self.running.items()
                if now - e.started >= MIN_SECONDS}
        if len(aged) < 2:
            return set()
        median = statistics.median(aged.values())
        return {k for k, rate in aged.items() if rate < LAG_FACTOR * median}

    def describe(self, slots: dict[str, int]) -> list[str]:
        """One line per worker: its attempts with percent done and rate, and its totals.

        ``slots`` maps each known worker to its number of slots.
        """
        now = self._clock()
        slow = self.lagging()
        lines = []
        for worker in sorted(set(slots) | {e.worker for e in self.running.values()}):
            mine = sorted((k, e) for k, e in self.running.items() if e.worker == worker)
            parts = []
            for key, entry in mine:
                percent = 100 * entry.bytes_done // max(entry.size, 1)
                text = (f"block {key[0]} (attempt {key[1]}) {min(percent, 100)}% at "
                        f"{format_size(int(entry.rate(now)))}/s")
                parts.append(text + (" LAGGING" if key in slow else ""))
            count = self.done[worker]
            n = slots.get(worker, 0)
            lines.append(
                f"{worker} ({n} slot{'s' if n != 1 else ''}): {'; '.join(parts) or 'idle'}; "
                f"{count} block{'s' if count != 1 else ''} done, "
                f"{format_size(self.bytes_done[worker])}"
            )
        return lines
