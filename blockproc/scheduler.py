"""The master's state machine: which block runs next, leases, retries, exactly-once.

It knows nothing about processes or sockets, only block ids, attempts and a clock, so
it is tested with a fake clock. Workers pull: whenever a slot is free the master asks
:meth:`Scheduler.assign` for the next attempt.

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

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

AttemptKey = tuple[int, int]
"""``(block id, attempt number)``; attempt numbers start at 1 for each block."""


@dataclass
class Lease:
    """A running attempt: when it started, when its lease runs out, its last progress."""

    started: float
    deadline: float
    bytes_done: int = 0
    records_done: int = 0


@dataclass
class Scheduler:
    """Hand out blocks, track leases, retry failures, commit each block once."""

    num_blocks: int
    max_attempts: int = 4
    lease_timeout: float = 600.0
    clock: Callable[[], float] = time.monotonic
    done: Iterable[int] = ()
    pending: deque[int] = field(init=False)
    running: dict[AttemptKey, Lease] = field(init=False, default_factory=dict)
    committed: set[int] = field(init=False)
    attempts_made: dict[int, int] = field(init=False, default_factory=dict)
    errors: dict[int, str] = field(init=False, default_factory=dict)
    failed_block: int | None = field(init=False, default=None)

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

    def assign(self) -> AttemptKey | None:
        """Return the next attempt to start, or None when nothing is pending."""
        if self.failed_block is not None:
            return None
        while self.pending:
            block = self.pending.popleft()
            if block in self.committed:
                continue
            number = self.attempts_made.get(block, 0) + 1
            self.attempts_made[block] = number
            now = self.clock()
            key = (block, number)
            self.running[key] = Lease(now, now + self.lease_timeout)
            return key
        return None

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
        self.running.pop(key, None)
        block = key[0]
        if block in self.committed:
            return False, []
        self.committed.add(block)
        others = [k for k in self.running if k[0] == block]
        for k in others:
            del self.running[k]
        return True, others

    def fail(self, key: AttemptKey, error: str) -> None:
        """Record that ``key`` failed (an exception, or its worker was lost)."""
        if self.running.pop(key, None) is None:
            return
        block = key[0]
        if block in self.committed:
            return
        self.errors[block] = error
        if any(k[0] == block for k in self.running):
            return  # another attempt of the block is still running
        if self.attempts_made.get(block, 0) >= self.max_attempts:
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
