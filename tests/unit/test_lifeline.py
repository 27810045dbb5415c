"""A worker process dies with its parent (``executors._lifeline.die_with_parent``): by the
kernel's PR_SET_PDEATHSIG where it can be set, without a watchdog thread then; else by a
thread that watches the parent. Real processes: a middle process starts the child and
exits, and the child must be gone soon after."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults import gone

CHILD = """
import os, sys, threading, time
from pathlib import Path
from blockproc.executors import _lifeline
if sys.argv[2] == "no-prctl":
    _lifeline._LIBC.append(None)  # as where PR_SET_PDEATHSIG does not exist
_lifeline.die_with_parent(os.getppid())
names = sorted(t.name for t in threading.enumerate())
Path(sys.argv[1]).write_text(" ".join(names))
time.sleep(120)
"""

MIDDLE = """
import subprocess, sys, time
from pathlib import Path
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
print(child.pid, flush=True)
while not Path(sys.argv[2]).exists():
    time.sleep(0.01)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG and /proc are Linux's")
@pytest.mark.parametrize(("mode", "threads"), [("prctl", "MainThread"),
                                               ("no-prctl", "MainThread blockproc-watchdog")])
def test_a_child_dies_with_its_parent(tmp_path: Path, mode: str, threads: str) -> None:
    report = tmp_path / "threads"
    middle = subprocess.run([sys.executable, "-c", MIDDLE, CHILD, str(report), mode],
                            capture_output=True, text=True, timeout=60, check=True)
    pid = int(middle.stdout.split()[0])
    assert report.read_text() == threads  # armed by the kernel: no watchdog thread
    deadline = time.monotonic() + 5
    while not gone(pid):
        assert time.monotonic() < deadline, f"child {pid} outlived its parent by 5 s"
        time.sleep(0.02)
