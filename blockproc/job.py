"""The master loop and the future-like :class:`Job` handle.

The master assigns attempts to free executor slots, turns heartbeats into progress,
retries failures, commits the first success of each block, and writes ``_SUCCESS``
last. Data never passes through it: only task descriptors, counters and results.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blockproc._types import IfExists
from blockproc.errors import BlockFailedError, JobCancelledError, JobError, LockLostError
from blockproc.executors import Executor, Failed, Finished, Progress
from blockproc.formats import DEFAULT_MAX_RECORD_SIZE
from blockproc.formats import from_dict as format_from_dict
from blockproc.model import AttemptRecord, BlockResult, JobResult, Plan
from blockproc.output import OutputDir, part_name
from blockproc.progress import make_progress
from blockproc.scheduler import AttemptKey, Scheduler
from blockproc.storage import AbstractFileSystem, filesystem
from blockproc.worker import BlockTask, Mapper

POLL_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How a job runs; every field has the default users get from the API.

    ``speculation`` starts a second attempt of a straggling block once nothing else is
    pending; ``max_bad_records`` (per job) skips records whose function call raises and
    logs them to ``_errors/``, failing the job past that many (None: any error fails).
    """

    max_attempts: int = 4
    lease_timeout: float = 600.0
    speculation: bool = True
    max_bad_records: int | None = None
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE


class RemoteTraceback(Exception):
    """The traceback of an error raised in a worker, kept as the ``__cause__`` of the job error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


def new_job_id() -> str:
    """Return a unique, sortable job id like ``job-20261127T001500-1a2b3c``."""
    return f"job-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


class Job:
    """A running or finished job, with the names of ``concurrent.futures.Future``.

    Made by :func:`blockproc.submit`. ``result()`` waits and returns a
    :class:`~blockproc.JobResult` or raises the job's error.

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/job", {"a.log": b"a\\nb\\n"})
    ['memory://doc/job/a.log']
    >>> job = bp.submit(bp.plan("memory://doc/job"), str.upper, output="memory://doc/job-out",
    ...                 executor="threads")
    >>> job.output
    'memory://doc/job-out'
    >>> job.result().num_records_out
    2
    >>> job
    <Job 1 block: 1 committed, 0 failed attempts, done>
    """

    def __init__(
        self,
        plan: Plan,
        mapper: Mapper,
        *,
        output_fs: AbstractFileSystem,
        output_path: str,
        executor: Executor,
        if_exists: IfExists = "error",
        options: JobOptions | None = None,
        progress: bool | None = None,
        faults: Any = None,
    ) -> None:
        self.plan = plan
        self.job_id = new_job_id()
        self.options = options or JobOptions()
        self._input_fs = filesystem(plan.protocol, plan.storage_options)
        self._mapper = mapper
        self._output = OutputDir(output_fs, output_path, self.job_id)
        self._executor = executor
        self._if_exists = if_exists
        self._progress = progress
        self._faults = faults
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Job], Any]] = []
        self._result: JobResult | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._committed = 0
        self._failed_attempts = 0
        self._earlier_attempts: Counter[int] = Counter()

    @property
    def output(self) -> str:
        """The output directory URL."""
        return self._output.url

    # -- future-like interface --------------------------------------------------------

    def done(self) -> bool:
        """Return True if the job finished, failed or was cancelled.

        Examples
        --------
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/job-done", {"a.log": b"a\\n"})
        ['memory://doc/job-done/a.log']
        >>> job = bp.submit(bp.plan("memory://doc/job-done"), str.upper,
        ...                 output="memory://doc/job-done-out", executor="threads")
        >>> job.result().num_records_out
        1
        >>> job.done()
        True
        """
        return self._done.is_set()

    def running(self) -> bool:
        """Return True while the job runs.

        Examples
        --------
        >>> import threading
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/job-running", {"a.log": b"a\\n"})
        ['memory://doc/job-running/a.log']
        >>> gate = threading.Event()
        >>> job = bp.submit(bp.plan("memory://doc/job-running"), lambda s: gate.wait(60) and s,
        ...                 output="memory://doc/job-running-out", executor="threads")
        >>> job.running(), job.done()
        (True, False)
        >>> gate.set()
        >>> job.result().num_records_out
        1
        >>> job.running(), job.done()
        (False, True)
        """
        return self._thread is not None and not self.done()

    def cancel(self) -> bool:
        """Ask the job to stop; workers are stopped and the output can be resumed.

        Returns False if the job had already finished. Attempts that are running finish or
        stop; the blocks committed so far are kept, and a job submitted again with
        ``if_exists="resume"`` runs only the others.

        Examples
        --------
        >>> import threading
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/job-cancel", {"a.log": b"a\\n"})
        ['memory://doc/job-cancel/a.log']
        >>> gate = threading.Event()
        >>> job = bp.submit(bp.plan("memory://doc/job-cancel"), lambda s: gate.wait(60) and s,
        ...                 output="memory://doc/job-cancel-out", executor="threads")
        >>> job.cancel()
        True
        >>> gate.set()
        >>> job.result()
        Traceback (most recent call last):
        ...
        blockproc.JobCancelledError: ...
        >>> job.cancel()  # it has ended
        False
        """
        if self.done():
            return False
        self._cancel.set()
        return True

    def cancelled(self) -> bool:
        """Return True if the job ended because it was cancelled.

        Examples
        --------
        >>> import threading
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/job-cancelled", {"a.log": b"a\\n"})
        ['memory://doc/job-cancelled/a.log']
        >>> gate = threading.Event()
        >>> job = bp.submit(bp.plan("memory://doc/job-cancelled"), lambda s: gate.wait(60) and s,
        ...                 output="memory://doc/job-cancelled-out", executor="threads")
        >>> job.cancel()
        True
        >>> gate.set()
        >>> type(job.exception()).__name__, job.cancelled()
        ('JobCancelledError', True)
        """
        return isinstance(self._error, JobCancelledError)

    def result(self, timeout: float | None = None) -> JobResult:
        """Wait up to ``timeout`` seconds (None: forever) and return the result.

        Raises the job's error, or ``TimeoutError`` if it is still running.

        Examples
        --------
        >>> import threading
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/job-result", {"a.log": b"a\\nb\\n"})
        ['memory://doc/job-result/a.log']
        >>> gate = threading.Event()
        >>> job = bp.submit(bp.plan("memory://doc/job-result"), lambda s: gate.wait(60) and s,
        ...                 output="memory://doc/job-result-out", executor="threads")
        >>> job.result(timeout=0.1)
        Traceback (most recent call last):
        ...
        TimeoutError: job ... still running after 0.1s
        >>> gate.set()
        >>> job.result(timeout=60)  # doctest: +ELLIPSIS
        <JobResult 1 block, 2 records in, 2 out, 4 B written, ...s, output='memory://doc/job-result-out'>
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.job_id} still running after {timeout}s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait like :meth:`result` and return the job's error, or None.

        Examples
        --------
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/job-exception", {"a.log": b"1\\nx\\n"})
        ['memory://doc/job-exception/a.log']
        >>> job = bp.submit(bp.plan("memory://doc/job-exception"), int, max_attempts=1,
        ...                 output="memory://doc/job-exception-out", executor="threads")
        >>> error = job.exception(timeout=60)
        >>> type(error).__name__, error.block_id, error.attempt
        ('BlockFailedError', 0, 1)
        >>> print(error)
        block 0 of 1 (/doc/job-exception/a.log [0, 4)) failed ... ValueError: invalid literal ...
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.job_id} still running after {timeout}s")
        return self._error

    def add_done_callback(self, fn: Callable[[Job], Any]) -> None:
        """Call ``fn(job)`` when the job ends (at once if it already has).

        ``fn`` runs in the job's thread, after :meth:`done` turns True.

        Examples
        --------
        >>> import queue
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/job-callback", {"a.log": b"a\\n"})
        ['memory://doc/job-callback/a.log']
        >>> ended = queue.SimpleQueue()
        >>> job = bp.submit(bp.plan("memory://doc/job-callback"), str.upper,
        ...                 output="memory://doc/job-callback-out", executor="threads")
        >>> job.add_done_callback(ended.put)
        >>> ended.get(timeout=60) is job
        True
        """
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def __repr__(self) -> str:
        state = "done" if self.done() else ("running" if self.running() else "pending")
        if self._error is not None:
            state = "cancelled" if self.cancelled() else "failed"
        blocks = len(self.plan.blocks)
        return (f"<Job {blocks} block{'s' if blocks != 1 else ''}: {self._committed} committed, "
                f"{self._failed_attempts} failed attempts, {state}>")

    # -- running ------------------------------------------------------------------------

    def start(self) -> Job:
        """Run the master loop on a background thread; returns at once.

        :func:`blockproc.submit` calls it: the job it returns has started. The thread is
        named ``blockproc-<job id>``; with ``executor="inline"`` blocks run in it.

        Examples
        --------
        >>> import threading
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/job-start", {"a.log": b"a\\n"})
        ['memory://doc/job-start/a.log']
        >>> job = bp.submit(bp.plan("memory://doc/job-start"),
        ...                 lambda s: threading.current_thread().name,
        ...                 output="memory://doc/job-start-out", executor="inline")
        >>> job.result().num_records_out
        1
        >>> thread_name = bp.testing.read_parts("memory://doc/job-start-out").decode().strip()
        >>> thread_name == f"blockproc-{job.job_id}"
        True
        """
        self._thread = threading.Thread(target=self.run, name=f"blockproc-{self.job_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Run the master loop in this thread, storing the result or the error.

        :func:`blockproc.map_lines`, :func:`~blockproc.map_blocks` and
        :func:`~blockproc.map_command` call it, so the master runs in the caller's thread
        (with ``executor="inline"``, so do the blocks: pdb and Ctrl-C work as usual).

        Examples
        --------
        >>> import threading
        >>> import blockproc as bp
        >>> bp.testing.write_files("memory://doc/job-run", {"a.log": b"a\\n"})
        ['memory://doc/job-run/a.log']
        >>> result = bp.map_lines(lambda s: threading.current_thread().name, "memory://doc/job-run",
        ...                       output="memory://doc/job-run-out", executor="inline")
        >>> bp.testing.read_parts("memory://doc/job-run-out").decode() == (
        ...     threading.current_thread().name + "\\n")
        True
        """
        try:
            self._result = self._master()
        except BaseException as exc:
            self._error = exc
            if not isinstance(exc, Exception) and self._thread is None:
                self._finish()
                raise  # KeyboardInterrupt in the caller's thread
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def _master(self) -> JobResult:
        started = time.perf_counter()
        plan, out, options = self.plan, self._output, self.options
        inputs = [f.path for f in plan.files] if out.fs is self._input_fs else []
        results: dict[int, BlockResult] = out.prepare(plan, self._if_exists, inputs)
        earlier = out.earlier_attempts()  # of the runs this one resumes
        self._earlier_attempts = Counter(int(r["block_id"]) for r in earlier)
        try:
            attempts = self._schedule(results)
            ordered = tuple(results[b.id] for b in plan.blocks)
            seconds = time.perf_counter() - started
            out.finish(plan, ordered, {
                "seconds": round(seconds, 6),
                "mapper": self._mapper.kind,
                "executor": self._executor.name,
                "workers": self._executor.num_slots,
                "max_attempts": options.max_attempts,
                "speculation": options.speculation,
                "max_bad_records": options.max_bad_records,
                "attempts": [a.to_dict() for a in attempts],
                **({"earlier_attempts": earlier} if earlier else {}),
            })
        finally:
            out.release()  # after _SUCCESS: the manifest is written under the lock
        return JobResult(output=out.url, job_id=self.job_id, blocks=ordered, seconds=seconds,
                         attempts=tuple(attempts))

    def _schedule(self, results: dict[int, BlockResult]) -> list[AttemptRecord]:
        """Run every block not in ``results`` until each is committed; return the attempts."""
        plan, out, options, executor = self.plan, self._output, self.options, self._executor
        sched = Scheduler(len(plan.blocks), options.max_attempts, options.lease_timeout,
                          done=results.keys(), block_sizes=[b.end - b.start for b in plan.blocks])
        self._committed = len(results)
        tasks: dict[AttemptKey, BlockTask] = {}
        begun: dict[AttemptKey, float] = {}
        runs_on: dict[AttemptKey, str] = {}  # the worker of each attempt, once it is known
        speculative: set[AttemptKey] = set()
        attempts: list[AttemptRecord] = []
        failures: dict[int, Failed] = {}
        committed_bytes = sum(r.block.end - r.block.start for r in results.values())
        bad_records = sum(r.bad_records for r in results.values())
        progress = make_progress(self._progress, plan.num_bytes, len(plan.blocks),
                                 len(results))
        last_heartbeat = time.monotonic()

        def start(key: AttemptKey) -> None:
            tasks[key] = self._task(key)
            begun[key] = time.time()
            executor.run(tasks[key])

        def end_attempt(key: AttemptKey, worker: str, status: str, error: str = "",
                        discard: bool = True) -> None:
            task = tasks.pop(key)
            worker = worker or runs_on.pop(key, "")
            runs_on.pop(key, None)
            attempts.append(AttemptRecord(key[0], key[1], worker, begun.pop(key), time.time(),
                                          status, error, key in speculative))
            if status != "committed" and discard:
                out.discard(task.staging_path)

        executor.start(self._mapper)
        try:
            while not sched.is_finished:
                if self._cancel.is_set():
                    raise JobCancelledError(
                        f"job {self.job_id} was cancelled with {self._committed} of "
                        f"{len(plan.blocks)} blocks committed; resume it with "
                        f"if_exists='resume'")
                if time.monotonic() - last_heartbeat > out.lock.renew_every:
                    # before any new attempt: a job back from a stall past the lease
                    # learns here that it was taken over, and starts nothing more
                    out.heartbeat()
                    last_heartbeat = time.monotonic()
                while sched.num_running < executor.num_slots and (key := sched.assign()):
                    start(key)
                while (options.speculation and sched.num_running < executor.num_slots
                       and (key := sched.speculate())):
                    speculative.add(key)
                    start(key)
                for event in executor.events(POLL_INTERVAL):
                    key = event.key
                    if key not in tasks:
                        continue  # an attempt already cancelled or expired
                    if isinstance(event, Progress):
                        sched.heartbeat(key, event.bytes_done, event.records_done)
                        if event.worker:
                            runs_on[key] = event.worker
                    elif isinstance(event, Finished):
                        commit, losers = sched.complete(key)
                        for loser in losers:
                            executor.cancel(loser)
                            end_attempt(loser, "", "discarded", "another attempt finished first")
                        if commit:
                            result = dataclasses.replace(event.result, attempts=(
                                self._earlier_attempts[key[0]] + sched.attempts_made[key[0]]))
                            out.commit(result, tasks[key].staging_path)
                            results[key[0]] = result
                            committed_bytes += event.result.block.end - event.result.block.start
                            bad_records += event.result.bad_records
                            self._committed += 1
                        end_attempt(key, event.result.worker,
                                    "committed" if commit else "discarded")
                        if options.max_bad_records is not None and \
                                bad_records > options.max_bad_records:
                            raise JobError(
                                f"{bad_records} records raised in the function, more than "
                                f"max_bad_records={options.max_bad_records}; they are listed "
                                f"in {out.url}/_errors/")
                    elif isinstance(event, Failed):
                        sched.fail(key, event.error, retryable=event.retryable)
                        failures[key[0]] = event
                        self._failed_attempts += 1
                        end_attempt(key, event.worker, "lost" if event.lost else "failed",
                                    event.error)
                for key in sched.expire():
                    executor.cancel(key)
                    self._failed_attempts += 1
                    end_attempt(key, "", "lost", "lease expired")
                if sched.failed_block is not None:
                    raise self._block_failed(sched.failed_block, sched, failures)
                running = sum(min(lease.bytes_done, _nominal(plan, k[0]))
                              for k, lease in sched.running.items())
                progress.update(committed_bytes + running, self._committed, sched.num_running,
                                self._failed_attempts)
        finally:
            # a job that lost its lock touches the output no more, not even to clean up
            lost = isinstance(sys.exc_info()[1], LockLostError)
            executor.close()  # stops busy workers and waits, so nothing writes while we clean up
            for key in list(tasks):
                end_attempt(key, "", "discarded", "job stopped", discard=not lost)
            progress.close()
            if not lost:
                out.save_attempts([a.to_dict() for a in attempts])
            out.cleanup(lost_lock=lost)
        return attempts

    def _task(self, key: AttemptKey) -> BlockTask:
        block = self.plan.blocks[key[0]]
        part = part_name(block.id, self._mapper.output.extension)  # part-00042.csv
        return BlockTask(
            block=block, attempt=key[1], num_blocks=len(self.plan.blocks),
            file=self.plan.file(block.path), format=format_from_dict(self.plan.format),
            input_fs=self._input_fs, output_fs=self._output.fs, part=part,
            staging_path=self._output.staging_path(block.id, key[1], part),
            max_record_size=self.options.max_record_size,
            max_bad_records=self.options.max_bad_records, faults=self._faults,
        )

    def _block_failed(self, block_id: int, sched: Scheduler,
                      failures: dict[int, Failed]) -> BlockFailedError:
        failure = failures.get(block_id)
        block = self.plan.blocks[block_id]
        attempts = sched.failures.get(block_id, 0)
        if failure is not None and not failure.retryable:
            retried = "and was not retried (the same error would happen again)"
        else:
            retried = f"on all {attempts} attempts"
        error = BlockFailedError(
            f"block {block_id} of {len(self.plan.blocks)} ({block.path} [{block.start}, "
            f"{block.end})) failed {retried}; last error: "
            f"{sched.errors.get(block_id, 'unknown')}",
            block_id=block_id, attempt=attempts,
            remote_traceback=failure.traceback if failure else "",
        )
        if failure and failure.traceback:
            error.__cause__ = RemoteTraceback(failure.traceback)
        if failure and _error_class(failure.error) == "InputChangedError":
            error.resumable = False  # the plan no longer matches the input: start over
        return error


def _error_class(summary: str) -> str:
    """The class name an error summary line starts with.

    >>> _error_class("blockproc.errors.InputChangedError: a.log changed")
    'InputChangedError'
    """
    return summary.partition(":")[0].rpartition(".")[2].strip()


def _nominal(plan: Plan, block_id: int) -> int:
    block = plan.blocks[block_id]
    return block.end - block.start
