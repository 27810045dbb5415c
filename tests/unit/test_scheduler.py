"""The master's state machine, driven by a fake clock: pull order, leases, retries,
exactly-once commits and resume."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockproc.scheduler import RunningMedian, Scheduler


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(num_blocks: int, clock: FakeClock, **kwargs: object) -> Scheduler:
    return Scheduler(num_blocks, clock=clock, **kwargs)  # type: ignore[arg-type]


def speculate(s: Scheduler, block: int) -> tuple[int, int]:
    """Start a second attempt of a running block, as speculative execution does."""
    s.pending.appendleft(block)
    key = s.assign()
    assert key is not None and key[0] == block
    return key


# -- pull order ------------------------------------------------------------------------


def test_assign_hands_out_blocks_in_plan_order_then_none(clock: FakeClock) -> None:
    s = make(3, clock)
    assert [s.assign() for _ in range(4)] == [(0, 1), (1, 1), (2, 1), None]
    assert s.num_running == 3
    assert not s.is_finished


def test_scheduler_with_no_blocks_is_finished_at_once(clock: FakeClock) -> None:
    s = make(0, clock)
    assert s.is_finished
    assert s.assign() is None


def test_assign_starts_a_lease_at_the_current_time(clock: FakeClock) -> None:
    s = make(1, clock, lease_timeout=30.0)
    key = s.assign()
    assert key == (0, 1)
    lease = s.running[key]
    assert lease.started == 1000.0
    assert lease.deadline == 1030.0
    assert (lease.bytes_done, lease.records_done) == (0, 0)


def test_finished_once_every_block_is_committed(clock: FakeClock) -> None:
    s = make(2, clock)
    a, b = s.assign(), s.assign()
    assert a is not None and b is not None
    assert s.complete(a) == (True, [])
    assert not s.is_finished
    assert s.complete(b) == (True, [])
    assert s.is_finished
    assert s.num_running == 0
    assert s.committed == {0, 1}


def test_rejects_max_attempts_below_one(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="max_attempts must be >= 1, got 0"):
        make(1, clock, max_attempts=0)


# -- retries ---------------------------------------------------------------------------


def test_failed_attempt_is_retried_before_other_pending_blocks(clock: FakeClock) -> None:
    s = make(3, clock)
    first = s.assign()
    assert first == (0, 1)
    s.fail(first, "ValueError: boom")
    assert s.assign() == (0, 2)
    assert s.assign() == (1, 1)
    assert s.errors[0] == "ValueError: boom"


def test_block_fails_the_job_after_max_attempts(clock: FakeClock) -> None:
    s = make(2, clock, max_attempts=3)
    for number in (1, 2, 3):
        key = s.assign()
        assert key == (0, number)
        assert s.failed_block is None
        s.fail(key, f"error {number}")
    assert s.failed_block == 0
    assert s.errors[0] == "error 3"
    assert s.attempts_made[0] == 3
    assert s.assign() is None  # nothing more is started once the job has failed
    assert not s.is_finished


def test_default_max_attempts_is_four(clock: FakeClock) -> None:
    s = make(1, clock)
    for number in (1, 2, 3, 4):
        key = s.assign()
        assert key == (0, number)
        s.fail(key, "boom")
    assert s.failed_block == 0


def test_max_attempts_one_fails_on_the_first_error(clock: FakeClock) -> None:
    s = make(2, clock, max_attempts=1)
    key = s.assign()
    assert key is not None
    s.fail(key, "boom")
    assert s.failed_block == 0


def test_retry_succeeds_and_commits(clock: FakeClock) -> None:
    s = make(1, clock, max_attempts=2)
    first = s.assign()
    assert first is not None
    s.fail(first, "boom")
    second = s.assign()
    assert second == (0, 2)
    assert s.complete(second) == (True, [])
    assert s.is_finished
    assert s.failed_block is None


def test_fail_of_an_unknown_or_finished_attempt_is_ignored(clock: FakeClock) -> None:
    s = make(1, clock, max_attempts=1)
    key = s.assign()
    assert key is not None
    assert s.complete(key) == (True, [])
    s.fail(key, "late error")  # already finished: no effect
    s.fail((0, 99), "never started")
    assert s.failed_block is None
    assert s.errors == {}
    assert s.is_finished


def test_fail_while_another_attempt_runs_does_not_requeue_or_fail(clock: FakeClock) -> None:
    s = make(2, clock, max_attempts=2)
    first = s.assign()
    assert first == (0, 1)
    second = speculate(s, 0)
    assert second == (0, 2)
    s.fail(first, "boom")  # attempts are used up, but (0, 2) may still succeed
    assert s.failed_block is None
    assert s.assign() == (1, 1)  # block 0 was not queued again
    assert s.complete(second) == (True, [])
    assert 0 in s.committed


# -- exactly-once commits --------------------------------------------------------------


def test_first_success_commits_and_returns_the_other_attempts_to_cancel(
    clock: FakeClock,
) -> None:
    s = make(2, clock)
    first = s.assign()
    assert first == (0, 1)
    other_block = s.assign()
    assert other_block == (1, 1)
    second = speculate(s, 0)
    commit, cancel = s.complete(second)
    assert commit is True
    assert cancel == [first]
    assert first not in s.running  # its lease is gone
    assert other_block in s.running  # other blocks are untouched


def test_later_success_of_another_attempt_is_not_committed(clock: FakeClock) -> None:
    s = make(1, clock)
    first = s.assign()
    assert first is not None
    second = speculate(s, 0)
    assert s.complete(first) == (True, [second])
    assert s.complete(second) == (False, [])
    assert s.committed == {0}
    assert s.is_finished


def test_completing_the_same_attempt_twice_commits_once(clock: FakeClock) -> None:
    s = make(1, clock)
    key = s.assign()
    assert key is not None
    assert s.complete(key) == (True, [])
    assert s.complete(key) == (False, [])


def test_committed_block_is_not_handed_out_again(clock: FakeClock) -> None:
    s = make(2, clock)
    key = s.assign()
    assert key is not None
    s.pending.append(0)  # a stale queue entry for a block about to be committed
    assert s.complete(key) == (True, [])
    assert s.assign() == (1, 1)
    assert s.assign() is None


# -- leases and heartbeats -------------------------------------------------------------


def test_heartbeat_records_progress_and_renews_the_lease(clock: FakeClock) -> None:
    s = make(1, clock, lease_timeout=10.0)
    key = s.assign()
    assert key is not None
    clock.advance(8)
    s.heartbeat(key, bytes_done=4096, records_done=17)
    lease = s.running[key]
    assert (lease.bytes_done, lease.records_done) == (4096, 17)
    assert lease.deadline == clock.now + 10.0
    clock.advance(7)  # 15 s after the start, 7 s after the heartbeat
    assert s.expire() == []
    assert key in s.running


def test_lease_without_heartbeat_expires_and_the_block_is_requeued(clock: FakeClock) -> None:
    s = make(2, clock, lease_timeout=10.0)
    lost = s.assign()
    alive = s.assign()
    assert lost == (0, 1) and alive == (1, 1)
    clock.advance(6)
    s.heartbeat(alive, 1, 1)
    clock.advance(5)  # lost: 11 s without news; alive: 5 s
    assert s.expire() == [lost]
    assert lost not in s.running
    assert alive in s.running
    assert "lease expired" in s.errors[0]
    assert s.assign() == (0, 2)


def test_lease_is_not_expired_exactly_at_its_deadline(clock: FakeClock) -> None:
    s = make(1, clock, lease_timeout=10.0)
    key = s.assign()
    clock.advance(10)
    assert s.expire() == []
    clock.advance(0.001)
    assert s.expire() == [key]


def test_expired_leases_count_as_attempts_up_to_max_attempts(clock: FakeClock) -> None:
    s = make(1, clock, lease_timeout=1.0, max_attempts=2)
    assert s.assign() == (0, 1)
    clock.advance(2)
    assert s.expire() == [(0, 1)]
    assert s.assign() == (0, 2)
    clock.advance(2)
    assert s.expire() == [(0, 2)]
    assert s.failed_block == 0
    assert s.assign() is None


def test_heartbeat_of_a_finished_attempt_is_ignored(clock: FakeClock) -> None:
    s = make(1, clock)
    key = s.assign()
    assert key is not None
    s.complete(key)
    s.heartbeat(key, 10, 1)
    assert key not in s.running


def test_expire_reports_nothing_when_no_attempt_runs(clock: FakeClock) -> None:
    s = make(3, clock, lease_timeout=1.0)
    clock.advance(100)
    assert s.expire() == []


# -- resume ----------------------------------------------------------------------------


def test_resume_skips_blocks_already_done(clock: FakeClock) -> None:
    s = make(5, clock, done=[0, 2, 3])
    assert s.committed == {0, 2, 3}
    assert [s.assign(), s.assign(), s.assign()] == [(1, 1), (4, 1), None]
    assert not s.is_finished


def test_resume_with_every_block_done_is_finished(clock: FakeClock) -> None:
    s = make(3, clock, done=range(3))
    assert s.is_finished
    assert s.assign() is None


def test_resumed_blocks_finish_the_job_when_the_rest_commit(clock: FakeClock) -> None:
    s = make(3, clock, done={1})
    keys = [s.assign(), s.assign()]
    assert keys == [(0, 1), (2, 1)]
    for key in keys:
        assert key is not None
        assert s.complete(key) == (True, [])
    assert s.is_finished


def test_resume_ignores_done_ids_outside_the_plan(clock: FakeClock) -> None:
    # a stale ledger entry must not count as a committed block: block 2 still has to run
    s = make(3, clock, done=[0, 1, 7])
    assert not s.is_finished
    key = s.assign()
    assert key == (2, 1)
    assert s.complete(key) == (True, [])
    assert s.is_finished


# -- the running median, read now and then ---------------------------------------------

@given(st.lists(st.tuples(st.floats(min_value=0.0, max_value=1e12, allow_nan=False),
                          st.integers(0, 40)), max_size=300))
def test_the_median_of_rates_added_between_reads_is_the_median_of_all(
        steps: list[tuple[float, int]]) -> None:
    """Numbers added while nobody reads are sorted in one go at the next read (the
    scheduler reads the median only at the end of a job): the value is still exact."""
    m, numbers = RunningMedian(), []
    for x, read_now in steps:
        m.add(x)
        numbers.append(x)
        if read_now == 0:
            assert m.value == statistics.median(numbers)
    assert len(m) == len(numbers)
    assert m.value == (statistics.median(numbers) if numbers else 0.0)
    assert len(m) == len(numbers)
