"""A worker's exception comes back like concurrent.futures': the user's exception is the
``__cause__`` of BlockFailedError, its traceback text attached once, text only when the
exception cannot make the trip."""

from __future__ import annotations

import copyreg
import pickle
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
from blockproc.errors import RemoteTraceback
from blockproc.executors.base import Failed, failure_from, pickle_exception
from tests import jobs

LINES = [f"line {i:04d}" for i in range(200)]


class TwoArgError(Exception):
    """Cannot be rebuilt from its pickle: ``__init__`` takes two arguments."""

    def __init__(self, what: str, where: int) -> None:
        super().__init__(f"{what} at {where}")


class LockedError(Exception):
    """Cannot be pickled at all: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def raise_two_arg(line: str) -> str:
    raise TwoArgError("odd", 3)


def raise_locked(line: str) -> str:
    raise LockedError("holds a lock")


def write_input(tmp_path: Path) -> str:
    src = tmp_path / "in.log"
    src.write_text("".join(f"{line}\n" for line in LINES))
    return str(src)


@pytest.mark.parametrize("executor", ["inline", "threads", "processes"])
def test_the_users_exception_is_the_cause(tmp_path: Path, executor: str) -> None:
    bad = LINES[77]
    with pytest.raises(bp.BlockFailedError) as info:
        try:
            bp.map_lines(jobs.fail_on(bad), write_input(tmp_path), output=str(tmp_path / "o"),
                         executor=executor, workers=2, max_attempts=1)
        except ValueError:  # pragma: no cover - the job error is no ValueError
            pytest.fail("except ValueError caught the job's error")
    err = info.value
    assert type(err.__cause__) is ValueError
    assert str(err.__cause__) == f"bad record {bad!r}"
    remote = err.__cause__.__cause__
    assert isinstance(remote, RemoteTraceback) and "in mapper" in remote.text
    assert err.remote_traceback == remote.text


def test_the_remote_traceback_is_printed_once(tmp_path: Path) -> None:
    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_lines(jobs.fail_on(LINES[5]), write_input(tmp_path), output=str(tmp_path / "o"),
                     executor="processes", workers=1, max_attempts=1)
    printed = "".join(traceback.format_exception(info.value))
    assert printed.count("in mapper") == 1, printed
    assert "in mapper" not in str(info.value)  # the message keeps the summary line only


@pytest.mark.parametrize("fn", [raise_two_arg, raise_locked], ids=["unrebuildable", "unpicklable"])
def test_an_exception_that_cannot_travel_comes_back_as_text(
        tmp_path: Path, fn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # distributed installs tblib's pickling for every exception class loaded when it is
    # first imported (tblib rebuilds through __new__, so TwoArgError would travel): the
    # case is the plain-pickle one, whatever ran before in this process.
    for cls in (TwoArgError, LockedError):
        monkeypatch.delitem(copyreg.dispatch_table, cls, raising=False)
    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_lines(fn, write_input(tmp_path), output=str(tmp_path / "o"), executor="threads",
                     max_attempts=1)
    err = info.value
    assert isinstance(err.__cause__, RemoteTraceback)
    assert fn.__name__ in err.remote_traceback
    assert "Error" in str(err)


def test_a_block_failed_error_keeps_its_cause_through_pickle(tmp_path: Path) -> None:
    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_lines(jobs.fail_on(LINES[0]), write_input(tmp_path), output=str(tmp_path / "o"),
                     executor="inline", max_attempts=1)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy.__cause__) is ValueError and copy.__cause__.args == info.value.__cause__.args
    assert copy.remote_traceback == info.value.remote_traceback != ""


def test_a_failure_whose_class_is_unknown_to_the_master_falls_back_to_text() -> None:
    failed = failure_from((0, 1), KeyError("k"), "host:1")
    assert failed.exception == pickle_exception(KeyError("k")) != b""
    broken = Failed((0, 1), failed.error, failed.traceback, exception=b"not a pickle")
    cause = broken.cause()
    assert isinstance(cause, RemoteTraceback) and "KeyError" in cause.text
