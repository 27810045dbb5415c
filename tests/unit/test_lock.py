"""The output lock as a state machine over real filesystems (memory and local disk), with
the clock moved by monkeypatching where a lease has to run out."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem

import blockproc as bp
from blockproc.output import OutputDir
from blockproc.output import lock as lock_module
from blockproc.output.lock import OutputLock
from blockproc.storage import create_exclusive, filesystem


@pytest.fixture(params=["memory", "file"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, str]:
    if request.param == "memory":
        return filesystem("memory"), f"/lock-tests/{time.time_ns()}/_blockproc"
    return filesystem("file"), str(tmp_path / "out" / "_blockproc")


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the wall clock and the monotonic clock of the lock module forward."""
    wall, mono = time.time() + seconds, time.monotonic() + seconds
    monkeypatch.setattr(lock_module.time, "time", lambda: wall)
    monkeypatch.setattr(lock_module.time, "monotonic", lambda: mono)


def test_generations_follow_each_other_and_nothing_is_deleted(state: tuple[Any, str]) -> None:
    fs, path = state
    first = OutputLock(fs, path, "job-1")
    assert first.acquire() == 1
    with pytest.raises(bp.OutputLockedError, match="being written by job job-1"):
        OutputLock(fs, path, "job-2").acquire()
    first.release()
    assert OutputLock(fs, path, "job-2").acquire() == 2
    names = sorted(n.rsplit("/", 1)[1] for n in fs.ls(f"{path}/lock", detail=False))
    assert names == ["0000000001.heartbeat", "0000000001.json", "0000000002.json"]


def test_a_lock_past_its_lease_is_taken_over_and_its_owner_fenced(
        state: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, path = state
    stalled = OutputLock(fs, path, "job-stalled")
    stalled.acquire()
    stalled.renew()
    later(monkeypatch, stalled.lease - 1)
    with pytest.raises(bp.OutputLockedError):  # not yet: the lease still runs
        OutputLock(fs, path, "job-early").acquire()
    later(monkeypatch, stalled.lease + 1)
    assert OutputLock(fs, path, "job-new").acquire() == 2
    with pytest.raises(bp.LockLostError, match=r"lost its lock .* to job job-new"):
        stalled.guard()  # past a third of the lease: it checks, and finds the successor
    stalled.release()  # not its lock any more: it writes nothing
    assert not fs.exists(f"{path}/lock/0000000001.heartbeat") or \
        json.loads(fs.cat_file(f"{path}/lock/0000000001.heartbeat"))["released"] is False


def test_guard_trusts_a_fresh_lease_without_touching_the_store(
        state: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> None:
    fs, path = state
    owner = OutputLock(fs, path, "job-1")
    owner.acquire()
    calls: list[str] = []
    monkeypatch.setattr(fs, "exists", lambda p: calls.append(p) or True)
    owner.guard()
    assert calls == []  # fresh: no round trip
    later(monkeypatch, owner.lease / 3 + 1)
    with pytest.raises(bp.LockLostError):  # stale enough to check; "exists" says taken
        owner.guard()
    assert calls


def test_an_unreadable_lock_is_held_until_its_age_says_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs, path = filesystem("file"), str(tmp_path / "_blockproc")
    (tmp_path / "_blockproc" / "lock").mkdir(parents=True)
    (tmp_path / "_blockproc" / "lock" / "0000000001.json").write_bytes(b'{"job_id": "jo')
    with pytest.raises(bp.OutputLockedError):
        OutputLock(fs, path, "job-2").acquire()
    later(monkeypatch, 60)
    assert OutputLock(fs, path, "job-2").acquire() == 2


def test_a_dead_process_on_this_host_frees_the_lock_at_once(tmp_path: Path) -> None:
    fs, path = filesystem("file"), str(tmp_path / "_blockproc")
    code = ("import sys; from blockproc.output.lock import OutputLock; "
            "from blockproc.storage import filesystem; "
            "OutputLock(filesystem('file'), sys.argv[1], 'job-dead').acquire()")
    subprocess.run([sys.executable, "-c", code, path], check=True)
    assert OutputLock(fs, path, "job-next").acquire() == 2


class RefusingStore(MemoryFileSystem):  # type: ignore[misc]
    """A store whose refused conditional create is a plain OSError (as SeaweedFS's is
    through s3fs), not FileExistsError."""

    protocol = "refusingstore"

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode == "xb" and self.exists(path):
            raise OSError(22, "At least one of the pre-conditions you specified did not hold")
        return super()._open(path, "wb" if mode == "xb" else mode, **kwargs)


def test_a_refused_create_is_decided_by_reading_back_not_by_exception_class() -> None:
    fs = RefusingStore()
    path = f"/excl-{time.time_ns()}/a"
    assert create_exclusive(fs, path, b"mine") is True
    assert create_exclusive(fs, path, b"theirs") is False  # OSError(22), read back: not ours
    assert fs.cat_file(path) == b"mine"
    assert create_exclusive(fs, path, b"mine") is True  # our own create, its answer lost


def test_a_failed_create_with_nothing_there_is_a_real_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fs = RefusingStore()
    monkeypatch.setenv("BLOCKPROC_IO_TRIES", "1")

    def broken(path: str, mode: str = "rb", **kwargs: Any) -> Any:
        raise PermissionError(13, "Access Denied")

    monkeypatch.setattr(fs, "_open", broken)
    with pytest.raises(PermissionError):
        create_exclusive(fs, f"/excl-{time.time_ns()}/b", b"x")


def test_renewals_failing_past_two_thirds_of_the_lease_stop_the_job(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fs = filesystem("memory")
    out = OutputDir(fs, f"/lock-renew-{time.time_ns()}", "job-1")
    out.lock.acquire()

    def unreachable() -> None:
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(out.lock, "renew", unreachable)
    out.heartbeat()  # the first failure is tolerated: it is tried again
    later(monkeypatch, out.lock.lease * 2 / 3 - 1)
    monkeypatch.setattr("blockproc.output.directory.time.monotonic", lock_module.time.monotonic)
    out.heartbeat()
    later(monkeypatch, out.lock.lease * 2 / 3 + 1)
    monkeypatch.setattr("blockproc.output.directory.time.monotonic", lock_module.time.monotonic)
    with pytest.raises(bp.StorageError, match="failed to renew the job's lock"):
        out.heartbeat()


def test_lease_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_LOCK_LEASE", "2.5")
    assert OutputLock(filesystem("memory"), "/x", "j").lease == 2.5
    monkeypatch.setenv("BLOCKPROC_LOCK_LEASE", "soon")
    with pytest.raises(bp.ConfigError, match="BLOCKPROC_LOCK_LEASE"):
        OutputLock(filesystem("memory"), "/x", "j")
