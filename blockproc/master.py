"""The master loop: run a plan's blocks on an executor until each is committed once.

The master assigns attempts to free executor slots, turns heartbeats into progress,
retries failures, commits the first success of each block, and writes ``_SUCCESS``
last. Data never passes through it: only task descriptors, counters and results.
Attempt state lives in the :class:`~blockproc.scheduler.Scheduler`; the loop keeps only
job totals. It runs on any :class:`~blockproc.executors.Executor` and any clock, so it
is tested with a fake executor and a fake clock (``tests/unit/test_master.py``).

Examples
--------
>>> import threading
>>> import blockproc as bp
>>> from blockproc.executors import make_executor
>>> from blockproc.output import OutputDir
>>> from blockproc.storage import filesystem
>>> from blockproc.worker import Mapper
>>> bp.testing.write_files("memory://doc/master", {"a.log": b"a\\nb\\n"})
['memory://doc/master/a.log']
>>> plan = bp.plan("memory://doc/master")
>>> fs = filesystem("memory")
>>> master = Master(plan, Mapper("record", str.upper), OutputDir(fs, "/doc/master-out", "j1"),
...                 make_executor("inline", 1), input_fs=fs)
>>> master.run(threading.Event()).num_records_out
2
>>> master.committed, master.failed_attempts
(1, 0)
"""

from __future__ import annotations

import functools
import gc
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from blockproc._frozen import FrozenSlots
from blockproc._types import IfExists
from blockproc.errors import (
    BlockFailedError,
    ConfigError,
    InputChangedError,
    JobCancelledError,
    JobError,
    LockLostError,
)
from blockproc.executors import Executor, Failed, Finished, Progress
from blockproc.formats import DEFAULT_MAX_RECORD_SIZE, RecordFormat
from blockproc.formats import from_dict as format_from_dict
from blockproc.model import AttemptRecord, BlockResult, Plan, frozen_builder
from blockproc.output import NoOutput, OutputDir, part_name
from blockproc.progress import make_progress
from blockproc.result import JobResult
from blockproc.scheduler import AttemptKey, Scheduler
from blockproc.storage import AbstractFileSystem, retry_call, retry_policy
from blockproc.values import Values
from blockproc.worker import AttemptHook, BlockTask, Mapper

POLL_INTERVAL = 0.1
"""Seconds the loop waits for executor events before it looks at leases again."""

LEDGER_DELAY = 0.1
"""Seconds at most (while the loop runs) between a block's commit and the write of its
ledger line: the lines of the blocks committed meanwhile take one write (see
:meth:`~blockproc.output.OutputDir.flush` for why a line may wait)."""

FREEZE_EVERY = 1000
"""Committed blocks between two ``gc.freeze()`` calls while a job runs (see
:func:`_spare_the_collector`)."""

_TASK_FIELDS = ("block", "attempt", "num_blocks", "file", "format", "input_fs", "output_fs",
                "part", "staging_path", "max_record_size", "max_bad_records", "hook",
                "max_value_size", "growing")
"""The fields of a :class:`BlockTask` the master sets (any other keeps its default)."""

_build_task = frozen_builder(BlockTask, _TASK_FIELDS)  # BlockTask(...), a task per attempt


class JobOptions(FrozenSlots):
    """How a job runs; every field has the default users get from the API.

    ``speculation`` starts a second attempt of a straggling block once nothing else is
    pending; ``max_bad_records`` (per job) skips records whose function call raises and
    logs them to ``_errors/``, failing the job past that many (None: any error fails).
    """

    max_attempts: int
    lease_timeout: float
    speculation: bool
    max_bad_records: int | None
    max_record_size: int
    hook: AttemptHook | None
    """A test's fault plan, shipped inside every task (None in production)."""
    max_value_size: int
    """The most bytes (pickled) a block's value for the master may take."""
    _fields = ("max_attempts", "lease_timeout", "speculation", "max_bad_records",
               "max_record_size", "hook", "max_value_size")
    __slots__ = _fields

    def __init__(self, max_attempts: int = 4, lease_timeout: float = 600.0,
                 speculation: bool = True, max_bad_records: int | None = None,
                 max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
                 hook: AttemptHook | None = None, max_value_size: int = 64 * 2**20) -> None:
        self._init(max_attempts, lease_timeout, speculation, max_bad_records,
                   max_record_size, hook, max_value_size)


class Master:
    """One job's master: prepare the output, run every block, write ``_SUCCESS``.

    ``committed`` and ``failed_attempts`` count as the job runs (the handle's repr shows
    them). ``clock`` is the scheduler's and the lock renewal's clock. ``values`` takes
    the value of each committed block (``pickle`` output), to collect or fold.
    """

    def __init__(self, plan: Plan, mapper: Mapper, output: OutputDir | NoOutput,
                 executor: Executor, *, input_fs: AbstractFileSystem, job_id: str = "",
                 options: JobOptions | None = None, if_exists: IfExists = "error",
                 progress: bool | None = None, values: Values | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plan, self.mapper, self.output, self.executor = plan, mapper, output, executor
        self.values = values
        self.options = options or JobOptions()
        self.job_id = job_id or output.job_id
        self._input_fs = input_fs
        self._if_exists = if_exists
        self._progress_flag = progress
        self._clock = clock
        self.committed = 0
        self.failed_attempts = 0
        self._results: dict[int, BlockResult] = {}
        self._earlier: Counter[int] = Counter()
        self._failures: dict[int, Failed] = {}  # the last failure of each block
        self._bad_records = 0
        self._committed_bytes = 0
        self._sched = Scheduler(0)
        self._part_base = 0  # an append run numbers its parts after the earlier runs'
        self._attempts: list[AttemptRecord] = []  # every attempt of this run, once it ended
        self._freezing = False  # whether this job freezes what it keeps (gc.freeze)
        self._flushed = 0.0  # when the ledger lines were last written (time.monotonic)
        self._renewed = 0.0  # when the lock was last renewed (on the clock)

    def run(self, cancel: threading.Event) -> JobResult:
        """Run the job to its end in this thread and return its result.

        Raises the job's error; ``cancel`` set from another thread stops it with
        :class:`~blockproc.JobCancelledError`.
        """
        self._freezing = _spare_the_collector()
        try:
            return self._run(cancel)
        finally:
            if self._freezing:
                gc.unfreeze()  # the job's objects go back to the collector's oldest generation

    def _run(self, cancel: threading.Event) -> JobResult:
        started = time.perf_counter()
        retry_policy()  # a bad BLOCKPROC_IO_* fails the job here, not at its first retry
        if self._start_append():
            return JobResult(output=self.output.url, job_id=self.job_id, blocks=(),
                             seconds=time.perf_counter() - started, attempts=())
        plan, out = self.plan, self.output
        inputs = [f.path for f in plan.files] if out.fs is self._input_fs else []
        self._results = out.prepare(plan, self._if_exists, inputs)
        try:
            self._read_committed_values()
            earlier = out.earlier_attempts()  # of the runs this one resumes
            self._earlier = Counter(int(r["block_id"]) for r in earlier)
            attempts = self._schedule(cancel)
            ordered = tuple(self._results[b.id] for b in plan.blocks)
            seconds = time.perf_counter() - started
            out.finish(plan, ordered, self._manifest_job(seconds, attempts, earlier))
        finally:
            out.release()  # after _SUCCESS: the manifest is written under the lock
        values = self.values
        return JobResult(output=out.url, job_id=self.job_id, blocks=ordered, seconds=seconds,
                         attempts=tuple(attempts),
                         values=None if values is None or values.combine else
                         tuple(values.collected()),
                         value=None if values is None else values.folded())

    def _start_append(self) -> bool:
        """For ``if_exists="append"`` (or ``"resume"`` of an append run that stopped), turn
        the plan into what is new since the output's earlier runs
        (:mod:`blockproc.incremental`); return True if there is nothing new at all."""
        out = self.output
        if not isinstance(out, OutputDir) or self._if_exists not in ("append", "resume"):
            return False
        # only these jobs load the incremental planner (start-up of every other job)
        from blockproc.incremental import start_append
        from blockproc.output.appending import AppendingOutputDir, append_in_progress

        if self._if_exists == "resume" and not append_in_progress(out.fs, out.path):
            return False
        if self.values is not None:
            raise ConfigError("if_exists='append' adds part-files to an output; a job whose "
                              "values go back to the master (reduce_blocks, pickle output) "
                              "cannot be appended to: rerun it with if_exists='overwrite'")
        full = self.plan
        self.plan, self._part_base, self.output, if_exists = start_append(
            out, full, self._input_fs, extension=self.mapper.output.extension)
        self._if_exists = if_exists
        return isinstance(self.output, AppendingOutputDir) and not self.plan.blocks and \
            not self.output.run.superseded

    def _read_committed_values(self) -> None:
        """Give ``values`` the value of each block earlier runs committed, in block order
        (read back from its ``.pickle`` part-file)."""
        if self.values is None or not self._results or not isinstance(self.output, OutputDir):
            return
        fs, root = self.output.fs, self.output.path
        for block_id in sorted(self._results):
            path = f"{root}/{self._results[block_id].part}"
            data: bytes = retry_call(functools.partial(fs.cat_file, path), f"to read {path!r}")
            self.values.add(block_id, data)

    def _manifest_job(self, seconds: float, attempts: list[AttemptRecord],
                      earlier: list[dict[str, Any]]) -> dict[str, Any]:
        options = self.options
        return {
            "seconds": round(seconds, 6),
            "mapper": self.mapper.kind,
            "executor": self.executor.name,
            "workers": self.executor.num_slots,
            "max_attempts": options.max_attempts,
            "speculation": options.speculation,
            "max_bad_records": options.max_bad_records,
            "attempts": attempts,  # rows: each turned into JSON as the manifest is written
            **({"earlier_attempts": earlier} if earlier else {}),
        }

    # -- the loop -------------------------------------------------------------------------

    def _schedule(self, cancel: threading.Event) -> list[AttemptRecord]:
        """Run every block not committed yet until each is; return the attempts."""
        plan, results, options = self.plan, self._results, self.options
        self._sched = Scheduler(len(plan.blocks), options.max_attempts, options.lease_timeout,
                                clock=self._clock, done=results.keys(),
                                block_sizes=[b.end - b.start for b in plan.blocks])
        self.committed = len(results)
        self._committed_bytes = sum(r.block.end - r.block.start for r in results.values())
        self._bad_records = sum(r.bad_records for r in results.values())
        progress = make_progress(self._progress_flag, plan.num_bytes, len(plan.blocks),
                                 len(results))
        self.executor.start(self.mapper, self._sched)
        self._renewed = self._clock()
        self._flushed = time.monotonic()
        try:
            while not self._sched.is_finished:
                if cancel.is_set():
                    raise self._cancelled()
                self._renew_if_due()
                self._step()
                progress.update(self._committed_bytes + self._running_bytes(), self.committed,
                                self._sched.num_running, self.failed_attempts)
            if cancel.is_set():  # cancel() said True: the job ends cancelled, even if all
                raise self._cancelled()  # blocks got committed meanwhile
        finally:
            progress.close()
            self._stop(lost_lock=isinstance(sys.exc_info()[1], LockLostError))
        return self._attempts

    def _step(self) -> None:
        """Fill the free slots, handle what the executor reports, expire silent leases."""
        sched, executor = self._sched, self.executor
        self._fill_slots()
        while self.options.speculation and self._slot_free() and (key := sched.speculate()):
            executor.run(self._task(key))
        events = executor.events(POLL_INTERVAL)
        ended = sum(isinstance(e, Finished) and e.key in sched.running for e in events)
        if ended and sched.pending and not getattr(executor, "runs_in_events", False):
            self._renew_if_due()  # the events may come after a stall, as at the loop's top
            self._fill_slots(ended)  # their workers are free: the next blocks go out now,
            events = [*events, *executor.events(0)]  # not after the commits below
        for event in events:
            if event.key not in sched.running:
                continue  # an attempt already cancelled or expired
            if isinstance(event, Progress):
                sched.heartbeat(event.key, event.bytes_done, event.records_done, event.worker)
            elif isinstance(event, Finished):
                self._finished(event)
            elif isinstance(event, Failed):
                self._failed(event)
        for key in sched.expire():
            executor.cancel(key)
            self.failed_attempts += 1
            self._discard(key)
        now = time.monotonic()
        if now - self._flushed >= LEDGER_DELAY:  # the lines of the last commits, one write
            self.output.flush()
            self._flushed = now
        if sched.failed_block is not None:
            raise self._block_failed(sched.failed_block)

    def _renew_if_due(self) -> None:
        """Renew the lock when it is due. Called before any new attempt: a job back from
        a stall past the lease learns here that it was taken over, and starts nothing
        more."""
        if self._clock() - self._renewed > self.output.lock.renew_every:
            self.output.heartbeat()
            self._renewed = self._clock()

    def _fill_slots(self, ended: int = 0) -> None:
        """Start attempts until every slot is taken, counting ``ended`` running attempts
        (finished, not committed yet) as free."""
        sched, executor = self._sched, self.executor
        slots: int = getattr(executor, "capacity", executor.num_slots)  # tiny blocks: more
        while sched.num_running < slots + ended and (key := sched.assign()):
            executor.run(self._task(key))

    def _slot_free(self) -> bool:
        """Whether a speculative copy would start at once: a worker is idle (an executor
        that queues several attempts per worker says so itself)."""
        idle: int | None = getattr(self.executor, "idle_slots", None)
        if idle is not None:
            return idle > 0
        return self._sched.num_running < self.executor.num_slots

    def _finished(self, event: Finished) -> None:
        key, sched = event.key, self._sched
        if key[0] not in sched.committed:  # the first success of the block: commit it
            values = self.values
            result = event.result.committed(  # the value is kept once, in values
                self._earlier.get(key[0], 0) + sched.attempts_made[key[0]],
                keep_value=values is None)
            self.output.commit(result, self._staging_path(key))
            if values is not None:
                values.add(key[0], event.result.value)
            self._results[key[0]] = result
            self._committed_bytes += result.block.end - result.block.start
            self._bad_records += result.bad_records
            self.committed += 1
            if self._freezing and self.committed % FREEZE_EVERY == 0:
                gc.freeze()  # what the job keeps (results, attempts) is no garbage
        commit, losers = sched.complete(key, event.result.worker)
        for loser in losers:
            self.executor.cancel(loser)
            self._discard(loser)
        if not commit:
            self._discard(key)
        limit = self.options.max_bad_records
        if limit is not None and self._bad_records > limit:
            raise JobError(
                f"{self._bad_records} records raised in the function, more than "
                f"max_bad_records={limit}; they are listed in {self.output.url}/_errors/")

    def _failed(self, event: Failed) -> None:
        self._sched.fail(event.key, event.error, retryable=event.retryable, lost=event.lost,
                         worker=event.worker)
        self._failures[event.key[0]] = event
        self.failed_attempts += 1
        self._discard(event.key)

    def _stop(self, *, lost_lock: bool) -> None:
        """Stop the workers and clean up; a job that lost its lock touches the output no
        more, not even to clean up."""
        self.executor.close()  # stops busy workers and waits, so nothing writes meanwhile
        for key in self._sched.stop("job stopped"):
            if not lost_lock:
                self._discard(key)
        if self._freezing:
            gc.freeze()
        self._attempts = [a.to_record() for a in self._sched.history]
        if self._freezing:
            gc.freeze()
        if not lost_lock:  # records, each formatted as written (as their dicts would be)
            self.output.save_attempts(cast(Sequence[Mapping[str, Any]], self._attempts))
        self.output.cleanup(lost_lock=lost_lock)

    # -- helpers ----------------------------------------------------------------------------

    def _running_bytes(self) -> int:
        return self._sched.running_bytes  # kept by the scheduler: no scan per step

    def _discard(self, key: AttemptKey) -> None:
        self.output.discard(self._staging_path(key))

    def _part(self, block_id: int) -> str:
        return part_name(self._part_base + block_id, self.mapper.output.extension)

    def _staging_path(self, key: AttemptKey) -> str:
        return self.output.staging_path(key[0], key[1], self._part(key[0]))

    @functools.cached_property
    def _format(self) -> RecordFormat:
        return format_from_dict(self.plan.format)  # once per job, not once per task

    @functools.cached_property
    def _task_fields(self) -> tuple[Any, ...]:
        """What every task of the job shares, in :data:`_TASK_FIELDS` order after
        ``staging_path`` (worked out once per job, not once per task)."""
        options = self.options
        return (options.max_record_size, options.max_bad_records, options.hook,
                options.max_value_size, self._if_exists == "append")

    def _task(self, key: AttemptKey) -> BlockTask:
        plan = self.plan
        block = plan.blocks[key[0]]
        part = self._part(key[0])
        return _build_task(block, key[1], len(plan.blocks), plan.file(block.path),
                           self._format, self._input_fs, self.output.fs, part,
                           self.output.staging_path(key[0], key[1], part),
                           *self._task_fields)

    def _cancelled(self) -> JobCancelledError:
        return JobCancelledError(
            f"job {self.job_id} was cancelled with {self.committed} of "
            f"{len(self.plan.blocks)} blocks committed; resume it with if_exists='resume'")

    def _block_failed(self, block_id: int) -> BlockFailedError:
        sched, failure = self._sched, self._failures.get(block_id)
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
        )
        if failure is not None:  # the worker's exception, its traceback text attached once
            error.__cause__ = failure.cause()
        if isinstance(error.__cause__, InputChangedError):
            # the plan no longer matches the input: start over, except after an append
            # run, which a rerun plans again from what the earlier runs processed
            error.resumable = self._if_exists == "append"
            if error.resumable:
                error.add_note("an input changed while this append run read it (a log "
                               "still being written); run it again with if_exists='append' "
                               "(CLI: --if-exists append): it plans the new bytes again")
        return error


def _spare_the_collector() -> bool:
    """Say whether a job may ``gc.freeze()`` the objects it keeps while it runs (and
    ``gc.unfreeze()`` them at its end): yes unless the collector is off, or something
    else in the process froze objects (its freeze is left alone).

    A job at 1,000,000 blocks holds millions of long-lived objects (the plan's blocks,
    the results, the attempts), and each full collection walks them all, about 10% of
    the master's CPU. Frozen objects are left out of collections; they are still freed
    by reference counting, and cyclic garbage frozen with them is collected after the
    job, once they are unfrozen.
    """
    return gc.isenabled() and gc.get_freeze_count() == 0
