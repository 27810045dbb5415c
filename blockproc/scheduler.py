"""The master's state machine: which block runs next, attempts, leases, retries,
speculation, exactly-once.

It knows nothing about processes or sockets, only block ids, attempts and a clock, so
it is tested with a fake clock. Workers pull: whenever a slot is free the master asks
:meth:`Scheduler.assign` for the next attempt, and, once nothing is pending, may ask
:meth:`Scheduler.speculate` for a second attempt of a straggler.

The scheduler owns one :class:`Attempt` per attempt: its block and number, the worker
that runs it, when it started, whether it is speculative, how far it got and how it
ended. The master loop and the executors read attempt state from here and keep none of
their own.

Examples
--------
>>> s = Scheduler(2, max_attempts=2, clock=lambda: 0.0, wall_clock=lambda: 0.0)
>>> a = s.assign(); b = s.assign(); a, b
((0, 1), (1, 1))
>>> s.fail(a, "boom"); s.assign()
(0, 2)
>>> s.complete(b)
(True, [])
>>> [(x.key, x.status) for x in s.history]
[((0, 1), 'failed'), ((1, 1), 'committed')]
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from blockproc.model import AttemptRecord, frozen_builder

AttemptKey = tuple[int, int]
"""``(block id, attempt number)``; attempt numbers start at 1 for each block."""

Status = Literal["running", "committed", "discarded", "failed", "lost"]
"""How an attempt stands: running, or how it ended."""

SPECULATION_SLOWDOWN = 2.0
"""A running attempt is a straggler once it has run this many times as long as a typical
block (its size at the median finished rate)."""

SPECULATION_MIN_SECONDS = 1.0
"""Never speculate on an attempt younger than this."""


class Attempt:
    """One attempt of one block, from its start to its end.

    ``started`` and ``deadline`` are on the scheduler's clock (the lease);
    ``started_at``/``ended_at`` are wall-clock times, for the manifest.

    Examples
    --------
    >>> a = Attempt(block=3, number=1, started=10.0, deadline=70.0, started_at=1.7e9)
    >>> a.key, a.status, a.rate(12.0)
    ((3, 1), 'running', 0.0)
    """

    __slots__ = ("block", "number",  # noqa: RUF023 (in __init__'s order, for repr)
                 "started", "deadline", "started_at", "speculative", "worker", "status",
                 "error", "bytes_done", "records_done", "ended_at")

    def __init__(self, block: int, number: int, started: float, deadline: float,
                 started_at: float, speculative: bool = False, worker: str = "",
                 status: Status = "running", error: str = "", bytes_done: int = 0,
                 records_done: int = 0, ended_at: float = 0.0) -> None:
        self.block = block
        self.number = number
        self.started = started
        self.deadline = deadline
        self.started_at = started_at
        self.speculative = speculative
        self.worker = worker
        self.status: Status = status
        self.error = error
        self.bytes_done = bytes_done
        self.records_done = records_done
        self.ended_at = ended_at

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Attempt({fields})"

    @property
    def key(self) -> AttemptKey:
        """``(block id, attempt number)``."""
        return (self.block, self.number)

    def rate(self, now: float) -> float:
        """Bytes per second since the attempt started (0 before any time passed)."""
        elapsed = now - self.started
        return self.bytes_done / elapsed if elapsed > 0 else 0.0

    def to_record(self) -> AttemptRecord:
        """The ended attempt as the manifest keeps it."""
        return _build_record(self.block, self.number, self.worker, self.started_at,
                             self.ended_at, self.status, self.error, self.speculative)

    def to_dict(self) -> dict[str, Any]:
        """``to_record().to_dict()``, without the record in between (a row of the
        attempts file, written for every attempt of a job)."""
        return {"block_id": self.block, "attempt": self.number, "worker": self.worker,
                "started": self.started_at, "finished": self.ended_at,
                "status": self.status, "error": self.error,
                "speculative": self.speculative}


_build_record = frozen_builder(AttemptRecord, (
    "block_id", "attempt", "worker", "started", "finished", "status", "error",
    "speculative"))  # AttemptRecord(...), made for every attempt of a job at its end


class RunningMedian:
    """The median of numbers added one at a time, the same value as
    :func:`statistics.median` of them all: O(1) to add, and O(log n) per number added
    since the last read (two heaps); numbers added while nobody reads are sorted in one
    go at the next read (the scheduler adds a rate per committed block, and reads the
    median only once nothing is pending).

    Examples
    --------
    >>> m = RunningMedian()
    >>> m.value, len(m)
    (0.0, 0)
    >>> for x in (5.0, 1.0, 3.0, 8.0):
    ...     m.add(x)
    >>> m.value, len(m)
    (4.0, 4)
    """

    __slots__ = ("_high", "_low", "_unread")

    def __init__(self) -> None:
        self._low: list[float] = []  # the smaller half, negated (a max-heap)
        self._high: list[float] = []  # the larger half
        self._unread: list[float] = []  # added since the last read

    def __len__(self) -> int:
        return len(self._low) + len(self._high) + len(self._unread)

    def add(self, x: float) -> None:
        """Add one number."""
        self._unread.append(x)

    def _settle(self) -> None:
        """Put the numbers added since the last read into the heaps."""
        unread, low, high = self._unread, self._low, self._high
        if len(unread) > 8 and len(unread) * 4 > len(low) + len(high):
            # many at once: one sort (a sorted list is a heap; the low half reversed too)
            numbers = sorted([-x for x in low] + high + unread)
            half = (len(numbers) + 1) // 2
            self._low = [-x for x in reversed(numbers[:half])]
            self._high = numbers[half:]
            unread.clear()
            return
        for x in unread:
            if low and x > -low[0]:
                heapq.heappush(high, x)
            else:
                heapq.heappush(low, -x)
            if len(low) > len(high) + 1:
                heapq.heappush(high, -heapq.heappop(low))
            elif len(high) > len(low):
                heapq.heappush(low, -heapq.heappop(high))
        unread.clear()

    @property
    def value(self) -> float:
        """The median so far (0.0 before any number)."""
        if self._unread:
            self._settle()
        low = self._low
        if not low:
            return 0.0
        if len(low) > len(self._high):
            return -low[0]
        return (-low[0] + self._high[0]) / 2


class Scheduler:
    """Hand out blocks, track attempts and their leases, retry failures, commit each
    block once.

    Every operation costs O(1) or O(log n) in the number of blocks and of attempts, except
    :meth:`stragglers` (a pass over the running attempts, once per clock tick) and
    :meth:`stop` (once per job): per-block counts replace scans of ``running``, a heap of
    deadlines the scan for expired leases, a running median the sort of all block rates.
    """

    def __init__(self, num_blocks: int, max_attempts: int = 4, lease_timeout: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, done: Iterable[int] = (),
                 block_sizes: Sequence[int] = (),
                 wall_clock: Callable[[], float] = time.time) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.num_blocks = num_blocks
        self.max_attempts = max_attempts
        self.lease_timeout = lease_timeout
        self.clock = clock
        self.block_sizes = block_sizes
        self.wall_clock = wall_clock
        self.committed = {b for b in done if 0 <= b < num_blocks}
        self.pending = deque(b for b in range(num_blocks) if b not in self.committed)
        self.running: dict[AttemptKey, Attempt] = {}
        self.history: list[Attempt] = []
        """Every ended attempt, in the order they ended."""
        self.attempts_made: dict[int, int] = {}
        self.failures: dict[int, int] = {}
        self.errors: dict[int, str] = {}
        self.retryable: dict[int, bool] = {}
        """Whether each block's last failure may be retried."""
        self.failed_block: int | None = None
        self.rates = RunningMedian()
        """The rates (bytes/s) of the committed attempts, for their median."""
        self.running_bytes = 0
        """Bytes done by the running attempts (each counted up to its block's size)."""
        self._per_block: dict[int, int] = {}
        """Running attempts of each block that has any."""
        self._speculating: dict[int, int] = {}
        """Running speculative attempts of each block that has any."""
        self._deadlines: list[tuple[float, int, int]] = []
        """A heap of ``(deadline, block, number)``: at least one entry per running attempt,
        never later than its deadline (a renewed lease is pushed again when its old entry
        comes up, an ended attempt's entry is dropped then)."""
        self._lag: tuple[tuple[float, int], list[AttemptKey]] = ((-1.0, -1), [])

    @property
    def is_finished(self) -> bool:
        """True once every block is committed."""
        return len(self.committed) == self.num_blocks

    @property
    def num_running(self) -> int:
        """Attempts holding a lease."""
        return len(self.running)

    def size(self, block: int) -> int:
        """The nominal size of ``block`` in bytes (1 when sizes were not given)."""
        return self.block_sizes[block] if block < len(self.block_sizes) else 1

    def _start(self, block: int, *, speculative: bool = False) -> AttemptKey:
        number = self.attempts_made.get(block, 0) + 1
        self.attempts_made[block] = number
        now = self.clock()
        deadline = now + self.lease_timeout
        key, running = (block, number), self.running
        running[key] = Attempt(block, number, now, deadline, self.wall_clock(), speculative)
        per_block = self._per_block
        per_block[block] = per_block.get(block, 0) + 1
        if speculative:
            self._speculating[block] = self._speculating.get(block, 0) + 1
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(running) + 64:  # mostly ended attempts': rebuild
            deadlines[:] = [(a.deadline, *k) for k, a in running.items()]
            heapq.heapify(deadlines)
        else:
            heapq.heappush(deadlines, (deadline, block, number))
        return key

    def _end(self, key: AttemptKey, status: Status, error: str = "",
             worker: str = "") -> Attempt | None:
        attempt = self.running.pop(key, None)
        if attempt is not None:
            block = attempt.block
            _decrement(self._per_block, block)
            if attempt.speculative:
                _decrement(self._speculating, block)
            self.running_bytes -= min(attempt.bytes_done, self.size(block))
            attempt.status, attempt.error = status, error
            attempt.worker = worker or attempt.worker
            attempt.ended_at = self.wall_clock()
            self.history.append(attempt)
        return attempt

    def _running_of(self, block: int) -> list[AttemptKey]:
        """The running attempts of ``block``, oldest first (no scan of ``running``)."""
        if not self._per_block.get(block):
            return []
        return [(block, n) for n in range(1, self.attempts_made.get(block, 0) + 1)
                if (block, n) in self.running]

    def assign(self) -> AttemptKey | None:
        """Return the next attempt to start, or None when nothing is pending."""
        if self.failed_block is not None:
            return None
        while self.pending:
            block = self.pending.popleft()
            if block not in self.committed:
                return self._start(block)
        return None

    def stragglers(self) -> list[AttemptKey]:
        """Running attempts that lag, the one expected to finish last first.

        An attempt lags when it has run :data:`SPECULATION_SLOWDOWN` times as long as a
        typical block (its size at the median rate of the finished blocks), and at least
        :data:`SPECULATION_MIN_SECONDS`; its progress only orders the stragglers. Progress
        does not say earlier that an attempt lags: a worker reading from an object store
        fetches its block in one GET before it decodes a byte, so its progress stays 0
        for most of a normal block's time (a block 20% slower than typical looked 2x
        slower by its rate, and the last one was read twice). Executors mark these in
        their status lines; :meth:`speculate` starts a second attempt of the first.

        One pass over the running attempts; asked again at the same clock time with no
        attempt ended meanwhile, it answers from that pass.
        """
        median = self.rates.value
        if median <= 0:
            return []
        now = self.clock()
        tick = (now, len(self.history))
        if self._lag[0] == tick:
            return list(self._lag[1])
        found: list[tuple[float, AttemptKey]] = []
        for key, attempt in self.running.items():
            elapsed = now - attempt.started
            size = self.size(attempt.block)
            if elapsed < max(SPECULATION_MIN_SECONDS, SPECULATION_SLOWDOWN * size / median):
                continue
            rate = attempt.rate(now)
            remaining = (size - attempt.bytes_done) / rate if rate > 0 else float("inf")
            found.append((remaining, key))
        found.sort(key=lambda item: -item[0])
        lagging = [key for _, key in found]
        self._lag = (tick, lagging)
        return list(lagging)

    def speculate(self) -> AttemptKey | None:
        """Return a second attempt of the worst straggler, or None.

        Only when nothing is pending (see :meth:`stragglers`). Each block gets at most
        one speculative attempt; the first attempt to finish is committed.
        """
        if self.pending or self.failed_block is not None:
            return None
        for key in self.stragglers():
            if (key[0] not in self._speculating and key[0] not in self.committed
                    and key in self.running):
                return self._start(key[0], speculative=True)
        return None

    def heartbeat(self, key: AttemptKey, bytes_done: int, records_done: int,
                  worker: str = "") -> None:
        """Record progress (and the worker, once known) and renew the lease of ``key``
        (ignored if it is not running)."""
        attempt = self.running.get(key)
        if attempt is not None:
            size = self.size(attempt.block)
            self.running_bytes += min(bytes_done, size) - min(attempt.bytes_done, size)
            attempt.bytes_done = bytes_done
            attempt.records_done = records_done
            attempt.deadline = self.clock() + self.lease_timeout
            if worker:
                attempt.worker = worker

    def complete(self, key: AttemptKey, worker: str = "") -> tuple[bool, list[AttemptKey]]:
        """Record that ``key`` succeeded.

        Returns ``(commit, cancel)``: commit is True for the first success of a block and
        False for any later one (its output must be discarded); cancel lists the other
        running attempts of the block, which are no longer needed (they end as
        ``discarded``).
        """
        block = key[0]
        if block in self.committed:
            self._end(key, "discarded", worker=worker)
            return False, []
        attempt = self._end(key, "committed", worker=worker)
        self.committed.add(block)
        if attempt is not None:
            elapsed = self.clock() - attempt.started
            if elapsed > 0:
                self.rates.add(self.size(block) / elapsed)
        if block not in self._per_block:  # the usual case: no other attempt of it runs
            return True, []
        others = self._running_of(block)
        for k in others:
            self._end(k, "discarded", "another attempt finished first")
        return True, others

    def fail(self, key: AttemptKey, error: str, *, retryable: bool = True,
             lost: bool = False, worker: str = "") -> None:
        """Record that ``key`` failed (an exception, or its worker was lost).

        The block runs again until it has failed ``max_attempts`` times; an error that
        is not ``retryable`` (it would fail the same way again) fails the job at once.
        """
        if self._end(key, "lost" if lost else "failed", error, worker) is None:
            return
        block = key[0]
        if block in self.committed:
            return
        self.errors[block] = error
        self.retryable[block] = retryable
        self.failures[block] = self.failures.get(block, 0) + 1
        if self._per_block.get(block):
            return  # another attempt of the block is still running
        if not retryable or self.failures[block] >= self.max_attempts:
            self.failed_block = block
        else:
            self.pending.appendleft(block)

    def expire(self) -> list[AttemptKey]:
        """Fail every attempt whose lease ran out and return them, so they can be stopped
        (earliest deadline first; O(log n) per lease looked at, none when nothing is due)."""
        now, deadlines, expired = self.clock(), self._deadlines, []
        while deadlines and deadlines[0][0] < now:
            _, block, number = heapq.heappop(deadlines)
            attempt = self.running.get((block, number))
            if attempt is None:
                continue  # ended meanwhile
            if attempt.deadline < now:
                expired.append(attempt.key)
            else:  # renewed since: look again at its new deadline
                heapq.heappush(deadlines, (attempt.deadline, block, number))
        for key in expired:
            self.fail(key, f"no progress for {self.lease_timeout:g}s; the lease expired",
                      lost=True)
        return expired

    def stop(self, why: str) -> list[AttemptKey]:
        """End every running attempt as ``discarded`` (the job stops) and return them."""
        stopped = list(self.running)
        for key in stopped:
            self._end(key, "discarded", why)
        return stopped


class AttemptRows(Sequence[dict[str, Any]]):
    """The ended attempts as rows of the attempts file, each dict made when read (a
    million attempts never exist as a million dicts at once).

    Examples
    --------
    >>> s = Scheduler(1, clock=lambda: 0.0, wall_clock=lambda: 0.0)
    >>> s.complete(s.assign())
    (True, [])
    >>> rows = AttemptRows(s.history)
    >>> len(rows), rows[0]["status"], rows[:1] == [s.history[0].to_dict()]
    (1, 'committed', True)
    """

    def __init__(self, attempts: Sequence[Attempt]) -> None:
        self._attempts = attempts

    def __len__(self) -> int:
        return len(self._attempts)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [a.to_dict() for a in self._attempts[index]]
        return self._attempts[index].to_dict()


def _decrement(counts: dict[int, int], block: int) -> None:
    """Count one less for ``block``, dropping it at zero."""
    left = counts.get(block, 0) - 1
    if left > 0:
        counts[block] = left
    else:
        counts.pop(block, None)
