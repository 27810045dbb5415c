"""Faults on a real object store: SeaweedFS killed (SIGKILL) under a running job, then
restarted at once or only after the job gave up, and killed while the job writes
``_SUCCESS``. Each test has a SeaweedFS of its own (the
``weed`` fixture), so the session's store stays up.

What must hold: the job completes, or stops with a one-line error and the resume command;
the resumed output is byte-identical to a clean run, with every block exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from blockproc.output import read_ledger
from blockproc.storage import resolve
from tests.integration.test_object_store import (
    DATA,
    ROOT,
    assert_exactly_once,
    env,
    one_line_error,
    run_cli,
    start_cli,
    wait_for_parts,
)
from tests.seaweed import SeaweedServer
from tests.stores import StoreDir

GIVE_UP_WITHIN = 60.0
"""Seconds from the store's death to the job's exit, with the client options and the
retry settings below (about 10 s here; with botocore's and blockproc's defaults it is
bounded too, but by minutes, which this test would wait for)."""

RETRIES = {"BLOCKPROC_IO_TRIES": "2", "BLOCKPROC_IO_BACKOFF": "0.2"}

CLIENT = {"connect_timeout": 1, "read_timeout": 10, "retries": {"total_max_attempts": 2}}
"""botocore gives up on a dead endpoint after 2 tries of 1 s (its defaults: 60 s timeouts
and 3 to 5 tries, which the test would wait for)."""


def job_args(store: StoreDir, *extra: str) -> list[str]:
    (url,) = store.put({"in/a.log": DATA})
    return ["run", url, "-o", store.url("out"), "--map", "tests.stores:slow_upper",
            "--block-size", "4KiB", "--workers", "2", "-q", *store.cli_options(),
            "--storage-option", f"config_kwargs={json.dumps(CLIENT)}", *extra]


def test_store_killed_and_restarted_mid_job_loses_and_duplicates_nothing(
        weed: SeaweedServer) -> None:
    store = StoreDir("seaweedfs", weed, "faults")
    args = job_args(store)
    job = start_cli(args, BLOCKPROC_IO_BACKOFF="0.2")
    try:
        wait_for_parts(store, "out", 3, job)
        weed.kill()
        time.sleep(1)
        weed.start()
        _, stderr = job.communicate(timeout=120)
        print(f"store killed and restarted: job exit {job.returncode}")
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate(timeout=30)
    if job.returncode != 0:  # allowed: a clear stop, then a resume that finishes the job
        assert job.returncode == 1, stderr
        one_line_error(stderr)
        assert "--resume" in stderr, stderr
        resumed = run_cli([*args, "--resume"])
        assert resumed.returncode == 0, resumed.stderr
    assert_exactly_once(store, "out", DATA.upper())


def test_store_killed_for_good_fails_clearly_and_resumes_after_it_is_back(
        weed: SeaweedServer) -> None:
    store = StoreDir("seaweedfs", weed, "faults")
    args = job_args(store, "--max-attempts", "2")
    job = start_cli(args, **RETRIES)
    try:
        wait_for_parts(store, "out", 3, job)
        committed = set(read_ledger(*resolve(store.url("out"), store.storage_options)))
        weed.kill()
        died = time.monotonic()
        _, stderr = job.communicate(timeout=GIVE_UP_WITHIN + 60)
        gave_up_after = time.monotonic() - died
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate(timeout=30)
    print(f"store killed for good: job exit {job.returncode} after {gave_up_after:.1f}s: "
          f"{stderr.strip()}")
    assert job.returncode == 1, stderr
    line = one_line_error(stderr)
    assert "--resume" in stderr, stderr
    assert gave_up_after < GIVE_UP_WITHIN, f"gave up after {gave_up_after:.0f}s: {line}"
    weed.start()
    resumed = run_cli([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    manifest = assert_exactly_once(store, "out", DATA.upper())
    rerun = {a["block_id"] for a in manifest["attempts"] if a["status"] == "committed"}
    assert not rerun & committed, "a block committed before the outage ran again"


FINISH_DRIVER = """
import pathlib, sys, time
from blockproc.output import directory as commit
from blockproc.cli import main

marker = pathlib.Path(sys.argv[1])
real_finish = commit.OutputDir.finish

def slow_finish(self, *args, **kwargs):
    marker.write_text("finishing")  # every block is committed: the test kills the store now
    time.sleep(3)
    return real_finish(self, *args, **kwargs)

commit.OutputDir.finish = slow_finish
sys.exit(main(sys.argv[2:]))
"""


def test_store_killed_during_finish_fails_clearly_and_resumes_without_rerunning(
        weed: SeaweedServer, tmp_path: Path) -> None:
    store = StoreDir("seaweedfs", weed, "faults")
    args = job_args(store, "--max-attempts", "2")
    marker = tmp_path / "finishing"
    job = subprocess.Popen([sys.executable, "-c", FINISH_DRIVER, str(marker), *args],
                           cwd=ROOT, env={**env(), **RETRIES}, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert job.poll() is None, job.communicate()[1]
            assert time.monotonic() < deadline, "the job did not reach finish() in 60 s"
            time.sleep(0.05)
        committed = set(read_ledger(*resolve(store.url("out"), store.storage_options)))
        weed.kill()
        died = time.monotonic()
        _, stderr = job.communicate(timeout=GIVE_UP_WITHIN + 60)
        gave_up_after = time.monotonic() - died
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate(timeout=30)
    print(f"store killed during finish(): job exit {job.returncode} after "
          f"{gave_up_after:.1f}s: {stderr.strip()}")
    assert job.returncode == 1, stderr
    one_line_error(stderr)
    assert "--resume" in stderr, stderr
    assert gave_up_after < GIVE_UP_WITHIN
    weed.start()
    assert "out/_SUCCESS" not in store.keys("out")
    resumed = run_cli([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    manifest = assert_exactly_once(store, "out", DATA.upper())
    assert committed == set(range(len(manifest["blocks"])))  # all were committed before
    assert not [a for a in manifest["attempts"] if a["status"] == "committed"], \
        "the resume ran blocks again"
