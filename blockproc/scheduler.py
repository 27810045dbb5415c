"""The master's state machine: which block runs next, leases, retries, speculation,
exactly-once.

It knows nothing about processes or sockets, only block ids, attempts and a clock, so
it is tested with a fake clock. Workers pull: whenever a slot is free the master asks
:meth:`Scheduler.assign` for the next attempt, and, once nothing is pending, may ask
:meth:`Scheduler.speculate` for a second attempt of a straggler.

Examples
--------
>>> s = Scheduler(2, max_attempts=2, clock=lambda: 0.0)
>>> a = s.assign(); b = s.assign(); a, b
((0, 1), (1, 1))
>>> s.fail(a, "boom"); s.assign()
(0, 2)
>>> s.complete(b)
(True, [])
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

AttemptKey = tuple[int, int]
"""``(block id, attempt number)``; attempt numbers start at 1 for each block."""

SPECULATION_SLOWDOWN = 2.0
"""A running attempt is a straggler when its rate is below the median finished rate
divided by this, and it has already run longer than a typical block."""

SPECULATION_MIN_SECONDS = 1.0
"""Never speculate on an attempt younger than this."""


@dataclass
class Lease:
    """A running attempt: when it started, when its lease runs out, its last progress."""

    started: float
    deadline: float
    bytes_done: int = 0
    records_done: int = 0
    speculative: bool = False


@dataclass
class Scheduler:
    """Hand out blocks, track leases, retry failures, commit each block once."""

    num_blocks: int
    max_attempts: int = 4
    lease_timeout: float = 600.0
    clock: Callable[[], float] = time.monotonic
    done: Iterable[int] = ()
    block_sizes: Sequence[int] = ()
    pending: deque[int] = field(init=False)
    running: dict[AttemptKey, Lease] = field(init=False, default_factory=dict)
    committed: set[int] = field(init=False)
    attempts_made: dict[int, int] = field(init=False, default_factory=dict)
    failures: dict[int, int] = field(init=False, default_factory=dict)
    errors: dict[int, str] = field(init=False, default_factory=dict)
    failed_block: int | None = field(init=False, default=None)
    rates: list[float] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        self.committed = {b for b in self.done if 0 <= b < self.num_blocks}
        self.pending = deque(b for b in range(self.num_blocks) if b not in self.committed)

    @property
    def is_finished(self) -> bool:
        """True once every block is committed."""
        return len(self.committed) == self.num_blocks

    @property
    def num_running(self) -> int:
        """Attempts holding a lease."""
        return len(self.running)

    def _start(self, block: int, *, speculative: bool = False) -> AttemptKey:
        number = self.attempts_made.get(block, 0) + 1
        self.attempts_made[block] = number
        now = self.clock()
        key = (block, number)
        self.running[key] = Lease(now, now + self.lease_timeout, speculative=speculative)
        return key

    def assign(self) -> AttemptKey | None:
        """Return the next attempt to start, or None when nothing is pending."""
        if self.failed_block is not None:
            return None
        while self.pending:
            block = self.pending.popleft()
            if block not in self.committed:
                return self._start(block)
        return None

    def speculate(self) -> AttemptKey | None:
        """Return a second attempt of the worst straggler, or None.

        Only when nothing is pending: an attempt is a straggler when it has run longer
        than a typical block and its progress rate is below the median rate of the
        finished blocks divided by :data:`SPECULATION_SLOWDOWN`. Each block gets at most
        one speculative attempt; the first attempt to finish is committed.
        """
        if self.pending or self.failed_block is not None or not self.rates:
            return None
        median = statistics.median(self.rates)
        if median <= 0:
            return None
        now = self.clock()
        speculated = {k[0] for k, lease in self.running.items() if lease.speculative}
        worst: tuple[float, int] | None = None
        for (block, _), lease in self.running.items():
            if block in speculated or block in self.committed:
                continue
            elapsed = now - lease.started
            size = self._size(block)
            typical = size / median
            if elapsed < max(SPECULATION_MIN_SECONDS, typical):
                continue
            rate = lease.bytes_done / elapsed if elapsed > 0 else 0.0
            if rate * SPECULATION_SLOWDOWN >= median:
                continue
            remaining = (size - lease.bytes_done) / rate if rate > 0 else float("inf")
            if worst is None or remaining > worst[0]:
                worst = (remaining, block)
        if worst is None:
            return None
        return self._start(worst[1], speculative=True)

    def _size(self, block: int) -> int:
        return self.block_sizes[block] if block < len(self.block_sizes) else 1

    def heartbeat(self, key: AttemptKey, bytes_done: int, records_done: int) -> None:
        """Record progress and renew the lease of ``key`` (ignored if it is not running)."""
        lease = self.running.get(key)
        if lease is not None:
            lease.bytes_done = bytes_done
            lease.records_done = records_done
            lease.deadline = self.clock() + self.lease_timeout

    def complete(self, key: AttemptKey) -> tuple[bool, list[AttemptKey]]:
        """Record that ``key`` succeeded.

        Returns ``(commit, cancel)``: commit is True for the first success of a block and
        False for any later one (its output must be discarded); cancel lists the other
        running attempts of the block, which are no longer needed.
        """
        lease = self.running.pop(key, None)
        block = key[0]
        if block in self.committed:
            return False, []
        self.committed.add(block)
        if lease is not None:
            elapsed = self.clock() - lease.started
            if elapsed > 0:
                self.rates.append(self._size(block) / elapsed)
        others = [k for k in self.running if k[0] == block]
        for k in others:
            del self.running[k]
        return True, others

    def fail(self, key: AttemptKey, error: str, *, retryable: bool = True) -> None:
        """Record that ``key`` failed (an exception, or its worker was lost).

        The block runs again until it has failed ``max_attempts`` times; an error that
        is not ``retryable`` (it would fail the same way again) fails the job at once.
        """
        if self.running.pop(key, None) is None:
            return
        block = key[0]
        if block in self.committed:
            return
        self.errors[block] = error
        self.failures[block] = self.failures.get(block, 0) + 1
        if any(k[0] == block for k in self.running):
            return  # another attempt of the block is still running
        if not retryable or self.failures[block] >= self.max_attempts:
            self.failed_block = block
        else:
            self.pending.appendleft(block)

    def expire(self) -> list[AttemptKey]:
        """Fail every attempt whose lease ran out and return them, so they can be stopped."""
        now = self.clock()
        expired = [k for k, lease in self.running.items() if lease.deadline < now]
        for key in expired:
            self.fail(key, f"no progress for {self.lease_timeout:g}s; the lease expired")
        return expired
