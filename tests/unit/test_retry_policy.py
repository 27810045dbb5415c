"""One retry policy for every storage call: set once per process, honoured by storage's
own calls and by the output directory's (ledger, lock, status), which used to call
fsspec directly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from blockproc.output import OutputLock, read_ledger, status
from blockproc.storage import (
    RetryPolicy,
    default_retry,
    filesystem,
    retry_call,
    retry_policy,
    set_retry_policy,
    write_json_atomic,
)
from blockproc.storage.reading import RangeSource

NO_WAIT = RetryPolicy(tries=3, base_delay=0.0)


@pytest.fixture
def no_wait() -> Iterator[RetryPolicy]:
    previous = set_retry_policy(NO_WAIT)
    yield NO_WAIT
    set_retry_policy(previous)


def test_the_process_policy_is_the_environments_until_one_is_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_IO_TRIES", "6")
    assert retry_policy() == default_retry() == RetryPolicy(tries=6)
    previous = set_retry_policy(NO_WAIT)
    try:
        assert retry_policy() is NO_WAIT
    finally:
        set_retry_policy(previous)
    assert retry_policy() == RetryPolicy(tries=6)


def test_retry_call_uses_the_process_policy(no_wait: RetryPolicy) -> None:
    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise ConnectionResetError("reset by peer")

    with pytest.raises(ConnectionResetError) as info:
        retry_call(always, "to read 'x'")
    assert len(calls) == no_wait.tries
    assert "tried to read 'x' 3 times" in "".join(info.value.__notes__)


def flaky(monkeypatch: pytest.MonkeyPatch, fs: Any, method: str, failures: int) -> list[str]:
    """Make ``fs.<method>`` raise a transient error ``failures`` times; return the log."""
    real = getattr(fs, method)
    seen: list[str] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        seen.append(method)
        if len(seen) <= failures:
            raise ConnectionResetError(f"{method}: reset by peer")
        return real(*args, **kwargs)

    monkeypatch.setattr(fs, method, wrapper)
    return seen


def test_reading_the_ledger_rides_out_a_transient_listing_error(
        monkeypatch: pytest.MonkeyPatch, no_wait: RetryPolicy) -> None:
    fs = filesystem("memory")
    root = f"/retry-ledger-{time.time_ns()}"
    write_json_atomic(fs, f"{root}/_blockproc/committed/part-00003.txt.json", {"id": 3})
    seen = flaky(monkeypatch, fs, "ls", failures=2)
    assert list(read_ledger(fs, root)) == [3]
    assert len(seen) == 3


def test_the_lock_rides_out_a_transient_existence_check(
        monkeypatch: pytest.MonkeyPatch, no_wait: RetryPolicy) -> None:
    fs = filesystem("memory")
    lock = OutputLock(fs, f"/retry-lock-{time.time_ns()}/_blockproc", "job-1")
    seen = flaky(monkeypatch, fs, "exists", failures=2)
    assert lock.acquire() == 1
    assert len(seen) >= 3


def test_status_gives_up_after_the_policys_tries(
        monkeypatch: pytest.MonkeyPatch, no_wait: RetryPolicy) -> None:
    fs = filesystem("memory")
    seen = flaky(monkeypatch, fs, "exists", failures=100)
    with pytest.raises(ConnectionResetError):
        status(f"memory://retry-status-{time.time_ns()}")
    assert len(seen) == no_wait.tries


def test_a_range_source_reads_under_the_policy_in_force_when_a_read_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fs = filesystem("memory")
    path = f"/retry-range-{time.time_ns()}.bin"
    fs.pipe_file(path, b"0123456789")
    with RangeSource(fs, path) as source:  # made per block, before any failure
        seen = flaky(monkeypatch, source, "_read", failures=100)
        previous = set_retry_policy(RetryPolicy(tries=2, base_delay=0.0))
        try:
            with pytest.raises(ConnectionResetError):
                source.read(0, 4)
        finally:
            set_retry_policy(previous)
        assert len(seen) == 2
    with RangeSource(fs, path, retry=NO_WAIT) as source:
        seen = flaky(monkeypatch, source, "_read", failures=100)
        with pytest.raises(ConnectionResetError):
            source.read(0, 4)
        assert len(seen) == NO_WAIT.tries
