"""Jobs run one after another in one interpreter start their workers warm, and no job sees
another's function or state.

The processes executor forks each job's workers from the master when no other thread
runs (everything is imported already), and otherwise from a template process kept alive
between jobs (``forkserver``). Both give every job fresh processes: these tests run real
jobs, twice in a row, in each mode, with functions that keep module-level state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
from blockproc.executors.processes import start_method
from blockproc.testing import read_parts

_SEEN: list[str] = []
"""Module state a worker's function mutates: a reused worker would remember it."""


def count_seen(line: str) -> str:
    """Return how many records this process has mapped so far (module state)."""
    _SEEN.append(line)
    return str(len(_SEEN))


def pid_of(line: str) -> str:
    return str(os.getpid())


def shout(line: str) -> str:
    return line.upper()


def whisper(line: str) -> str:
    return line.lower()


def run(fn: Callable[[str], Any], src: str, out: str) -> list[str]:
    bp.map_lines(fn, src, output=out, executor="processes", workers=1,
                 if_exists="overwrite", progress=False)
    return bytes(read_parts(out)).decode().splitlines()


def in_a_thread(call: Callable[[], Any]) -> Any:
    """Run ``call`` while a second thread is alive (as in a notebook kernel)."""
    box: dict[str, Any] = {}
    stop = threading.Event()
    idle = threading.Thread(target=stop.wait, daemon=True)
    idle.start()
    try:
        box["method"] = start_method()
        box["value"] = call()
    finally:
        stop.set()
        idle.join()
    return box


@pytest.fixture
def src(tmp_path: Path) -> str:
    path = tmp_path / "in.log"
    path.write_text("Alpha\nBeta\nGamma\n")
    return str(path)


def fresh_process(code: str) -> str:
    """Run ``code`` in a fresh interpreter (no other thread of this test process) and
    return what it printed."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_lone_master_forks_its_workers() -> None:
    assert fresh_process("from blockproc.executors.processes import start_method\n"
                         "print(start_method())") == "fork"


def test_fsspecs_event_loop_thread_does_not_prevent_the_fork() -> None:
    pytest.importorskip("fsspec.asyn")
    code = ("import threading\n"
            "import fsspec.asyn\n"
            "from blockproc.executors.processes import start_method\n"
            "fsspec.asyn.get_loop()  # starts the 'fsspecIO' thread, as s3fs does\n"
            "assert any(t.name == 'fsspecIO' for t in threading.enumerate())\n"
            "print(start_method())")
    assert fresh_process(code) == "fork"


def test_a_master_beside_another_thread_uses_the_template_process() -> None:
    assert in_a_thread(lambda: None)["method"] == "forkserver"


@pytest.mark.parametrize("threaded", [False, True], ids=["forked", "forkserver"])
def test_no_module_state_leaks_from_one_job_to_the_next(src: str, tmp_path: Path,
                                                        threaded: bool) -> None:
    def twice() -> tuple[list[str], list[str]]:
        return run(count_seen, src, str(tmp_path / "a")), run(count_seen, src,
                                                              str(tmp_path / "b"))

    first, second = in_a_thread(twice)["value"] if threaded else twice()
    assert first == second == ["1", "2", "3"]
    assert _SEEN == []  # the master never ran the function


@pytest.mark.parametrize("threaded", [False, True], ids=["forked", "forkserver"])
def test_each_job_runs_its_own_function(src: str, tmp_path: Path, threaded: bool) -> None:
    def both() -> tuple[list[str], list[str]]:
        return run(shout, src, str(tmp_path / "a")), run(whisper, src, str(tmp_path / "b"))

    upper, lower = in_a_thread(both)["value"] if threaded else both()
    assert upper == ["ALPHA", "BETA", "GAMMA"]
    assert lower == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize("threaded", [False, True], ids=["forked", "forkserver"])
def test_every_job_gets_fresh_worker_processes(src: str, tmp_path: Path,
                                               threaded: bool) -> None:
    def three() -> list[set[str]]:
        return [set(run(pid_of, src, str(tmp_path / name))) for name in "abc"]

    pids = in_a_thread(three)["value"] if threaded else three()
    assert all(len(p) == 1 for p in pids)
    assert len(set.union(*pids)) == 3
    assert str(os.getpid()) not in set.union(*pids)


def test_a_function_defined_in_a_closure_travels_by_value(src: str, tmp_path: Path) -> None:
    suffix = "!"
    first = run(lambda line: line + suffix, src, str(tmp_path / "a"))
    suffix = "?"
    second = run(lambda line: line + suffix, src, str(tmp_path / "b"))
    assert first == ["Alpha!", "Beta!", "Gamma!"]
    assert second == ["Alpha?", "Beta?", "Gamma?"]
