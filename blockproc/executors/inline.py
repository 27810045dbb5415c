"""The ``inline`` executor: one attempt at a time in the calling thread (for pdb)."""

from __future__ import annotations

from blockproc.executors.base import Event, Failed, Finished, failure_from
from blockproc.scheduler import AttemptKey, Scheduler
from blockproc.worker import BlockTask, Mapper, run_block, worker_name


class InlineExecutor:
    """Run each attempt in the caller's thread when the master asks for events."""

    name = "inline"
    num_slots = 1
    runs_in_events = True
    """Attempts run inside :meth:`events`, one at a time: the master commits a block
    before it asks for the next (other executors get their next block first)."""

    def __init__(self) -> None:
        self._mapper: Mapper | None = None
        self._queued: list[BlockTask] = []

    def start(self, mapper: Mapper, attempts: Scheduler | None = None) -> None:
        """Keep ``mapper``; nothing else to start."""
        self._mapper = mapper

    def run(self, task: BlockTask) -> None:
        """Queue ``task``; it runs in the next :meth:`events` call."""
        self._queued.append(task)

    def events(self, timeout: float) -> list[Event]:
        """Run the queued attempt to completion and report it."""
        assert self._mapper is not None, "start() first"
        events: list[Event] = []
        while self._queued:
            task = self._queued.pop(0)
            try:
                result = run_block(task, self._mapper, _no_report)
            except Exception as exc:
                events.append(failure_from(task.key, exc, worker_name()))
            else:
                events.append(Finished(task.key, result))
        return events

    def cancel(self, key: AttemptKey) -> None:
        """Drop a queued attempt."""
        self._queued = [t for t in self._queued if t.key != key]

    def close(self) -> None:
        """Nothing to stop."""
        self._queued.clear()


def _no_report(bytes_done: int, records_done: int) -> None:
    return None


__all__ = ["Failed", "InlineExecutor"]
