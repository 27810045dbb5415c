"""Fencing: a job stopped past its lease is taken over, and never writes again.

A real ``blockproc run`` is frozen with SIGSTOP (its master alone, or its whole process
group, as a shell's Ctrl-Z would) for longer than the lock's lease; ``--resume`` then
takes the output over and finishes it. When the first job is thawed with SIGCONT it must
stop with a one-line "lost its lock" error and exit 1, without writing, renaming or
deleting anything in the output.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockproc.output import read_ledger, read_manifest, verify_output
from blockproc.storage import filesystem
from blockproc.testing import read_parts

LEASE = 2.0
LINES = [f"{i:05d} {'y' * (i % 29)}" for i in range(3000)]
DATA = ("\n".join(LINES) + "\n").encode()
MAPPER = '''
import time

def slow_upper(line):
    time.sleep(0.003)
    return line.upper()

def upper(line):
    return line.upper()
'''


def command() -> list[str]:
    exe = Path(sys.executable).with_name("blockproc")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "blockproc"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under ``root``, with a digest of each file's bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(("executor", "stop"), [("threads", "master"),
                                               ("processes", "master"),
                                               ("processes", "group")])
def test_a_stopped_job_that_was_taken_over_never_writes_again(
        tmp_path: Path, executor: str, stop: str) -> None:
    (tmp_path / "in.log").write_bytes(DATA)
    (tmp_path / "mymod.py").write_text(MAPPER)
    env = {**os.environ, "BLOCKPROC_LOCK_LEASE": str(LEASE), "PYTHONPATH": str(tmp_path)}
    run = [*command(), "run", "in.log", "-o", "out", "--block-size", "2KiB", "-q",
           "--executor", executor, "--workers", "2"]
    first = subprocess.Popen([*run, "--map", "mymod:slow_upper"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    fs, out = filesystem("file"), tmp_path / "out"
    try:
        wait_for(lambda: len(read_ledger(fs, str(out))) >= 3, 60, "the first commits")
        if stop == "group":
            os.killpg(first.pid, signal.SIGSTOP)
        else:
            os.kill(first.pid, signal.SIGSTOP)
        time.sleep(LEASE + 1.5)  # the lease runs out while it is stopped
        second = subprocess.run([*run, "--map", "mymod:upper", "--resume"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120,
                                check=False)
        assert second.returncode == 0, second.stderr
        before = snapshot(out)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    try:
        _, stderr = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 1, stderr
    assert "lost its lock" in stderr and "Traceback" not in stderr, stderr
    assert "resume" not in stderr.lower(), stderr  # the output is the other job's now
    time.sleep(0.5)  # anything it would still write would land by now
    assert snapshot(out) == before
    manifest = read_manifest(fs, str(out))
    assert verify_output(fs, str(out), manifest) == []
    assert read_parts(str(out)) == DATA.upper()
