"""Fault injection for tests: a seeded plan of faults, fired inside real worker processes.

A :class:`FaultPlan` is an :class:`~blockproc.worker.AttemptHook`: passed as
``JobOptions(hook=plan)``, it travels inside every task, and ``run_block`` calls
``task.hook.fire(point, task)`` at three points of an attempt: ``"start"`` (before
anything is written), ``"during_write"`` (after the first write to the part-file) and
``"after_write"`` (the part-file is complete, its success not yet reported to the
master), whatever the executor. A fault is chosen per ``(block id, attempt number)``.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = (
    "crash_before_write",
    "crash_during_write",
    "crash_after_write",
    "slow",
    "exception",
    "storage_error",
)


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class FaultPlan:
    """Which fault strikes which attempt; picklable, so it travels inside each task."""

    faults: Mapping[tuple[int, int], str] = field(default_factory=dict)
    slow_seconds: float = 0.3

    def fire(self, point: str, task: Any) -> None:
        kind = self.faults.get((task.block.id, task.attempt))
        if kind is None:
            return
        if point == "start":
            if kind == "crash_before_write":
                _kill_self()
            elif kind == "exception":
                raise RuntimeError(f"injected fault in block {task.block.id}")
            elif kind == "storage_error":
                raise OSError(errno.EIO, f"injected storage error in block {task.block.id}")
            elif kind == "slow":
                time.sleep(self.slow_seconds)
        elif (point, kind) in (("during_write", "crash_during_write"),
                               ("after_write", "crash_after_write")):
            _kill_self()

    @classmethod
    def random(cls, seed: int, num_blocks: int, num_faults: int,
               kinds: Sequence[str] = KINDS, max_per_block: int = 2) -> FaultPlan:
        """Draw ``num_faults`` faults over the first attempts of random blocks; a block gets
        at most ``max_per_block`` (so it still succeeds within max_attempts)."""
        rng = random.Random(seed)
        faults: dict[tuple[int, int], str] = {}
        per_block: Counter[int] = Counter()
        while len(faults) < num_faults:
            block = rng.randrange(num_blocks)
            tried = per_block[block]
            if tried >= max_per_block or faults.get((block, tried)) == "slow":
                continue  # a slow attempt succeeds, so no later attempt would run
            per_block[block] += 1
            kind = kinds[len(faults)] if len(faults) < len(kinds) else rng.choice(kinds)
            faults[(block, tried + 1)] = kind
        return cls(faults)

    def counts(self) -> Counter[str]:
        """How many faults of each kind the plan holds."""
        return Counter(self.faults.values())
