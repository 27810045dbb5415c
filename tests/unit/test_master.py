"""The master loop driven by a fake executor and a fake clock: no processes, no threads.

The fake executor runs each attempt as a script says (finish, raise, get lost, hang,
make slow progress), in this thread; the clock moves by the poll interval at each
``events()`` call, so leases expire and stragglers appear without waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import pytest

import blockproc as bp
from blockproc.errors import BlockFailedError, InputError, JobCancelledError, JobError
from blockproc.executors import Event, Failed, Finished, Progress
from blockproc.executors.base import failure_from
from blockproc.master import POLL_INTERVAL, JobOptions, Master
from blockproc.output import OutputDir
from blockproc.result import JobResult
from blockproc.scheduler import AttemptKey, Scheduler
from blockproc.storage import filesystem
from blockproc.testing import read_parts, write_files
from blockproc.worker import BlockTask, Mapper, run_block

LINES = [f"line {i:03d}" for i in range(40)]
DATA = "".join(f"{line}\n" for line in LINES).encode()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeExecutor:
    """Run attempts in this thread as ``script`` says, one action per ``events()`` call.

    ``script[key]`` is a list of actions, the last one repeated: ``"ok"`` (run the block
    for real and finish), ``"fail"`` (raise ValueError), ``"fatal"`` (an input error,
    not retryable), ``"lost"`` (the worker died), ``"hang"`` (no news at all),
    ``"progress"`` (one byte more), ``"ok_if_raced"`` (finish once another attempt of
    the block runs, else make progress). Attempts not in the script finish at once.
    """

    name = "fake"

    def __init__(self, clock: FakeClock,
                 script: Mapping[AttemptKey, Sequence[str]] | None = None, *, slots: int = 2,
                 on_poll: Callable[[int], None] | None = None) -> None:
        self.clock = clock
        self.script = script or {}
        self.num_slots = slots
        self.on_poll = on_poll
        self.running: dict[AttemptKey, BlockTask] = {}
        self.started: list[AttemptKey] = []
        self.cancelled: list[AttemptKey] = []
        self.polls = 0
        self.closed = False
        self._step: dict[AttemptKey, int] = {}
        self._mapper: Mapper | None = None
        self.attempts: Scheduler | None = None

    def start(self, mapper: Mapper, attempts: Scheduler | None = None) -> None:
        self._mapper = mapper
        self.attempts = attempts

    def run(self, task: BlockTask) -> None:
        assert len(self.running) < self.num_slots, "the master asked for too many slots"
        self.running[task.key] = task
        self.started.append(task.key)

    def events(self, timeout: float) -> list[Event]:
        self.clock.now += timeout
        self.polls += 1
        if self.on_poll is not None:
            self.on_poll(self.polls)
        out: list[Event] = []
        for key in sorted(self.running):
            event = self._act(key, self.running[key])
            if event is not None:
                out.append(event)
                if not isinstance(event, Progress):
                    del self.running[key]
        return out

    def _act(self, key: AttemptKey, task: BlockTask) -> Event | None:
        actions = self.script.get(key, ["ok"])
        step = self._step.get(key, 0)
        self._step[key] = step + 1
        action = actions[min(step, len(actions) - 1)]
        if action == "ok_if_raced":
            raced = any(k[0] == key[0] and k != key for k in self.running)
            action = "ok" if raced else "progress"
        if action == "ok":
            assert self._mapper is not None
            return Finished(key, run_block(task, self._mapper, lambda b, r: None))
        if action == "fail":
            return failure_from(key, ValueError(f"bad record in block {key[0]}"), "fake:1")
        if action == "fatal":
            return failure_from(key, InputError("undecodable bytes"), "fake:1")
        if action == "lost":
            return Failed(key, "worker fake:1 was lost", worker="fake:1", lost=True)
        if action == "progress":
            return Progress(key, step + 1, 0, "fake:1")
        assert action == "hang", action
        return None

    def cancel(self, key: AttemptKey) -> None:
        self.cancelled.append(key)
        self.running.pop(key, None)

    def close(self) -> None:
        self.closed = True


def master(memfs: str, executor: FakeExecutor, *, block_size: int = 120,
           fn: Callable[[str], object] = str.upper, **options: object) -> Master:
    write_files(memfs, {"in.log": DATA})
    plan = bp.plan(f"{memfs}/in.log", block_size=block_size)
    fs = filesystem("memory")
    out = OutputDir(fs, f"{memfs.removeprefix('memory://')}/out", "job-test")
    return Master(plan, Mapper("record", fn), out, executor,
                  input_fs=fs, options=JobOptions(**options),  # type: ignore[arg-type]
                  progress=False, clock=executor.clock)


def statuses(result: JobResult, block: int) -> list[tuple[int, str]]:
    return [(a.attempt, a.status) for a in result.attempts if a.block_id == block]


def test_every_block_is_committed_once_in_plan_order(memfs: str) -> None:
    ex = FakeExecutor(FakeClock())
    m = master(memfs, ex)
    result = m.run(threading.Event())
    assert len(result.blocks) == len(m.plan.blocks) == 3
    assert read_parts(f"{memfs}/out") == DATA.upper()
    assert ex.started == [(b.id, 1) for b in m.plan.blocks] and ex.closed
    assert (m.committed, m.failed_attempts) == (len(m.plan.blocks), 0)
    assert all(a.status == "committed" and a.worker for a in result.attempts)


def test_a_failed_attempt_is_retried_and_counted(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(1, 1): ["fail"], (1, 2): ["fail"]})
    m = master(memfs, ex)
    result = m.run(threading.Event())
    assert statuses(result, 1) == [(1, "failed"), (2, "failed"), (3, "committed")]
    assert result.blocks[1].attempts == 3 and m.failed_attempts == 2
    assert all("ValueError: bad record in block 1" in a.error
               for a in result.attempts if a.status == "failed")
    assert read_parts(f"{memfs}/out") == DATA.upper()


def test_a_block_failing_every_attempt_fails_the_job_naming_it(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(0, n): ["fail"] for n in (1, 2, 3)})
    m = master(memfs, ex, max_attempts=3)
    with pytest.raises(BlockFailedError, match=r"block 0 of \d+ \(.*in\.log \[0, 120\)\) "
                                               r"failed on all 3 attempts") as info:
        m.run(threading.Event())
    assert (info.value.block_id, info.value.attempt) == (0, 3)
    assert "ValueError" in info.value.remote_traceback
    assert not filesystem("memory").exists(f"{memfs}/out/_SUCCESS")


def test_an_error_that_would_happen_again_is_not_retried(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(0, 1): ["fatal"]})
    with pytest.raises(BlockFailedError, match="was not retried"):
        master(memfs, ex).run(threading.Event())
    assert (0, 2) not in ex.started


def test_a_lost_attempt_runs_again(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(2, 1): ["progress", "lost"]})
    result = master(memfs, ex).run(threading.Event())
    assert statuses(result, 2) == [(1, "lost"), (2, "committed")]
    lost = next(a for a in result.attempts if a.status == "lost")
    assert lost.worker == "fake:1" and "was lost" in lost.error
    assert read_parts(f"{memfs}/out") == DATA.upper()


def test_a_silent_attempt_loses_its_lease_and_is_cancelled(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(0, 1): ["hang"]})
    m = master(memfs, ex, lease_timeout=1.0, speculation=False)
    result = m.run(threading.Event())
    assert ex.cancelled == [(0, 1)]
    assert statuses(result, 0) == [(1, "lost"), (2, "committed")]
    assert "lease expired" in next(a.error for a in result.attempts if a.status == "lost")
    assert m.failed_attempts == 1
    assert ex.polls * POLL_INTERVAL > 1.0  # only after the lease ran out on the fake clock


def test_a_straggler_gets_a_speculative_attempt_that_wins(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(0, 1): ["progress"]})
    result = master(memfs, ex).run(threading.Event())
    assert statuses(result, 0) == [(2, "committed"), (1, "discarded")]
    spec = [a for a in result.attempts if a.speculative]
    assert [(a.block_id, a.attempt) for a in spec] == [(0, 2)]
    loser = next(a for a in result.attempts if a.status == "discarded")
    assert loser.error == "another attempt finished first" and (0, 1) in ex.cancelled
    assert read_parts(f"{memfs}/out") == DATA.upper()


def test_without_speculation_a_straggler_is_waited_for(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(0, 1): ["progress"] * 40 + ["ok"]})
    result = master(memfs, ex, speculation=False).run(threading.Event())
    assert statuses(result, 0) == [(1, "committed")]
    assert not any(a.speculative for a in result.attempts)


def test_two_attempts_finishing_together_commit_once(memfs: str) -> None:
    ex = FakeExecutor(FakeClock(), {(0, 1): ["ok_if_raced"], (0, 2): ["ok"]})
    fs = filesystem("memory")
    m = master(memfs, ex)
    commits: list[str] = []
    real_commit = m.output.commit

    def counting_commit(result: object, staging_path: str) -> None:
        commits.append(staging_path)
        real_commit(result, staging_path)  # type: ignore[arg-type]

    m.output.commit = counting_commit  # type: ignore[method-assign]
    result = m.run(threading.Event())
    assert statuses(result, 0) == [(1, "committed"), (2, "discarded")]
    assert sum("part-00000" in path for path in commits) == 1
    assert read_parts(f"{memfs}/out") == DATA.upper()
    assert not fs.exists(f"{memfs}/out/_temporary")


def test_bad_records_over_the_job_limit_fail_the_job(memfs: str) -> None:
    def picky(line: str) -> str:
        if line.endswith("5"):  # one line in ten
            raise ValueError(line)
        return line

    ex = FakeExecutor(FakeClock())
    with pytest.raises(JobError, match=r"records raised in the function, more than "
                                       r"max_bad_records=2; they are listed in "):
        master(memfs, ex, fn=picky, max_bad_records=2).run(threading.Event())


def test_bad_records_within_the_limit_are_skipped(memfs: str) -> None:
    def picky(line: str) -> str:
        if line.endswith("7"):  # one line in ten
            raise ValueError(line)
        return line

    ex = FakeExecutor(FakeClock())
    result = master(memfs, ex, fn=picky, max_bad_records=4).run(threading.Event())
    assert sum(b.bad_records for b in result.blocks) == 4
    assert len(read_parts(f"{memfs}/out").splitlines()) == len(LINES) - 4


def test_cancel_stops_the_workers_and_keeps_what_was_committed(memfs: str) -> None:
    cancel = threading.Event()
    ex = FakeExecutor(FakeClock(), {(1, 1): ["hang"]}, slots=1,
                      on_poll=lambda n: cancel.set() if n == 2 else None)
    m = master(memfs, ex)
    with pytest.raises(JobCancelledError, match=r"cancelled with 1 of \d+ blocks committed"):
        m.run(cancel)
    assert ex.closed and m.committed == 1
    fs = filesystem("memory")
    assert fs.exists(f"{memfs}/out/part-00000.txt")
    assert not fs.exists(f"{memfs}/out/_SUCCESS")
    assert not fs.exists(f"{memfs}/out/_temporary")


class Recorder:
    """A hook that notes where it fired."""

    def __init__(self) -> None:
        self.points: list[tuple[str, AttemptKey]] = []

    def fire(self, point: str, task: BlockTask) -> None:
        self.points.append((point, task.key))


def test_the_hook_travels_in_every_task_and_fires_at_three_points(memfs: str) -> None:
    hook = Recorder()
    m = master(memfs, FakeExecutor(FakeClock()), hook=hook)
    m.run(threading.Event())
    assert hook.points == [(point, (block, 1)) for block in range(len(m.plan.blocks))
                           for point in ("start", "during_write", "after_write")]


def test_a_cancel_while_the_last_blocks_commit_still_cancels(memfs: str) -> None:
    cancel = threading.Event()
    ex = FakeExecutor(FakeClock(), slots=3, on_poll=lambda n: cancel.set())
    m = master(memfs, ex)
    with pytest.raises(JobCancelledError, match=r"cancelled with 3 of 3 blocks committed"):
        m.run(cancel)
    assert not filesystem("memory").exists(f"{memfs}/out/_SUCCESS")


class CommitWatcher(FakeExecutor):
    """Notes, as each attempt starts, which part-files the master has published."""

    def __init__(self, out: str, **kwargs: object) -> None:
        super().__init__(FakeClock(), **kwargs)  # type: ignore[arg-type]
        self.out = out
        self.published_at_start: dict[AttemptKey, list[str]] = {}

    def run(self, task: BlockTask) -> None:
        fs = filesystem("memory")
        self.published_at_start[task.key] = sorted(
            p.rsplit("/", 1)[-1] for p in fs.glob(f"{self.out}/part-*"))
        super().run(task)


@pytest.mark.parametrize("slots", [1, 2])
def test_a_free_worker_gets_its_next_block_before_the_commit_of_its_last(
        memfs: str, slots: int) -> None:
    two_polls = {(block, 1): ["progress", "ok"] for block in range(40)}  # each attempt
    ex = CommitWatcher(f"{memfs.removeprefix('memory://')}/out", slots=slots,
                       script=two_polls)
    m = master(memfs, ex, block_size=40)
    m.run(threading.Event())
    assert read_parts(f"{memfs}/out") == DATA.upper() and len(m.plan.blocks) > 3 * slots
    # each attempt after the first ones started before the blocks that ended in the same
    # poll were committed: block k + slots starts while block k is still to publish
    for block in range(slots, len(m.plan.blocks)):
        assert f"part-{block - slots:05d}.txt" not in ex.published_at_start[(block, 1)]
        if block >= 2 * slots:  # the poll before had committed the blocks before those
            assert f"part-{block - 2 * slots:05d}.txt" in ex.published_at_start[(block, 1)]
