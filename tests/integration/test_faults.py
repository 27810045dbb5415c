"""Fault tolerance under real faults: killed workers and masters, stragglers, locks,
poison records, resource faults, and a seeded fault-injection suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

import blockproc as bp
from blockproc.executors import make_executor
from blockproc.job import Job, JobOptions, run_job
from blockproc.output import read_ledger, verify_output
from blockproc.storage import resolve
from blockproc.testing import read_parts
from blockproc.worker import Mapper
from tests import jobs
from tests.faults import KINDS, FaultPlan

LINES = [f"{i:06d} {'z' * (i % 23)}" for i in range(4000)]
DATA = ("\n".join(LINES) + "\n").encode()


def write_input(root: Path, data: bytes = DATA) -> str:
    path = root / "input" / "in.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def manifest(output: str) -> dict:
    return json.loads(Path(output, "_SUCCESS").read_text())


def checksums(output: str) -> list[str]:
    return [b["checksum"] for b in manifest(output)["blocks"]]


# -- speculation -----------------------------------------------------------------------

def slow_first_attempt(marker: str, trigger: str, seconds: float) -> object:
    def mapper(line: str) -> str:
        if line == trigger and not Path(marker).exists():
            Path(marker).write_text("slow")
            time.sleep(seconds)
        else:
            time.sleep(0.0005)
        return line
    return mapper


def test_speculation_finishes_a_straggler_in_about_the_time_of_the_others(
        tmp_path: Path) -> None:
    src = write_input(tmp_path)
    out = str(tmp_path / "out")
    block_size = 4096  # 19 blocks of ~210 lines, ~0.1 s each
    plan = bp.plan(src, block_size=block_size)
    slow_block = 2
    middle = (plan.blocks[slow_block].start + plan.blocks[slow_block].end) // 2
    trigger = DATA[DATA.rindex(b"\n", 0, middle) + 1:DATA.index(b"\n", middle)].decode()
    slow = 30 * 0.35  # 30 times a normal block (~0.1 s), with a margin for a busy machine
    started = time.monotonic()
    res = bp.map_lines(slow_first_attempt(str(tmp_path / "m"), trigger, slow),
                       src, output=out, block_size=block_size, workers=2)
    wall = time.monotonic() - started
    assert read_parts(out) == DATA
    assert wall < slow / 2, f"took {wall:.1f}s: speculation did not help"
    entry = manifest(out)["blocks"][slow_block]
    assert entry["attempt"] == 2
    tries = [a for a in res.attempts if a.block_id == slow_block]
    assert {(a.attempt, a.status, a.speculative) for a in tries} == \
        {(1, "discarded", False), (2, "committed", True)}
    assert len(list(Path(out).glob(f"part-{slow_block:05d}*"))) == 1


def test_speculation_can_be_turned_off(tmp_path: Path) -> None:
    src = write_input(tmp_path)
    trigger = LINES[100]
    res = bp.map_lines(slow_first_attempt(str(tmp_path / "m"), trigger, 2.5), src,
                       output=str(tmp_path / "out"), block_size=4096, workers=2,
                       speculation=False)
    assert all(a.attempt == 1 and a.status == "committed" for a in res.attempts)


# -- master crash and resume -----------------------------------------------------------

MASTER_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import blockproc as bp
from tests import jobs
bp.map_lines(jobs.slow(0.001), {src!r}, output={out!r}, block_size=2048, workers=2,
             if_exists={if_exists!r})
"""


def wait_for_commits(output: str, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(read_ledger(*resolve(output)))
        if done >= at_least:
            return done
        time.sleep(0.02)
    raise AssertionError(f"fewer than {at_least} blocks committed in {timeout}s")


@pytest.mark.parametrize("how", ["api", "cli"])
def test_master_killed_mid_job_resumes_to_identical_output(tmp_path: Path, how: str) -> None:
    src = write_input(tmp_path)
    clean, out = str(tmp_path / "clean"), str(tmp_path / "out")
    bp.map_lines(jobs.identity, src, output=clean, block_size=2048, executor="inline")
    root = str(Path(__file__).resolve().parents[2])
    if how == "api":
        code = textwrap.dedent(MASTER_SCRIPT).format(root=root, src=src, out=out,
                                                     if_exists="error")
        command = [sys.executable, "-c", code]
    else:
        (tmp_path / "slowmod.py").write_text(
            "import time\ndef f(line):\n    time.sleep(0.001)\n    return line\n")
        command = [sys.executable, "-m", "blockproc", "run", src, "-o", out, "--map",
                   "slowmod:f", "--block-size", "2048", "--workers", "2"]
    master = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        before = wait_for_commits(out, 3)
    finally:
        master.send_signal(signal.SIGKILL)
        master.wait(timeout=30)
    assert not Path(out, "_SUCCESS").exists()
    committed = set(read_ledger(*resolve(out)))
    assert len(committed) >= before
    res = bp.map_lines(jobs.identity, src, output=out, block_size=2048, workers=2,
                       if_exists="resume")
    assert {a.block_id for a in res.attempts if a.status == "committed"} == \
        set(range(len(res.blocks))) - committed
    assert checksums(out) == checksums(clean)
    assert read_parts(out) == read_parts(clean) == DATA
    assert not Path(out, "_temporary").exists()
    assert verify_output(*resolve(out), manifest(out)) == []


# -- one job per output ----------------------------------------------------------------

def test_second_job_on_a_live_output_is_refused_naming_the_first(tmp_path: Path) -> None:
    src = write_input(tmp_path)
    out = str(tmp_path / "out")
    first = bp.submit(bp.plan(src, block_size=1024), jobs.slow(0.002), output=out,
                      executor="threads", workers=1)
    try:
        wait_for_commits(out, 1)
        for mode in ("error", "overwrite", "resume"):
            with pytest.raises(bp.OutputExistsError,
                               match=f"being written by job {first.job_id}"):
                bp.map_lines(jobs.upper, src, output=out, executor="inline",
                             block_size=1024, if_exists=mode)  # type: ignore[arg-type]
    finally:
        first.cancel()
    with pytest.raises(bp.JobCancelledError):
        first.result(timeout=30)
    res = bp.map_lines(jobs.identity, src, output=out, executor="inline", block_size=1024,
                       if_exists="resume")
    assert read_parts(out) == DATA and res.num_records <= len(LINES)


def plant_lock(out: Path, generation: int, **holder: object) -> Path:
    """Write generation ``generation`` of an output's lock, as a job would have taken it."""
    lock = out / "_blockproc" / "lock" / f"{generation:010d}.json"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"generation": generation, **holder}))
    return lock


@pytest.mark.parametrize("stale", ["dead_pid", "old_heartbeat"])
def test_lock_of_a_dead_job_is_taken_over(tmp_path: Path, stale: str) -> None:
    src = write_input(tmp_path)
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = {"job_id": "job-dead", "host": os.uname().nodename, "pid": dead.pid,
              "created": time.time()}
    if stale == "old_heartbeat":
        holder.update(host="elsewhere", pid=1, created=time.time() - 3600)
    plant_lock(out, 1, **holder)
    res = bp.map_lines(jobs.upper, src, output=str(out), executor="inline",
                       if_exists="overwrite")
    assert read_parts(str(out)) == DATA.upper()
    taken = json.loads((out / "_blockproc" / "lock" / "0000000002.json").read_text())
    assert taken["job_id"] == res.job_id  # the next generation, never a rewrite of the old
    assert json.loads((out / "_blockproc" / "lock" / "0000000001.json").read_text()) == \
        {"generation": 1, **holder}
    released = json.loads((out / "_blockproc" / "lock" / "0000000002.heartbeat").read_text())
    assert released["released"] is True


@pytest.mark.parametrize("content", ["live", "half_written"])
def test_lock_of_a_live_job_elsewhere_is_respected(tmp_path: Path, content: str) -> None:
    src = write_input(tmp_path)
    out = tmp_path / "out"
    lock = plant_lock(out, 1, job_id="job-elsewhere", host="elsewhere", pid=1,
                      created=time.time())
    if content == "half_written":  # unreadable, but recent: held until its age says not
        lock.write_bytes(b'{"job_id": "job-elsew')
    before = lock.read_bytes()
    match = r"job-elsewhere.*on elsewhere" if content == "live" else "being written by job"
    with pytest.raises(bp.OutputLockedError, match=match):
        bp.map_lines(jobs.upper, src, output=str(out), executor="inline",
                     if_exists="overwrite")
    assert lock.read_bytes() == before
    assert sorted(p.name for p in lock.parent.iterdir()) == ["0000000001.json"]


# -- cancellation ----------------------------------------------------------------------

def test_cancel_kills_busy_processes_within_seconds(tmp_path: Path) -> None:
    src = write_input(tmp_path)
    job = bp.submit(bp.plan(src, block_size=100_000), jobs.slow(0.05),
                    output=str(tmp_path / "out"), workers=2)
    time.sleep(1.0)
    started = time.monotonic()
    job.cancel()
    assert isinstance(job.exception(timeout=30), bp.JobCancelledError)
    assert time.monotonic() - started < 3
    assert not [p for p in __import__("multiprocessing").active_children()
                if p.name == "blockproc-worker"]


# -- poison records --------------------------------------------------------------------

def test_error_names_the_record_byte_offset(tmp_path: Path) -> None:
    src = write_input(tmp_path)
    bad = LINES[2345]
    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_lines(jobs.fail_on(bad), src, output=str(tmp_path / "out"),
                     executor="inline", block_size=4096, max_attempts=1)
    assert f"at byte offset {DATA.index(bad.encode())}: {bad!r}" in str(info.value)


def test_bad_records_are_skipped_and_logged(tmp_path: Path) -> None:
    src = write_input(tmp_path)
    out = str(tmp_path / "out")
    bad = {LINES[10], LINES[2000], LINES[2001]}

    def fn(line: str) -> str:
        if line in bad:
            raise ValueError(f"cannot parse {line!r}")
        return line

    res = bp.map_lines(fn, src, output=out, executor="threads", block_size=4096,
                       max_bad_records=3)
    assert read_parts(out) == b"".join(ln.encode() + b"\n" for ln in LINES if ln not in bad)
    assert manifest(out)["totals"]["bad_records"] == 3
    assert sum(b.bad_records for b in res.blocks) == 3
    logged = [json.loads(line) for f in sorted(Path(out, "_errors").glob("*.jsonl"))
              for line in f.read_text().splitlines()]
    assert sorted(e["offset"] for e in logged) == sorted(DATA.index(b.encode()) for b in bad)
    assert all("ValueError: cannot parse" in e["error"] for e in logged)
    assert {e["preview"] for e in logged} == {repr(b) for b in bad}


def test_too_many_bad_records_fail_the_job(tmp_path: Path) -> None:
    src = write_input(tmp_path)
    bad = {LINES[10], LINES[3000]}  # two different blocks

    def fn(line: str) -> str:
        if line in bad:
            raise ValueError("bad")
        return line

    with pytest.raises(bp.JobError, match="more than max_bad_records=1"):
        bp.map_lines(fn, src, output=str(tmp_path / "a"), executor="inline",
                     block_size=4096, max_bad_records=1)
    with pytest.raises(bp.BlockFailedError, match=r"was not retried.*max_bad_records=0"):
        bp.map_lines(fn, src, output=str(tmp_path / "b"), executor="inline",
                     block_size=4096, max_bad_records=0)


# -- resource faults -------------------------------------------------------------------

def test_record_larger_than_max_record_size_fails_without_retries(tmp_path: Path) -> None:
    src = write_input(tmp_path, DATA + b"x" * 20_000 + b"\n" + DATA)
    with pytest.raises(bp.BlockFailedError, match=r"was not retried.*max_record_size") as info:
        bp.map_lines(jobs.identity, src, output=str(tmp_path / "out"), executor="inline",
                     block_size=4096, max_record_size=8192)
    assert info.value.attempt == 1


class FullDiskFileSystem(LocalFileSystem):
    """A local filesystem whose part-file writes fail with ENOSPC after 100 bytes."""

    protocol = "fulldisk"
    root_marker = "/"

    def _open(self, path: str, mode: str = "rb", **kwargs: object) -> object:
        f = super()._open(path, mode, **kwargs)
        if "w" in mode and "/_temporary/" in path:
            return _FillingFile(f)
        return f


class _FillingFile:
    def __init__(self, f: object) -> None:
        self._f = f
        self._written = 0

    def write(self, data: bytes) -> int:
        self._written += len(data)
        if self._written > 100:
            raise OSError(28, "No space left on device")
        return self._f.write(data)  # type: ignore[attr-defined,no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._f, name)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()  # type: ignore[attr-defined]


def test_output_that_cannot_be_written_fails_clearly_with_nothing_corrupt(
        tmp_path: Path) -> None:
    fsspec.register_implementation("fulldisk", FullDiskFileSystem, clobber=True)
    src = write_input(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(bp.BlockFailedError, match="No space left on device"):
        bp.map_lines(jobs.identity, src, output=f"fulldisk://{out}", executor="threads",
                     block_size=4096, max_attempts=2)
    assert not (out / "_SUCCESS").exists()
    assert not list(out.glob("part-*"))
    assert not (out / "_temporary").exists()


# -- the fault-injection suite ---------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_random_faults_lose_and_duplicate_nothing(tmp_path: Path, seed: int) -> None:
    data = b"".join(f"{i:05d}\n".encode() for i in range(8000))  # 48000 bytes
    src = write_input(tmp_path, data)
    plan = bp.plan(src, block_size=200)
    assert len(plan.blocks) >= 200
    faults = FaultPlan.random(seed, len(plan.blocks), num_faults=24)
    assert sum(faults.counts().values()) >= 20 and set(faults.counts()) == set(KINDS)
    out = tmp_path / "out"
    fs, path = resolve(str(out))
    job = Job(plan, Mapper("record", jobs.identity), output_fs=fs, output_path=path,
              executor=make_executor("processes", 2),
              options=JobOptions(speculation=False, hook=faults))
    run_job(job)
    res = job.result()
    assert read_parts(str(out)) == data  # nothing lost, nothing duplicated, in order
    assert res.num_records == res.num_records_out == 8000
    assert not (out / "_temporary").exists()
    assert verify_output(fs, path, manifest(str(out))) == []
    assert sorted(p.name for p in out.glob("part-*")) == \
        [f"part-{i:05d}.txt" for i in range(len(plan.blocks))]
    failed = {(a.block_id, a.attempt) for a in res.attempts if a.status in ("failed", "lost")}
    assert failed == {key for key, kind in faults.faults.items() if kind != "slow"}
