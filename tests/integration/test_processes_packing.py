"""The processes executor packs tiny blocks: a worker holds several attempts, sent in one
message and run one after the other. Real worker processes: a worker killed (SIGKILL)
while it holds a group loses only the attempt it was running; the others run elsewhere
as they are; cancel drops, skips or kills as each attempt stands; every block is
committed exactly once, with the output of a clean run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import blockproc as bp
from blockproc.executors import Event, Failed, Finished, Progress, processes
from blockproc.executors.processes import (
    MAX_HELD,
    PACK_BYTES,
    PACK_SECONDS,
    ProcessExecutor,
    held_limit,
)
from blockproc.formats import from_dict
from blockproc.job import Job, JobOptions, run_job
from blockproc.output import part_name, verify_output
from blockproc.storage import resolve
from blockproc.task import BlockTask
from blockproc.testing import read_parts
from blockproc.worker import Mapper, run_block
from tests import jobs

DATA = b"".join(f"{i:05d}\n".encode() for i in range(6000))  # 36,000 bytes
BLOCK_SIZE = 120  # 300 blocks of 20 lines


@dataclass(frozen=True)
class KillAt:
    """Kill the worker (SIGKILL) in attempt 1 of ``block``, at ``point``, after stalling
    ``stall`` seconds (so its worker surely holds the next attempts by then)."""

    block: int
    point: str = "start"
    stall: float = 0.2

    def fire(self, point: str, task: Any) -> None:
        if task.block.id == self.block and task.attempt == 1 and point == self.point:
            time.sleep(self.stall)
            os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class StallAt:
    """Touch ``marker`` and sleep ``seconds`` at the start of ``block``'s attempt 1."""

    block: int
    seconds: float
    marker: str

    def fire(self, point: str, task: Any) -> None:
        if task.block.id == self.block and task.attempt == 1 and point == "start":
            Path(self.marker).touch()
            time.sleep(self.seconds)


class Watched(ProcessExecutor):
    """A processes executor that notes how many attempts the workers held before each
    call that reported a lost attempt."""

    def __init__(self, num_slots: int) -> None:
        super().__init__(num_slots)
        self.held_at_loss: list[int] = []
        self.most_held = 0

    def events(self, timeout: float) -> list[Event]:
        before = self.holding
        events = super().events(timeout)
        self.most_held = max(self.most_held, *before, *self.holding)
        if any(isinstance(e, Failed) and e.lost for e in events):
            self.held_at_loss.append(max(before))
        return events


def run(root: Path, executor: ProcessExecutor, hook: Any = None,
        **options: Any) -> tuple[bp.JobResult, Path]:
    src = root / "in.log"
    src.write_bytes(DATA)
    plan = bp.plan(str(src), block_size=BLOCK_SIZE)
    out = root / "out"
    fs, path = resolve(str(out))
    job = Job(plan, Mapper("record", jobs.identity), output_fs=fs, output_path=path,
              executor=executor, options=JobOptions(speculation=False, hook=hook, **options))
    run_job(job)
    return job.result(), out


def assert_exactly_once(res: bp.JobResult, out: Path) -> None:
    """The output of a clean run; each block committed once, into its own part-file."""
    num_blocks = len(DATA) // BLOCK_SIZE
    assert read_parts(str(out)) == DATA
    assert sorted(p.name for p in out.glob("part-*")) == \
        [part_name(i, ".txt") for i in range(num_blocks)]
    fs, path = resolve(str(out))
    assert verify_output(fs, path, json.loads((out / "_SUCCESS").read_text())) == []
    committed = sorted(a.block_id for a in res.attempts if a.status == "committed")
    assert committed == list(range(num_blocks))
    assert not (out / "_temporary").exists()


# -- how many attempts a worker holds ----------------------------------------------------

@given(st.floats(1, 2 * PACK_BYTES), st.floats(1, 2 * PACK_BYTES),
       st.one_of(st.none(), st.floats(0, 2 * PACK_SECONDS)), st.floats(0, 2 * PACK_SECONDS))
def test_held_limit_is_bounded_and_shrinks_as_blocks_grow_or_slow(
        small: float, big: float, seconds: float | None, slower: float) -> None:
    small, big = min(small, big), max(small, big)
    limit = held_limit(small, seconds)
    assert 1 <= limit <= MAX_HELD
    assert held_limit(big, seconds) <= limit
    if seconds is not None:
        assert held_limit(small, max(seconds, slower)) <= limit
    assert held_limit(PACK_BYTES, seconds) == 1
    assert held_limit(small, PACK_SECONDS) == 1


def test_tiny_blocks_are_packed_and_big_ones_are_not(tmp_path: Path) -> None:
    executor = Watched(2)
    res, out = run(tmp_path, executor)
    assert_exactly_once(res, out)
    assert executor.most_held > 2  # groups were held (once attempts had been timed)
    assert all(a.attempt == 1 for a in res.attempts)
    assert held_limit(64 * 2**20, None) == held_limit(PACK_BYTES, 0.0) == 1


# -- a worker killed while it holds a group -------------------------------------------

@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_held=st.sampled_from([1, 2, 3, 7, 32]), block=st.integers(120, 280),
       point=st.sampled_from(["start", "during_write", "after_write"]))
def test_worker_killed_holding_a_group_loses_only_its_running_attempt(
        max_held: int, block: int, point: str) -> None:
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as tmp:
        patch.setattr(processes, "MAX_HELD", max_held)
        executor = Watched(2)
        res, out = run(Path(tmp), executor, KillAt(block, point))
        assert_exactly_once(res, out)
        failed = [(a.block_id, a.attempt, a.status) for a in res.attempts
                  if a.status != "committed"]
        assert failed == [(block, 1, "lost")]  # the others it held ran elsewhere, as attempt 1
        assert all(a.attempt == 1 for a in res.attempts if a.block_id != block)
        assert executor.held_at_loss and executor.held_at_loss[0] >= min(max_held, 2)


def test_attempts_waiting_behind_a_stuck_one_keep_their_lease(tmp_path: Path) -> None:
    """Block 150's first attempt hangs past its lease: only it expires (its worker is
    killed); the attempts waiting behind it have not started, and run elsewhere as
    they are."""
    executor = Watched(2)
    res, out = run(tmp_path, executor, StallAt(150, 4.0, str(tmp_path / "stuck")),
                   lease_timeout=2.0)
    assert_exactly_once(res, out)
    assert [(a.block_id, a.attempt, a.status) for a in res.attempts
            if a.status != "committed"] == [(150, 1, "lost")]
    assert executor.most_held > 2


# -- cancel ------------------------------------------------------------------------------

def tasks(root: Path, hook: Any) -> list[BlockTask]:
    """Tasks of the first blocks, staged under ``root / "stage"`` (no master)."""
    src = root / "in.log"
    src.write_bytes(DATA)
    plan = bp.plan(str(src), block_size=BLOCK_SIZE)
    fs, _ = resolve(str(root))
    (root / "stage").mkdir()
    fmt = from_dict(plan.format)
    return [BlockTask(b, 1, len(plan.blocks), plan.file(b.path), fmt, fs, fs,
                      part_name(b.id, ".txt"), str(root / "stage" / f"{b.id}.attempt-1"),
                      hook=hook) for b in plan.blocks[:6]]


def collect(executor: ProcessExecutor, until: set[tuple[int, int]]) -> list[Event]:
    """Events until every key of ``until`` has ended (or 60 s)."""
    seen: list[Event] = []
    deadline = time.monotonic() + 60
    while not until <= {e.key for e in seen if not isinstance(e, Progress)}:
        assert time.monotonic() < deadline, f"still waiting for {until}; saw {seen}"
        seen += executor.events(0.1)
    return seen


@pytest.fixture
def packs_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packing by size alone: these tests need a worker to hold a group, and on a loaded
    machine one tiny attempt can take over PACK_SECONDS / 4, which would allow fewer
    (the time rule has its own test above)."""
    monkeypatch.setattr(processes, "PACK_SECONDS", 3600.0)


@pytest.mark.usefixtures("packs_by_size")
def test_cancel_drops_an_unsent_attempt_and_skips_a_waiting_one(tmp_path: Path) -> None:
    executor = ProcessExecutor(1)
    ts = tasks(tmp_path, StallAt(0, 1.0, str(tmp_path / "started")))
    executor.start(Mapper("record", jobs.identity))
    try:
        executor.run(ts[5])  # one attempt ends first: the worker may then hold a group
        seen = collect(executor, {(5, 1)})
        assert executor.held_limit > 3
        for task in ts[:4]:
            executor.run(task)
        executor.cancel((3, 1))  # not sent yet: dropped
        executor.events(0)
        assert executor.holding == [3]  # 0 (stalled), then 1 and 2 waiting
        executor.cancel((1, 1))  # waiting behind the stalled block 0: skipped
        seen += collect(executor, {(0, 1), (2, 1)})
        time.sleep(0.3)
        seen += executor.events(0.1)
    finally:
        executor.close()
    ended = [e.key for e in seen if isinstance(e, (Finished, Failed))]
    assert sorted(ended) == [(0, 1), (2, 1), (5, 1)]
    assert all(isinstance(e, Finished) for e in seen if not isinstance(e, Progress))
    assert not (tmp_path / "stage" / "1.attempt-1").exists()  # never ran
    assert not (tmp_path / "stage" / "3.attempt-1").exists()


@pytest.mark.usefixtures("packs_by_size")
def test_idle_slots_counts_workers_that_hold_nothing(tmp_path: Path) -> None:
    """Attempts queued behind a stalled one are running for the master, yet a worker may
    hold nothing: the master's speculation asks ``idle_slots``, not ``num_running``."""
    executor = ProcessExecutor(2)
    ts = tasks(tmp_path, StallAt(0, 1.5, str(tmp_path / "started")))
    executor.start(Mapper("record", jobs.identity))
    try:
        assert executor.idle_slots == 2
        executor.run(ts[4])
        executor.run(ts[5])
        collect(executor, {(4, 1), (5, 1)})  # attempts ended: workers may now hold groups
        assert executor.idle_slots == 2
        for task in ts[:4]:
            executor.run(task)
        assert executor.idle_slots == 0  # four waiting to be sent, for two idle workers
        seen: list[Event] = []
        deadline = time.monotonic() + 60
        while executor.idle_slots == 0:  # until the other worker runs out of attempts
            assert time.monotonic() < deadline, f"no worker went idle: {seen}"
            seen += executor.events(0.05)
        assert (0, 1) not in {e.key for e in seen if isinstance(e, Finished)}  # stalled
        assert executor.idle_slots == 1 and sorted(executor.holding)[0] == 0
        assert max(executor.holding) >= 1  # the stalled worker: block 0, maybe more behind
    finally:
        executor.close()


@pytest.mark.usefixtures("packs_by_size")
def test_cancel_of_a_running_attempt_kills_its_worker_and_requeues_the_waiting(
        tmp_path: Path) -> None:
    executor = ProcessExecutor(1)
    marker = tmp_path / "started"
    ts = tasks(tmp_path, StallAt(0, 60.0, str(marker)))
    executor.start(Mapper("record", jobs.identity))
    try:
        executor.run(ts[5])  # one attempt ends first: the worker may then hold a group
        collect(executor, {(5, 1)})
        for task in ts[:2]:
            executor.run(task)
        executor.events(0)
        assert executor.holding == [2]
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline
            executor.events(0.05)
        started = time.monotonic()
        executor.cancel((0, 1))
        assert time.monotonic() - started < 5
        seen = collect(executor, {(1, 1)})
    finally:
        executor.close()
    assert [(type(e).__name__, e.key) for e in seen if not isinstance(e, Progress)] \
        == [("Finished", (1, 1))]  # (1, 1) had not started: it ran again as it was
    clean = str(tmp_path / "clean")
    run_block(dataclasses.replace(ts[1], staging_path=clean, hook=None),
              Mapper("record", jobs.identity), lambda done, records: None)
    assert (tmp_path / "stage" / "1.attempt-1").read_bytes() == Path(clean).read_bytes()


def test_cancelled_job_of_tiny_blocks_stops_and_resumes_exactly_once(tmp_path: Path) -> None:
    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    out = tmp_path / "out"
    job = bp.submit(bp.plan(str(src), block_size=BLOCK_SIZE), jobs.slow(0.002),
                    output=str(out), workers=2, executor="processes")
    deadline = time.monotonic() + 60
    while len(list(out.glob("part-*"))) < 20:
        assert time.monotonic() < deadline and not job.done()
        time.sleep(0.05)
    job.cancel()
    assert isinstance(job.exception(timeout=30), bp.JobCancelledError)
    assert not [p for p in __import__("multiprocessing").active_children()
                if p.name == "blockproc-worker"]
    kept = len(list(out.glob("part-*")))
    res = bp.map_lines(jobs.identity, str(src), output=str(out), block_size=BLOCK_SIZE,
                       workers=2, executor="processes", if_exists="resume")
    assert read_parts(str(out)) == DATA
    assert len(res.blocks) == len(DATA) // BLOCK_SIZE
    assert kept >= 20
