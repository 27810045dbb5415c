"""The future-like :class:`Job` handle: what :func:`blockproc.submit` returns.

It only waits, cancels and reports; the master loop it runs lives in
:mod:`blockproc.master`. :func:`start_job` runs that loop on a background thread (what
``submit`` does); :func:`run_job` runs it in the caller's thread, so with
``executor="inline"`` pdb and Ctrl-C work as usual (what ``map_lines`` and the CLI do).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from blockproc._types import IfExists
from blockproc.errors import JobCancelledError
from blockproc.executors import Executor
from blockproc.master import JobOptions, Master
from blockproc.model import Plan
from blockproc.output import NoOutput, OutputDir
from blockproc.result import JobResult
from blockproc.storage import AbstractFileSystem, filesystem
from blockproc.values import Values
from blockproc.worker import Mapper

__all__ = ["Job", "JobOptions", "new_job_id", "run_job", "start_job"]


def new_job_id() -> str:
    """Return a unique, sortable job id like ``job-20261127T001500-1a2b3c``."""
    return f"job-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.urandom(3).hex()}"


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
        output_fs: AbstractFileSystem | None,
        output_path: str,
        executor: Executor,
        if_exists: IfExists = "error",
        options: JobOptions | None = None,
        progress: bool | None = None,
        values: Values | None = None,
    ) -> None:
        self.plan = plan
        self.job_id = new_job_id()
        self.options = options or JobOptions()
        output = NoOutput(self.job_id) if output_fs is None else OutputDir(
            output_fs, output_path, self.job_id, extension=mapper.output.extension)
        self._master = Master(plan, mapper, output,
                              executor, input_fs=filesystem(plan.protocol, plan.storage_options),
                              job_id=self.job_id, options=self.options, if_exists=if_exists,
                              progress=progress, values=values)
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Job], Any]] = []
        self._result: JobResult | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def output(self) -> str:
        """The output directory URL ("" for a job whose values only go to the master)."""
        return self._master.output.url

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
        blocks, master = len(self.plan.blocks), self._master
        return (f"<Job {blocks} block{'s' if blocks != 1 else ''}: {master.committed} committed, "
                f"{master.failed_attempts} failed attempts, {state}>")

    # -- running (through start_job and run_job) -------------------------------------------

    def _start(self) -> Job:
        self._thread = threading.Thread(target=self._run, name=f"blockproc-{self.job_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._result = self._master.run(self._cancel)
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


def start_job(job: Job) -> Job:
    """Run the master loop of ``job`` on a background thread and return ``job`` at once.

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
    return job._start()


def run_job(job: Job) -> None:
    """Run the master loop of ``job`` in this thread, storing its result or error.

    :func:`blockproc.map_lines`, :func:`~blockproc.map_blocks`,
    :func:`~blockproc.map_command` and ``blockproc run`` call it, so the master runs in
    the caller's thread (with ``executor="inline"``, so do the blocks: pdb and Ctrl-C
    work as usual). A ``KeyboardInterrupt`` is stored and raised again here.

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
    job._run()
