"""Workers stop when their master dies, whatever the user's function is doing.

The master is a real ``blockproc run`` process, killed with SIGKILL while every worker is
inside a long call of a ``map_blocks`` function: one that sleeps (releases the GIL) and
one that spins in C code holding the GIL (no Python thread of that process can run). The
test then waits, with a generous bound, until every worker process is gone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults import gone

KEY = "0123456789abcdef-stop-test-key"
MAPPER = '''
import os, time
from pathlib import Path

def _started():
    Path("pids", str(os.getpid())).touch()

def sleeps(batch):
    _started()
    time.sleep(120)
    return batch

def spins(batch):
    _started()
    sum(range(10 ** 13))  # C code holding the GIL for hours
    return batch
'''
BOUND = 5.0
"""Seconds the workers get to disappear (they need a fraction of one)."""


def started(work: Path, count: int, master: subprocess.Popen[bytes]) -> list[int]:
    """Wait until ``count`` worker processes are inside the function; return their pids."""
    deadline = time.monotonic() + 60
    while len(pids := [int(p.name) for p in (work / "pids").iterdir()]) < count:
        assert master.poll() is None, f"the master exited ({master.returncode}) early"
        assert time.monotonic() < deadline, f"only {len(pids)} workers started"
        time.sleep(0.05)
    return pids


def kill_and_time(master: subprocess.Popen[bytes], pids: list[int]) -> float:
    """SIGKILL the master; return the seconds until every pid is gone (or fail)."""
    os.kill(master.pid, signal.SIGKILL)
    killed = time.monotonic()
    master.wait(timeout=30)
    while not all(gone(pid) for pid in pids):
        waited = time.monotonic() - killed
        assert waited < BOUND, f"workers {[p for p in pids if not gone(p)]} still run " \
                               f"{waited:.1f}s after the master was killed"
        time.sleep(0.02)
    return time.monotonic() - killed


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "pids").mkdir()
    (tmp_path / "mymod.py").write_text(MAPPER)
    line = b"x" * 99 + b"\n"
    (tmp_path / "in.log").write_bytes(line * 400)  # 40 KB: 10 blocks of 4 KiB
    return tmp_path


def blockproc(work: Path, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BLOCKPROC_AUTHKEY=KEY,
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                           os.environ.get("PYTHONPATH", "")]))
    process: subprocess.Popen[bytes] = subprocess.Popen(
        [sys.executable, "-m", "blockproc", *args], cwd=work, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    return process


def run_master(work: Path, fn: str, *extra: str) -> subprocess.Popen[bytes]:
    with open(work / "master.log", "wb") as log:
        return blockproc(work, "run", "in.log", "-o", "out", "--map-blocks", f"mymod:{fn}",
                         "--block-size", "4KiB", "--no-progress", *extra, stderr=log)


def master_port(work: Path, master: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while not (found := re.search(r"listening on 127\.0\.0\.1:(\d+)",
                                  (work / "master.log").read_text())):
        assert master.poll() is None, (work / "master.log").read_text()
        assert time.monotonic() < deadline, "the master does not listen"
        time.sleep(0.05)
    return int(found.group(1))


@pytest.mark.parametrize("fn", ["sleeps", "spins"])
def test_processes_workers_stop_when_the_master_is_killed(work: Path, fn: str) -> None:
    master = run_master(work, fn, "--workers", "2")
    try:
        pids = started(work, 2, master)
        assert master.pid not in pids
        took = kill_and_time(master, pids)
    finally:
        master.kill()
        master.wait(timeout=30)
    print(f"processes/{fn}: 2 workers gone {took:.2f}s after the master's SIGKILL")


@pytest.mark.parametrize("fn", ["spins"])
def test_cluster_slots_stop_when_the_master_is_killed(work: Path, fn: str) -> None:
    """A standalone worker's slots stop; the worker itself waits for the next master."""
    master = run_master(work, fn, "--executor", "cluster", "--listen", "127.0.0.1:0")
    worker: subprocess.Popen[bytes] | None = None
    try:
        port = master_port(work, master)
        worker = blockproc(work, "worker", "--connect", f"127.0.0.1:{port}", "--slots", "2",
                           stderr=subprocess.PIPE)
        slots = started(work, 2, master)
        assert worker.pid not in slots
        took = kill_and_time(master, slots)
        assert worker.poll() is None  # it goes back to waiting for a master
    finally:
        master.kill()
        master.wait(timeout=30)
        if worker is not None:
            worker.kill()
            _, err = worker.communicate(timeout=30)
    assert b"lost the connection to the master" in err, err
    print(f"cluster/{fn}: 2 slots gone {took:.2f}s after the master's SIGKILL")


def test_cluster_local_workers_stop_when_the_master_is_killed(work: Path) -> None:
    """``--workers N`` with the cluster executor: the local worker processes and their
    slots all go."""
    master = run_master(work, "spins", "--executor", "cluster", "--workers", "2")
    try:
        slots = started(work, 2, master)
        supervisors = [int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                       for pid in slots]
        assert master.pid not in supervisors
        took = kill_and_time(master, slots + supervisors)
    finally:
        master.kill()
        master.wait(timeout=30)
    print(f"cluster local: 2 workers and 2 slots gone {took:.2f}s after the master's SIGKILL")
