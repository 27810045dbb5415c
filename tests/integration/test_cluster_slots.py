"""``blockproc worker`` keeps its slot processes from one job to the next, and no job sees
another's function or module state.

One real worker process (no ``--once``) serves two masters in turn on the same port; the
mapper module keeps a module-level counter, so a slot that carried its module over would
number the second job's records on from the first's.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockproc.testing import read_parts
from tests.integration.test_cluster import Proc

LINES = [f"{i:05d}" for i in range(2000)]
MAPPER = '''
import os

SEEN = []

def count(line):
    SEEN.append(line)
    return f"{len(SEEN)} {os.getpid()}"

def pid(line):
    return str(os.getpid())
'''


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "in.log").write_text("\n".join(LINES) + "\n")
    (tmp_path / "slotmod.py").write_text(MAPPER)
    return tmp_path


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def run_job(work: Path, procs: list[Proc], port: int, fn: str, out: str) -> list[str]:
    master = Proc(["run", "in.log", "-o", out, "--map", f"slotmod:{fn}", "--executor",
                   "cluster", "--listen", f"127.0.0.1:{port}", "--block-size", "2KiB",
                   "--no-progress"], work)
    procs.append(master)
    assert master.wait(timeout=120) == 0, master.stderr
    return bytes(read_parts(str(work / out))).decode().splitlines()


def test_slots_outlive_a_job_and_start_each_job_clean(work: Path, procs: list[Proc]) -> None:
    port = free_port()
    worker = Proc(["worker", "--connect", f"127.0.0.1:{port}", "--slots", "1"], work)
    procs.append(worker)
    first = run_job(work, procs, port, "count", "out1")
    second = run_job(work, procs, port, "count", "out2")
    third = run_job(work, procs, port, "pid", "out3")
    # one slot ran every block of each job, in some order: its counter starts at 1 each time
    for out in (first, second):
        assert sorted(int(line.split()[0]) for line in out) == list(range(1, len(LINES) + 1))
    pids = {line.split()[1] for line in first} | {line.split()[1] for line in second}
    pids |= set(third)  # the third job runs another function in the same slot
    assert len(pids) == 1
    worker.expect(r"job \S+: 1 slot process kept from the last job, 0 started")
