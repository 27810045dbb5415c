"""When the scheduler calls a running attempt a straggler, with progress shaped as on an
object store: a worker fetches its whole block in one ranged GET before it decodes a byte,
so its reported progress stays 0 for most of a normal block's time, then climbs fast.
A normal block a little slower than typical must not be run twice; a block stalled on its
read or in the user's function must still get a speculative copy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from blockproc.scheduler import SPECULATION_SLOWDOWN, Scheduler

MiB = 2**20
SIZE = 64 * MiB


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def one_block_left(typical: float = 2.0) -> tuple[Scheduler, Clock, tuple[int, int]]:
    """Three 64 MiB blocks, two committed in ``typical`` seconds each; the third running,
    started at time 0 with nothing pending."""
    clock = Clock()
    s = Scheduler(3, clock=clock, wall_clock=clock, block_sizes=[SIZE] * 3)
    done = [s.assign(), s.assign()]
    clock.now = typical
    for key in done:
        assert key is not None
        s.complete(key)
    last = s.assign()
    assert last is not None
    clock.now = 0.0
    s.running[last].started = 0.0
    return s, clock, last


def test_a_normal_block_whose_get_is_slower_than_typical_is_not_run_twice() -> None:
    # typical block: 2 s (a 1.4 s GET, then 0.6 s decoding); this one's GET takes 2.6 s
    s, clock, last = one_block_left()
    for tick in range(1, 27):  # the GET: no progress reported
        clock.now = tick / 10
        assert s.stragglers() == [] and s.speculate() is None, clock.now
    for step, tick in enumerate(range(27, 33)):  # decoding: 0.6 s to the end
        clock.now = tick / 10
        s.heartbeat(last, SIZE * step // 6, step)
        assert s.stragglers() == [] and s.speculate() is None, clock.now
    assert s.complete(last) == (True, [])
    assert [a.speculative for a in s.history] == [False, False, False]


def test_a_block_stalled_on_its_read_gets_a_copy_after_twice_a_typical_block() -> None:
    s, clock, last = one_block_left()
    clock.now = 2 * SPECULATION_SLOWDOWN - 0.01
    assert s.speculate() is None
    clock.now = 2 * SPECULATION_SLOWDOWN
    assert s.stragglers() == [last]
    copy = s.speculate()
    assert copy == (last[0], 2) and s.running[copy].speculative
    assert s.complete(copy) == (True, [last])


def test_a_block_stalled_in_the_function_gets_a_copy() -> None:
    s, clock, last = one_block_left()
    clock.now = 1.6
    s.heartbeat(last, SIZE // 2, 1000)  # half done, then the function hangs
    clock.now = 3.99
    assert s.speculate() is None
    clock.now = 4.0
    assert s.speculate() == (last[0], 2)


@given(typical=st.floats(0.01, 100.0), fraction=st.floats(0.0, 3.0),
       progress=st.floats(0.0, 1.0))
def test_an_attempt_lags_exactly_once_it_has_run_twice_a_typical_block(
        typical: float, fraction: float, progress: float) -> None:
    s, clock, last = one_block_left(typical)
    clock.now = fraction * typical
    s.heartbeat(last, int(SIZE * progress), 1)
    lag_after = max(1.0, SPECULATION_SLOWDOWN * SIZE / s.rates.value)
    assert (s.stragglers() == [last]) == (clock.now >= lag_after)
