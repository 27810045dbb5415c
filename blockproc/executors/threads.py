"""The ``threads`` executor: a pool of threads, for GIL-free or I/O-bound mappers."""

from __future__ import annotations

import queue
import threading
import time

from blockproc.executors.base import (
    AttemptCancelled,
    Event,
    Finished,
    Progress,
    failure_from,
)
from blockproc.scheduler import AttemptKey, Scheduler
from blockproc.worker import BlockTask, Mapper, run_block, worker_name

REPORT_INTERVAL = 0.2


class ThreadExecutor:
    """Run attempts on ``num_slots`` threads of this process."""

    name = "threads"

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self._tasks: queue.SimpleQueue[BlockTask | None] = queue.SimpleQueue()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._cancelled: set[AttemptKey] = set()
        self._threads: list[threading.Thread] = []
        self._mapper: Mapper | None = None

    def start(self, mapper: Mapper, attempts: Scheduler | None = None) -> None:
        """Start the threads."""
        self._mapper = mapper
        for i in range(self.num_slots):
            t = threading.Thread(target=self._loop, name=f"blockproc-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self) -> None:
        assert self._mapper is not None
        while (task := self._tasks.get()) is not None:
            key = task.key
            last = [0.0]

            def report(bytes_done: int, records_done: int, key: AttemptKey = key,
                       last: list[float] = last) -> None:
                if key in self._cancelled:
                    raise AttemptCancelled
                now = time.monotonic()
                if now - last[0] >= REPORT_INTERVAL:
                    last[0] = now
                    self._events.put(Progress(key, bytes_done, records_done, worker_name()))

            try:
                result = run_block(task, self._mapper, report)
            except AttemptCancelled:
                continue
            except Exception as exc:
                self._events.put(failure_from(key, exc, worker_name()))
            else:
                if key not in self._cancelled:
                    self._events.put(Finished(key, result))

    def run(self, task: BlockTask) -> None:
        """Queue ``task`` for the next free thread."""
        self._tasks.put(task)

    def events(self, timeout: float) -> list[Event]:
        """Return queued events, waiting up to ``timeout`` for the first."""
        try:
            events = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def cancel(self, key: AttemptKey) -> None:
        """Ask the attempt to stop at its next progress report."""
        self._cancelled.add(key)

    def close(self) -> None:
        """Stop the threads once their current attempts end or notice cancellation."""
        for _ in self._threads:
            self._tasks.put(None)
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
