"""``blockproc.output.status()`` and ``verify()`` as a library: what ``blockproc status``
prints, returned as values, with blockproc errors (never SystemExit) for what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

import blockproc as bp
from blockproc.output import OutputLock, OutputStatus, status, verify
from blockproc.output.layout import STATE_DIR
from blockproc.storage import filesystem
from blockproc.testing import write_files
from tests.jobs import fail_on, fail_while

LINES = [f"line {i:03d}" for i in range(60)]
DATA = ("\n".join(LINES) + "\n").encode()


@pytest.fixture
def source(tmp_path: Path) -> str:
    return write_files(tmp_path.as_uri() + "/in", {"a.txt": DATA})[0]


def test_status_of_a_finished_output(tmp_path: Path, source: str) -> None:
    out = str(tmp_path / "out")
    res = bp.map_lines(str.upper, source, output=out, block_size=128, executor="inline")
    st = status(out)
    assert isinstance(st, OutputStatus)
    assert st.is_finished and st.job_id == res.job_id
    assert st.num_blocks == st.num_committed == len(res.parts) > 1
    assert st.committed == tuple(range(st.num_blocks))
    assert (st.records_in, st.records_out) == (len(LINES), len(LINES))
    assert st.bad_records == st.blocks_with_stderr == 0
    assert st.num_attempts == len(st.attempts) == st.num_blocks  # one attempt each
    assert st.earlier_blocks == st.earlier_attempts == 0
    assert st.lock_holder is None  # released after _SUCCESS
    assert st.manifest is not None and st.manifest["job_id"] == res.job_id
    assert verify(out) == []


def test_verify_names_a_changed_and_a_missing_part(tmp_path: Path, source: str) -> None:
    out = tmp_path / "out"
    bp.map_lines(str.upper, source, output=str(out), block_size=128, executor="inline")
    (out / "part-00001.txt").write_bytes(b"changed\n")
    (out / "part-00002.txt").unlink()
    assert verify(str(out)) == ["part-00001.txt", "part-00002.txt"]


def test_status_of_an_unfinished_output(tmp_path: Path, source: str) -> None:
    out = str(tmp_path / "out")
    with pytest.raises(bp.BlockFailedError):
        bp.map_lines(fail_on(LINES[-1]), source, output=out, block_size=128,
                     executor="inline", max_attempts=2)
    st = status(out)
    assert not st.is_finished and st.manifest is None
    assert st.job_id is not None and st.num_blocks > st.num_committed > 0
    assert st.num_blocks - 1 not in st.committed  # the block holding the bad line
    assert st.committed_attempts == st.num_committed  # each committed at its first try
    assert st.earlier_attempts >= st.num_committed + 2  # the failed run's attempts
    assert st.lock_holder is None
    with pytest.raises(bp.UnfinishedOutputError, match="no _SUCCESS"):
        verify(out)


def test_status_of_a_resumed_output_counts_the_earlier_run(
        tmp_path: Path, source: str) -> None:
    out = str(tmp_path / "out")
    flag = tmp_path / "flag"
    flag.touch()
    mapper = fail_while(str(flag), LINES[-1])
    with pytest.raises(bp.BlockFailedError):
        bp.map_lines(mapper, source, output=out, block_size=128, executor="inline",
                     max_attempts=1)
    before = status(out)
    flag.unlink()
    bp.map_lines(mapper, source, output=out, block_size=128, executor="inline",
                 if_exists="resume")
    st = status(out)
    assert st.is_finished and st.num_committed == st.num_blocks
    assert st.earlier_blocks == before.num_committed > 0
    assert st.earlier_attempts == before.num_committed + 1  # and the failed attempt
    assert len(st.attempts) == 1  # this run ran only the failed block
    assert st.num_attempts == st.earlier_attempts + 1
    assert verify(out) == []


def test_status_names_the_job_holding_the_lock(tmp_path: Path, source: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(bp.BlockFailedError):
        bp.map_lines(fail_on(LINES[-1]), source, output=str(out), block_size=128,
                     executor="inline", max_attempts=1)
    lock = OutputLock(filesystem("file"), str(out / STATE_DIR), "job-live", str(out))
    lock.acquire()
    try:
        holder = status(str(out)).lock_holder
        assert holder is not None and holder["job_id"] == "job-live"
    finally:
        lock.release()
    assert status(str(out)).lock_holder is None


@pytest.mark.parametrize("setup", ["missing", "foreign", "empty-success"])
def test_status_and_verify_refuse_what_is_not_a_blockproc_output(
        tmp_path: Path, setup: str) -> None:
    out = tmp_path / "out"
    if setup != "missing":
        out.mkdir()
        (out / ("notes.txt" if setup == "foreign" else "_SUCCESS")).write_bytes(b"")
    fragment = "not a blockproc manifest" if setup == "empty-success" else \
        "holds no blockproc output"
    for read in (status, verify):
        with pytest.raises(bp.ConfigError, match=fragment) as info:
            read(str(out))
        assert info.value.exit_code == 2
