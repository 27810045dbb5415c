"""The master freezes the objects a job keeps (``gc.freeze``) while it runs, so that the
collector's full passes do not walk a million results and attempts again and again, and
gives them back (``gc.unfreeze``) when the job ends, however it ends (issue 16)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

import blockproc.master
from blockproc.errors import BlockFailedError
from tests.unit.test_master import DATA, FakeClock, FakeExecutor, master, read_parts


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Freeze after every commit; nothing frozen before or after the test. Yields a list
    for ``gc.get_freeze_count()`` at each poll of the executor."""
    monkeypatch.setattr(blockproc.master, "FREEZE_EVERY", 1)
    gc.unfreeze()
    yield []
    gc.unfreeze()
    gc.enable()


def executor(seen: list[int], script: dict[tuple[int, int], list[str]] | None = None
             ) -> FakeExecutor:
    return FakeExecutor(FakeClock(), script,
                        on_poll=lambda _: seen.append(gc.get_freeze_count()))


def test_a_job_freezes_what_it_keeps_and_unfreezes_it_at_its_end(
        memfs: str, seen: list[int]) -> None:
    # the last block takes two polls: the executor is polled again after the commits
    master(memfs, executor(seen, {(2, 1): ["progress", "ok"]})).run(threading.Event())
    assert seen[0] == 0 and seen[-1] > 0  # frozen once a block was committed
    assert gc.get_freeze_count() == 0
    assert read_parts(f"{memfs}/out") == DATA.upper()


def test_a_failed_job_unfreezes_too(memfs: str, seen: list[int]) -> None:
    m = master(memfs, executor(seen, {(2, 1): ["progress", "fail"], (2, 2): ["fail"]}),
               max_attempts=2)
    with pytest.raises(BlockFailedError):
        m.run(threading.Event())
    assert seen[-1] > 0 and gc.get_freeze_count() == 0


def test_objects_frozen_by_the_process_stay_frozen_and_a_disabled_collector_stays_off(
        memfs: str, seen: list[int]) -> None:
    gc.freeze()  # as a server does before it forks
    frozen = gc.get_freeze_count()
    master(memfs, executor(seen)).run(threading.Event())
    # frozen objects only leave (freed); had the job frozen its own, more would be frozen
    assert max(seen) <= frozen and 0 < gc.get_freeze_count() <= frozen
    gc.unfreeze()
    gc.disable()
    seen.clear()
    master(f"{memfs}/2", executor(seen)).run(threading.Event())
    assert set(seen) == {0} and not gc.isenabled()
