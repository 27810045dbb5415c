"""One object-store suite, run against two S3-compatible stores (the ``store`` fixture):
moto, a mock of S3's API, and SeaweedFS, a real distributed store. Reads with ranged GETs,
writes and ``_SUCCESS``, small-file packing, every ``if_exists`` mode and resume, the
one-writer race, stale-lock takeover and fencing, the CLI end to end, and the cluster
executor with a master and two worker processes.

What a mock does better (injected 503s, request counting) stays in ``test_s3.py``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
from blockproc.formats.base import FIRST_WINDOW_SIZE, WINDOW_SIZE
from blockproc.output import read_ledger, verify_output
from blockproc.storage import RangeSource, resolve
from blockproc.testing import read_parts
from tests import jobs
from tests.seaweed import SeaweedServer
from tests.stores import StoreDir, slow_upper

ROOT = Path(__file__).resolve().parents[2]
LINES = [f"{i:05d} {'GET' if i % 3 else 'POST'} /item/{i % 97} {500 if i % 7 == 0 else 200}"
         for i in range(3000)]
DATA = ("\n".join(LINES) + "\n").encode()
"""About 68 KiB: 18 blocks of 4 KiB."""


def env() -> dict[str, str]:
    """The environment of a blockproc process started by a test (the repository importable,
    so ``tests.stores:slow_upper`` and ``tests.jobs:upper`` resolve)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}


def start_cli(args: list[str], **extra_env: str) -> subprocess.Popen[str]:
    """``blockproc ARGS`` in its own process group (a kill takes its workers too)."""
    return subprocess.Popen([sys.executable, "-m", "blockproc", *args], cwd=ROOT,
                            env={**env(), **extra_env}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def run_cli(args: list[str], timeout: float = 120, **extra_env: str
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockproc", *args], cwd=ROOT,
                          env={**env(), **extra_env}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def wait_for_parts(store: StoreDir, out: str, at_least: int, proc: subprocess.Popen[str],
                   timeout: float = 60) -> int:
    """Wait until ``out`` shows ``at_least`` part-files (the job still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(store.parts(out))
        if done >= at_least:
            return done
        if proc.poll() is not None:
            raise AssertionError(f"the job ended ({proc.returncode}) before {at_least} parts "
                                 f"were committed: {proc.communicate()[1]}")
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} parts committed in {timeout}s")


def one_line_error(stderr: str) -> str:
    """The error line of a failed CLI run; fails if it is not a single blockproc error."""
    assert "Traceback" not in stderr, stderr
    assert "this is a bug" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def assert_exactly_once(store: StoreDir, out: str, expected: bytes) -> dict[str, Any]:
    """The finished output holds every block once, byte-identical to ``expected``."""
    manifest = store.manifest(out)
    ids = [b["id"] for b in manifest["blocks"]]
    assert ids == list(range(len(ids))), "a block is missing or listed twice"
    assert store.parts(out) == [b["part"] for b in manifest["blocks"]], "stray part-files"
    assert read_parts(store.url(out), storage_options=store.storage_options) == expected
    assert sum(b["records_in"] for b in manifest["blocks"]) == expected.count(b"\n")
    assert verify_output(*resolve(store.url(out), store.storage_options),
                                   manifest) == []
    assert not [k for k in store.keys(out) if "/_temporary/" in k]
    return manifest


# -- reads and writes ---------------------------------------------------------------------

def test_ranged_reads_return_exactly_the_asked_bytes(store: StoreDir) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    (url,) = store.put({"obj.bin": data})
    fs, path = resolve(url, store.storage_options)
    planned = bp.plan(url, storage_options=store.storage_options).files[0]
    with RangeSource(fs, path, expected=planned) as source:
        assert source.read(1000, 6000) == data[1000:6000]
        assert source.read(500_000, 500_100) == data[500_000:500_100]
        assert source.read(len(data) - 10, len(data) + 50) == data[-10:]  # short at EOF
        assert source.read(0, 1) == data[:1]


def test_map_blocks_reads_each_block_once(store: StoreDir) -> None:
    lines = [*LINES, "L" * 9000, *LINES]  # one record across several blocks
    data = ("\n".join(lines) + "\n").encode()
    (url,) = store.put({"in/big.log": data})
    res = bp.map_blocks(jobs.count_block, url, output=store.url("out"), block_size="16KiB",
                        executor="threads", workers=2, storage_options=store.storage_options)
    counts = read_parts(store.url("out"), storage_options=store.storage_options)
    assert sum(int(row.split(b",")[1]) for row in counts.splitlines()) == len(lines)
    blocks = len(res.blocks)
    assert blocks == -(-len(data) // (16 * 1024))
    # each byte once, plus at most a record and a window per block to finish the last one
    assert len(data) <= res.num_bytes_read <= len(data) + blocks * (9001 + WINDOW_SIZE)


def test_map_lines_writes_parts_and_success(store: StoreDir) -> None:
    inputs = {f"in/{name}.log": DATA.replace(b"/item/", f"/{name}/".encode())
              for name in ("a", "b")}
    store.put(inputs | {"in/_ignored.log": b"metadata\n", "in/notes.txt": b"no match\n"})
    res = bp.map_lines(jobs.upper, store.url("in/*.log"), output=store.url("out"),
                       block_size="8KiB", executor="processes", workers=2,
                       storage_options=store.storage_options)
    expected = b"".join(inputs[k] for k in sorted(inputs)).upper()
    manifest = assert_exactly_once(store, "out", expected)
    assert res.num_records == 2 * len(LINES) == res.num_records_out
    assert res.parts[0] == store.url("out/part-00000.txt")
    assert [i["path"].rsplit("/", 1)[1] for i in manifest["inputs"]] == ["a.log", "b.log"]
    assert all(i["token"].startswith("ETag=") for i in manifest["inputs"])
    assert "out/_SUCCESS" in store.keys("out")


class S3Calls:
    """The S3 calls this process sends while in use, as ``(operation, key, range)``: a spy
    on aiobotocore's ``_make_api_call`` (which every s3fs request goes through), so the
    requests are counted on any store, the real one included."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from aiobotocore import client

        self.calls: list[tuple[str, str, str]] = []
        self.sent: list[tuple[str, dict[str, Any]]] = []  # each call's parameters, no body
        original = client.AioBaseClient._make_api_call

        async def spy(client_self: Any, operation: str, params: Any) -> Any:
            self.calls.append((operation, params.get("Key", ""), params.get("Range", "")))
            self.sent.append((operation, {k: v for k, v in params.items() if k != "Body"}))
            return await original(client_self, operation, params)

        monkeypatch.setattr(client.AioBaseClient, "_make_api_call", spy)

    def ranges(self, key: str) -> list[tuple[int, int]]:
        """The ``[start, end)`` of each GET of ``key``, in order."""
        found = [re.fullmatch(r"bytes=(\d+)-(\d+)", r) for op, k, r in self.calls
                 if op == "GetObject" and k == key]
        assert all(found), "a GET of the whole object"
        return [(int(m[1]), int(m[2]) + 1) for m in found if m]


def test_map_lines_fetches_each_block_in_one_get(store: StoreDir,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # each GET costs the store a fixed amount besides its bytes (SeaweedFS: ~20 ms of CPU),
    # so a block is one ranged GET of its bytes and of the window past its end that finds
    # its last record (the first block of a file reads that window first, on its own)
    lines = [f"{i:07d} {'x' * (i % 50)}" for i in range(520_000)]
    data = ("\n".join(lines) + "\n").encode()  # about 17 MiB: blocks larger than 8 MiB
    (url,) = store.put({"in/big.log": data})
    calls = S3Calls(monkeypatch)
    res = bp.map_lines(jobs.upper, url, output=store.url("out"), block_size="6MiB",
                       executor="inline", storage_options=store.storage_options)
    assert_exactly_once(store, "out", data.upper())
    ranges = calls.ranges(f"{store.root.split('/', 1)[1]}/in/big.log")
    blocks = [(b.block.start, b.block.end) for b in res.blocks]
    assert len(blocks) == 3
    for start, end in blocks:  # the block's bytes in one request
        assert sum(1 for s, e in ranges if s <= start + 1 and e >= end - 1) == 1, ranges
    assert len(ranges) <= len(blocks) + 1, ranges
    fetched = sum(min(e, len(data)) - s for s, e in ranges)  # a range may pass the end
    assert fetched == res.num_bytes_read <= len(data) + len(blocks) * WINDOW_SIZE


@pytest.mark.parametrize("block_size", ["3MiB", "256KiB"], ids=["streamed", "fetched"])
def test_a_planned_input_is_read_with_if_match_and_no_head(
        store: StoreDir, monkeypatch: pytest.MonkeyPatch, block_size: str) -> None:
    # the planned ETag goes with every GET of the input (the store refuses a changed
    # object), so no block asks for a HEAD of it first: one request per block, not two
    data = b"".join(b"%07d %s\n" % (i, b"y" * (i % 40)) for i in range(230_000))  # ~6 MiB
    (url,) = store.put({"in/big.log": data})
    plan = bp.plan(url, block_size=block_size, storage_options=store.storage_options)
    calls = S3Calls(monkeypatch)
    bp.submit(plan, jobs.upper, output=store.url("out"), executor="inline",
              storage_options=store.storage_options).result(timeout=120)
    assert_exactly_once(store, "out", data.upper())
    key = f"{store.root.split('/', 1)[1]}/in/big.log"
    on_input = [(op, params) for op, params in calls.sent if params.get("Key") == key]
    assert [op for op, _ in on_input if op != "GetObject"] == []
    gets = [params for _, params in on_input]
    assert len(gets) <= len(plan.blocks) + 1  # the +1: the last block's window, read first
    assert {params.get("IfMatch") for params in gets} == {plan.files[0].token[len("ETag="):]}


def test_a_store_that_ignores_if_match_still_cannot_mix_old_and_new_data(
        store: StoreDir, monkeypatch: pytest.MonkeyPatch) -> None:
    # a store that drops If-Match serves the new object: the ETag of its answer says so
    from aiobotocore import client

    data = b"".join(b"%07d %s\n" % (i, b"y" * (i % 40)) for i in range(230_000))  # ~6 MiB
    (url,) = store.put({"in/big.log": data})
    plan = bp.plan(url, block_size="3MiB", storage_options=store.storage_options)
    store.put({"in/big.log": data.upper()})  # same size, another ETag
    original = client.AioBaseClient._make_api_call

    async def without_if_match(client_self: Any, operation: str, params: Any) -> Any:
        return await original(client_self, operation,
                              {k: v for k, v in params.items() if k != "IfMatch"})

    monkeypatch.setattr(client.AioBaseClient, "_make_api_call", without_if_match)
    job = bp.submit(plan, jobs.upper, output=store.url("out"), executor="inline",
                    storage_options=store.storage_options)
    with pytest.raises(bp.BlockFailedError, match="changed after the job was planned"):
        job.result(timeout=120)
    assert "out/_SUCCESS" not in store.keys("out")
    # small blocks are fetched whole: there s3fs's local_expiry_check (README) checks
    local_check = {**store.storage_options, "local_expiry_check": True}
    small = bp.plan(store.url("in/big.log"), block_size="256KiB",
                    storage_options=local_check)
    store.put({"in/big.log": data})
    job = bp.submit(small, jobs.upper, output=store.url("out2"), executor="inline",
                    storage_options=local_check)
    with pytest.raises(bp.BlockFailedError, match="changed after the job was planned"):
        job.result(timeout=120)
    assert "out2/_SUCCESS" not in store.keys("out2")


def test_an_input_deleted_after_planning_is_named_as_deleted(store: StoreDir) -> None:
    (url,) = store.put({"in/gone.log": DATA})
    plan = bp.plan(url, block_size="8KiB", storage_options=store.storage_options)
    store.fs.rm(f"{store.root}/in/gone.log")
    job = bp.submit(plan, jobs.upper, output=store.url("out"), executor="threads",
                    storage_options=store.storage_options)
    with pytest.raises(bp.BlockFailedError, match="changed after the job was planned "
                                                  r"\(it was deleted\)") as info:
        job.result(timeout=120)
    assert "in/gone.log" in str(info.value) and info.value.attempt == 1
    assert "out/_SUCCESS" not in store.keys("out")


def test_a_default_size_block_is_one_get(store: StoreDir,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # the read size covers a block of the default size and the window past its end: here
    # both scaled down 16 times (a 4 MiB block, a 4 MiB + 4 KiB read size), so that a
    # block ending exactly where a read of the bare block size would end is still one GET
    from blockproc.api import DEFAULT_BLOCK_SIZE
    from blockproc.storage import reading

    assert reading.REMOTE_READ_SIZE >= DEFAULT_BLOCK_SIZE + WINDOW_SIZE
    scale = 16
    monkeypatch.setattr(reading, "REMOTE_READ_SIZE", reading.REMOTE_READ_SIZE // scale)
    lines = [f"{i:07d} {'y' * (i % 40)}" for i in range(330_000)]
    data = ("\n".join(lines) + "\n").encode()  # about 10 MiB: 3 blocks
    (url,) = store.put({"in/d.log": data})
    calls = S3Calls(monkeypatch)
    for run in (bp.map_lines, bp.map_blocks):
        calls.calls.clear()
        res = run(jobs.upper if run is bp.map_lines else jobs.count_block, url,
                  output=store.url(f"out-{run.__name__}"),
                  block_size=DEFAULT_BLOCK_SIZE // scale, executor="inline",
                  storage_options=store.storage_options)
        assert len(res.blocks) == 3
        ranges = calls.ranges(f"{store.root.split('/', 1)[1]}/in/d.log")
        assert len(ranges) <= len(res.blocks) + 1, (run.__name__, ranges)


def test_with_speculation_on_each_block_is_one_get_and_read_once(
        store: StoreDir, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a store a worker reports no progress until its block's GET is in, most of a
    # normal block's time; here each block reports none for ~1.2 s (its first chunk in
    # the function) and the last for 1.8 s, a normal block a little slower than the
    # others. Judged by its progress rate it looked stalled, and speculation read it twice.
    line = 64
    per_block = 4096
    blocks = 4
    data = b"".join(f"{i:07d} {'z' * (line - 9)}\n".encode()
                    for i in range(per_block * blocks))
    (url,) = store.put({"in/even.log": data})

    def slow_start(text: str) -> str:
        number = int(text[:7])
        if number % per_block == 1:  # a block's second line: inside its first chunk
            time.sleep(1.8 if number // per_block == blocks - 1 else 1.2)
        return text

    calls = S3Calls(monkeypatch)
    res = bp.map_lines(slow_start, url, output=store.url("out"), block_size=line * per_block,
                       executor="threads", workers=2, speculation=True,
                       storage_options=store.storage_options)
    assert_exactly_once(store, "out", data)
    assert [(a.attempt, a.speculative) for a in res.attempts] == [(1, False)] * blocks
    ranges = calls.ranges(f"{store.root.split('/', 1)[1]}/in/even.log")
    assert len(ranges) == blocks, ranges
    # each block once, and the 4 KiB window past its end that finds its last record
    assert len(data) <= res.num_bytes_read <= len(data) + blocks * FIRST_WINDOW_SIZE


def test_each_part_is_one_put_and_one_copy_and_no_staging_is_left(
        store: StoreDir, monkeypatch: pytest.MonkeyPatch) -> None:
    (url,) = store.put({"in/a.log": DATA})
    calls = S3Calls(monkeypatch)
    res = bp.map_lines(jobs.upper, url, output=store.url("out"), block_size="8KiB",
                       executor="inline", storage_options=store.storage_options)
    assert_exactly_once(store, "out", DATA.upper())  # no staging object left
    blocks = len(res.blocks)
    ops = Counter(op for op, _, _ in calls.calls)
    staged = [k for op, k, _ in calls.calls if op == "PutObject" and "/_temporary/" in k]
    assert len(staged) == len(set(staged)) == blocks  # one upload per part, none multipart
    assert ops["CreateMultipartUpload"] == 0
    assert ops["CopyObject"] == blocks  # published by one server-side copy each
    assert ops["HeadBucket"] <= 2, ops  # per job (lock, state), not per part-file
    # a commit is the copy and the ledger entry: no HEAD of the staged object before the
    # copy, no DELETE after it (the staged objects go at the end, in one bulk request)
    assert not [k for op, k, _ in calls.calls
                if op == "HeadObject" and "/_temporary/" in k and "/part-" in k]
    assert ops["DeleteObject"] == 0 and 1 <= ops["DeleteObjects"] <= 3, ops


FORKED_FROM_MASTER = """
import json, os, sys, threading
import blockproc as bp
url, options = sys.argv[1], json.loads(sys.argv[2])
res = bp.map_blocks(lambda batch: os.getppid(), url, block_size="16KiB", workers=2,
                    executor="processes", storage_options=options, progress=False)
print(json.dumps({"parents": sorted(set(res.values)), "master": os.getpid(),
                  "threads": sorted(t.name for t in threading.enumerate())}))
"""


def test_a_script_s_s3_job_forks_its_workers_from_the_master(store: StoreDir) -> None:
    # s3fs leaves threads in the master (fsspec's loop, and the loop's executor where
    # aiobotocore builds its SSL context): the workers are still forked from the master,
    # everything imported, not started afresh from the template process (seconds per job)
    (url,) = store.put({"in/a.log": DATA})
    seen, _ = run_script(FORKED_FROM_MASTER, url, store)
    assert "fsspecIO" in seen["threads"]  # the case this is about: s3fs's threads ran
    assert seen["parents"] == [seen["master"]], seen


FORKED_CHILD_DROPS_PARENT_FS = """
import gc, json, os, sys, time
import fsspec.asyn, s3fs
import blockproc.storage  # noqa: F401  (imported by a master before it forks its workers)
url, options = sys.argv[1], json.loads(sys.argv[2])
path = url.removeprefix("s3://")
parent = [s3fs.S3FileSystem(**options)]
parent[0].info(path)
pid = os.fork()
if pid == 0:  # as a worker: its own filesystem, the parent's copy collected on its loop
    own = s3fs.S3FileSystem(**options)
    own.info(path)
    async def drop():
        parent.clear()
        gc.collect()
    fsspec.asyn.sync(own.loop, drop)
    own.info(path)
    gc.collect()
    time.sleep(0.2)
    sys.stderr.flush()
    os._exit(0)
os.waitpid(pid, 0)
parent[0].invalidate_cache()
print(json.dumps({"parent_size": parent[0].info(path)["size"]}))  # its pooled connection
"""


def run_script(code: str, url: str, store: StoreDir) -> tuple[Any, str]:
    """Run ``code`` in a fresh interpreter with the store's URL and options; return the
    JSON of its last line of output and its stderr (it must exit 0 within 120 s)."""
    done = subprocess.run([sys.executable, "-c", code, url, json.dumps(store.storage_options)],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_a_forked_worker_leaves_the_master_s_s3_sessions_alone(store: StoreDir) -> None:
    (url,) = store.put({"in/a.log": DATA})
    seen, stderr = run_script(FORKED_CHILD_DROPS_PARENT_FS, url, store)
    assert "Traceback" not in stderr and "Unclosed" not in stderr, stderr
    assert seen == {"parent_size": len(DATA)}  # the parent's next call still answers


def test_small_files_are_packed_into_few_blocks(store: StoreDir) -> None:
    files = {f"small/f{i:03d}.log": f"file {i} line 1\nfile {i} line 2\n".encode()
             for i in range(120)}
    store.put(files)
    res = bp.map_lines(jobs.upper, store.url("small/"), output=store.url("out"),
                       block_size="1KiB", executor="threads", workers=2,
                       storage_options=store.storage_options)
    expected = b"".join(files[k] for k in sorted(files)).upper()
    assert_exactly_once(store, "out", expected)
    assert res.num_records == 240
    assert len(res.blocks) <= 120 * 32 // 1024 + 4, "small files were not packed"


# -- if_exists --------------------------------------------------------------------------

def test_if_exists_error_refuses_a_finished_output_and_keeps_it(store: StoreDir) -> None:
    (url,) = store.put({"in/a.log": DATA})
    bp.map_lines(jobs.upper, url, output=store.url("out"), block_size="8KiB",
                 executor="threads", storage_options=store.storage_options)
    before = store.snapshot("out")
    with pytest.raises(bp.OutputExistsError, match="already exists") as info:
        bp.map_lines(jobs.identity, url, output=store.url("out"), block_size="8KiB",
                     executor="threads", storage_options=store.storage_options)
    assert not isinstance(info.value, bp.OutputLockedError)
    assert "if_exists='overwrite'" in str(info.value)
    after = store.snapshot("out")
    assert {k: v for k, v in after.items() if "/_blockproc/lock" not in k} == \
        {k: v for k, v in before.items() if "/_blockproc/lock" not in k}


def test_if_exists_overwrite_replaces_every_part(store: StoreDir) -> None:
    (url,) = store.put({"in/a.log": DATA})
    first = bp.map_lines(jobs.upper, url, output=store.url("out"), block_size="2KiB",
                         executor="threads", workers=2, storage_options=store.storage_options)
    assert len(store.parts("out")) == len(first.blocks) >= 30
    second = bp.map_lines(jobs.identity, url, output=store.url("out"), block_size="32KiB",
                          executor="threads", workers=2, if_exists="overwrite",
                          storage_options=store.storage_options)
    assert len(second.blocks) == 3
    assert_exactly_once(store, "out", DATA)  # no part of the first job is left


def test_if_exists_resume_after_a_killed_job_is_byte_identical(store: StoreDir) -> None:
    (url,) = store.put({"in/a.log": DATA})
    args = ["run", url, "-o", store.url("out"), "--map", "tests.stores:slow_upper",
            "--block-size", "4KiB", "--executor", "threads", "--workers", "2", "-q",
            *store.cli_options()]
    job = start_cli(args)
    try:
        wait_for_parts(store, "out", 3, job)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the master and its workers, as a crash
        job.communicate(timeout=30)
    kept = set(read_ledger(*resolve(store.url("out"), store.storage_options)))
    assert len(kept) >= 2
    assert "out/_SUCCESS" not in store.keys("out")
    # the dead job's lock does not block the resume: its process is gone on this host
    res = bp.map_lines(jobs.upper, url, output=store.url("out"), block_size="4KiB",
                       executor="threads", workers=2, if_exists="resume",
                       storage_options=store.storage_options)
    assert_exactly_once(store, "out", DATA.upper())
    rerun = {a.block_id for a in res.attempts if a.status == "committed"}
    assert not rerun & kept, "a committed block ran again"
    assert rerun | kept == set(range(len(res.blocks)))


def test_an_output_deleted_with_rm_is_written_again_by_default(store: StoreDir) -> None:
    """A user drops an output with a recursive delete; a new job may write it with the
    default ``if_exists="error"``. SeaweedFS keeps the emptied folders (``out/``,
    ``out/_blockproc/``) in its listings, where a mock shows nothing."""
    (url,) = store.put({"in/a.log": DATA})
    bp.map_lines(jobs.upper, url, output=store.url("out"), block_size="8KiB",
                 executor="threads", storage_options=store.storage_options)
    store.fs.rm(f"{store.root}/out", recursive=True)
    assert not [k for k in store.keys("out") if k.startswith("out/")]  # no object is left
    bp.map_lines(jobs.identity, url, output=store.url("out"), block_size="8KiB",
                 executor="threads", storage_options=store.storage_options)
    assert_exactly_once(store, "out", DATA)


# -- one writer per output --------------------------------------------------------------

def _contend(barrier: Any, results: Any, url: str, out: str, options: dict[str, Any]) -> None:
    """One contender of the race: wait for the others, then run a job on ``out``."""
    barrier.wait(timeout=60)
    try:
        res = bp.map_lines(slow_upper, url, output=out, block_size="8KiB", executor="threads",
                           workers=1, if_exists="overwrite", storage_options=options)
        results.put(("admitted", res.num_records))
    except bp.OutputLockedError as exc:
        results.put(("locked", str(exc)))
    except BaseException as exc:
        results.put(("other", f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("contenders", [4])
def test_one_writer_race_admits_exactly_one(store: StoreDir, contenders: int) -> None:
    # the winner runs for about 2 s, so that no contender comes after it finished
    data = DATA[:DATA.index(b"\n", 50_000) + 1]
    (url,) = store.put({"in/a.log": data})
    ctx = multiprocessing.get_context("spawn")
    trials = 1  # the lock's own tests race hundreds of times; this one is on each store
    for trial in range(trials):
        out = f"race-{trial}"
        barrier, results = ctx.Barrier(contenders), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(barrier, results, url, store.url(out),
                                                    store.storage_options))
                 for _ in range(contenders)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        kinds = Counter(kind for kind, _ in outcomes)
        assert kinds == {"admitted": 1, "locked": contenders - 1}, outcomes
        for kind, message in outcomes:
            if kind == "locked":
                assert re.search(r"is being written by job \S+", str(message)), message
                assert "\n" not in str(message)
        assert_exactly_once(store, out, data.upper())


def test_stale_lock_is_taken_over_and_the_stalled_job_is_fenced(
        store: StoreDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job stopped (SIGSTOP) past the lease loses its lock to a resume; when it
    continues, it stops with LockLostError and writes nothing more to the output.

    The stalled job upper-cases and the one that takes over does not, so a part-file the
    stalled job rewrote after the takeover would show, not only a new file.
    """
    lease = "2"
    monkeypatch.setenv("BLOCKPROC_LOCK_LEASE", lease)  # for both jobs
    (url,) = store.put({"in/a.log": DATA})
    args = ["run", url, "-o", store.url("out"), "--map", "tests.stores:slow_upper",
            "--block-size", "4KiB", "--executor", "threads", "--workers", "2", "-q",
            *store.cli_options()]
    stalled = start_cli(args)
    try:
        wait_for_parts(store, "out", 2, stalled)
        os.killpg(stalled.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        # within the lease, the lock is respected
        with pytest.raises(bp.OutputLockedError, match="is being written by job"):
            bp.map_lines(jobs.identity, url, output=store.url("out"), block_size="4KiB",
                         executor="threads", if_exists="resume",
                         storage_options=store.storage_options)
        time.sleep(max(0.0, float(lease) + 1 - (time.monotonic() - stopped_at)))
        bp.map_lines(jobs.identity, url, output=store.url("out"), block_size="4KiB",
                     executor="threads", workers=2, if_exists="resume",
                     storage_options=store.storage_options)
        finished = {k: v for k, v in store.snapshot("out").items() if "/_temporary/" not in k}
    finally:
        os.killpg(stalled.pid, signal.SIGCONT)
    _, stderr = stalled.communicate(timeout=60)
    assert stalled.returncode == 1, stderr
    line = one_line_error(stderr)
    assert re.search(r"lost its lock", line), line
    after = {k: v for k, v in store.snapshot("out").items() if "/_temporary/" not in k}
    changed = sorted(k for k in finished.keys() | after.keys()
                     if finished.get(k) != after.get(k) and "/_blockproc/lock/" not in k)
    # The test stops the job right after a part appears, on purpose in the middle of a
    # commit: the one write already under way when it was stopped (checked, request not
    # yet sent) may land when it thaws (README, "Fencing"); nothing after it may.
    assert len(changed) <= 1, f"the fenced job wrote to the output after the takeover: {changed}"
    manifest = store.manifest("out")
    flagged = verify_output(*resolve(store.url("out"), store.storage_options), manifest)
    assert flagged == [k.rsplit("/", 1)[1] for k in changed if "/part-" in k
                       and "/_blockproc/" not in k]
    output = read_parts(store.url("out"), storage_options=store.storage_options)
    assert output.upper() == DATA.upper()  # every line once, from one job or the other
    assert [b["id"] for b in manifest["blocks"]] == list(range(len(manifest["blocks"])))


# -- the CLI and the cluster executor ---------------------------------------------------------

def test_cli_end_to_end(store: StoreDir) -> None:
    (url,) = store.put({"in/a.log": DATA})
    out = store.url("out")
    run = run_cli(["run", url, "-o", out, "--map", "tests.jobs:upper", "--block-size", "8KiB",
                   "--executor", "threads", "--workers", "2", "-q", *store.cli_options()])
    assert run.returncode == 0, run.stderr
    assert_exactly_once(store, "out", DATA.upper())
    status = run_cli(["status", out, "--verify", *store.cli_options()])
    assert status.returncode == 0, status.stderr
    blocks = -(-len(DATA) // 8192)
    assert f"verify: all {blocks} part-files match the manifest" in status.stdout
    again = run_cli(["run", url, "-o", out, "--map", "tests.jobs:upper", "--block-size", "8KiB",
                     "--executor", "inline", "-q", *store.cli_options()])
    assert again.returncode == 2
    assert "already exists" in one_line_error(again.stderr)


def test_cluster_master_and_two_workers_commit_every_block_once(
        store: StoreDir, tmp_path: Path) -> None:
    (url,) = store.put({"in/a.log": DATA})
    key = {"BLOCKPROC_AUTHKEY": "0123456789abcdef-store-test"}
    master = start_cli(["run", url, "-o", store.url("out"), "--map", "tests.stores:slow_upper",
                        "--executor", "cluster", "--listen", "127.0.0.1:0", "--block-size",
                        "4KiB", "--no-progress", *store.cli_options()], **key)
    workers: list[subprocess.Popen[str]] = []
    try:
        assert master.stderr is not None
        port = None
        watchdog = threading.Timer(60, os.killpg, (master.pid, signal.SIGKILL))
        watchdog.start()  # the loop below ends at the master's exit, which this bounds
        try:
            for line in master.stderr:
                if found := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
                    port = found.group(1)
                    break
        finally:
            watchdog.cancel()
        assert port, "the master did not say where it listens"
        workers = [start_cli(["worker", "--connect", f"127.0.0.1:{port}", "--slots", "1",
                              "--once"], **key) for _ in range(2)]
        _, rest = master.communicate(timeout=120)
        assert master.returncode == 0, rest
        outputs = [w.communicate(timeout=60) for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
    finally:
        for proc in [master, *workers]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=30)
    manifest = assert_exactly_once(store, "out", DATA.upper())
    committed = Counter(a["block_id"] for a in manifest["attempts"]
                        if a["status"] == "committed")
    assert committed == Counter(range(len(manifest["blocks"])))
    assert manifest["executor"] == "cluster"
    assert len({b["worker"] for b in manifest["blocks"]}) == 2  # both workers ran blocks


# -- the README's example ------------------------------------------------------------------

def readme_store_blocks() -> tuple[str, str]:
    """The README's ``weed server`` line and its Python example (the blocks that say this
    file runs them)."""
    from tests.test_readme import BLOCKS

    ours = [b for b in BLOCKS if b.skip and "test_object_store.py" in b.skip]
    assert [b.lang for b in ours] == ["bash", "python"], ours
    return ours[0].code, ours[1].code


def test_readme_weed_server_line_is_the_one_the_fixture_runs(
        seaweed_server: SeaweedServer) -> None:
    command, _ = readme_store_blocks()
    readme = dict(arg.partition("=")[::2] for arg in command.split("weed server", 1)[1]
                  .replace("\\\n", " ").split())
    ours = dict(arg.partition("=")[::2] for arg in seaweed_server.command()[2:])
    # the README's settings, but for the data directory and the ports, are the fixture's
    for flag, value in readme.items():
        assert flag in ours, f"the fixture does not pass {flag}"
        if flag != "-dir" and ".port" not in flag:
            assert ours[flag] == value, flag
    extra = {f for f in ours.keys() - readme.keys() if ".port" not in f}
    assert extra <= {"-volume.max", "-master.volumeSizeLimitMB", "-volume.preStopSeconds",
                     "-master.electionTimeout"}, extra


def test_readme_shared_storage_example_runs_on_seaweedfs(
        seaweed_server: SeaweedServer, tmp_path: Path) -> None:
    _, example = readme_store_blocks()
    assert "http://127.0.0.1:8333" in example
    script = tmp_path / "example.py"
    script.write_text(example.replace("http://127.0.0.1:8333", seaweed_server.endpoint_url))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    expected = re.search(r"^# (.+)$", example, re.M)
    assert expected is not None and done.stdout.strip() == expected.group(1)
    options = seaweed_server.storage_options()
    assert read_parts("s3://demo-logs/errors", storage_options=options) == b"GET /b 500\n" * 100_000
