"""The ``dask`` executor on a real ``distributed.LocalCluster`` of worker processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import blockproc as bp
from blockproc.testing import read_parts
from tests import jobs

distributed = pytest.importorskip("distributed")

LINES = [f"{i:05d} {'x' * (i % 37)}" for i in range(3000)]
DATA = ("\n".join(LINES) + "\n").encode()


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """Two worker processes, one thread each, for the whole module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.CRITICAL) as c:
        yield c


@pytest.fixture
def client(cluster: object) -> Iterator[object]:
    with distributed.Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=30)
        yield c


def local_input(root: Path) -> str:
    path = root / "in.log"
    path.write_bytes(DATA)
    return str(path)


def manifest(output: str) -> dict:
    return json.loads((Path(output) / "_SUCCESS").read_text())


def test_dask_on_a_given_client_matches_the_processes_executor(client: object,
                                                              tmp_path: Path) -> None:
    src = local_input(tmp_path)
    out, ref = str(tmp_path / "out"), str(tmp_path / "ref")
    res = bp.map_lines(jobs.upper, src, output=out, block_size=4096, executor="dask",
                       executor_options={"client": client})
    bp.map_lines(jobs.upper, src, output=ref, block_size=4096, workers=2)
    assert read_parts(out) == read_parts(ref) == DATA.upper()
    assert [b["checksum"] for b in manifest(out)["blocks"]] == \
        [b["checksum"] for b in manifest(ref)["blocks"]]
    assert res.num_records == len(LINES)
    assert manifest(out)["executor"] == "dask" and manifest(out)["workers"] == 2
    assert len({b.worker for b in res.blocks}) == 2  # both dask workers ran blocks
    assert not (tmp_path / "out" / "_temporary").exists()
    assert client.status == "running"  # type: ignore[attr-defined]  # a given client stays open


def test_dask_worker_killed_mid_job_exactly_once(client: object, tmp_path: Path) -> None:
    src = local_input(tmp_path)
    out = str(tmp_path / "out")
    marker = tmp_path / "killed"
    res = bp.map_lines(jobs.kill_once(str(marker), LINES[2000]), src, output=out,
                       block_size=4096, executor="dask", executor_options={"client": client})
    assert marker.exists()
    assert read_parts(out) == DATA
    lost = [a for a in res.attempts if a.status == "lost"]
    killed = next(b.id for b in bp.plan(src, block_size=4096).blocks
                  if b.start < DATA.index(LINES[2000].encode()) <= b.end)
    assert killed in {a.block_id for a in lost}
    # dask may also lose (and re-run) an attempt it had handed to the dead process; each
    # lost attempt is retried once, and the output above holds every record exactly once
    for attempt in lost:
        assert "worker" in attempt.error  # KilledWorker, or dask re-running it elsewhere
        assert res.blocks[attempt.block_id].attempt == attempt.attempt + 1
    doc = manifest(out)
    assert [b["id"] for b in doc["blocks"]] == list(range(len(res.blocks)))
    assert not (tmp_path / "out" / "_temporary").exists()


def test_dask_worker_process_killed_from_outside(client: object, tmp_path: Path) -> None:
    src = local_input(tmp_path)
    out = str(tmp_path / "out")
    plan = bp.plan(src, block_size=4096)
    job = bp.submit(plan, jobs.slow(0.002), output=out, executor="dask",
                    executor_options={"client": client})
    time.sleep(1.0)  # ~30 blocks of ~0.2 s on two workers
    busy = [w for w, keys in client.processing().items() if keys]  # type: ignore[attr-defined]
    pids = client.run(os.getpid, workers=busy[:1])  # type: ignore[attr-defined]
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    res = job.result(timeout=60)
    assert read_parts(out) == DATA
    assert any(a.status == "lost" for a in res.attempts)
    assert sorted(b.block.id for b in res.blocks) == list(range(len(plan.blocks)))


def test_dask_client_restart_mid_job_exactly_once(client: object, tmp_path: Path) -> None:
    src = local_input(tmp_path)
    out = str(tmp_path / "out")
    plan = bp.plan(src, block_size=2048)
    job = bp.submit(plan, jobs.slow(0.001), output=out, executor="dask",
                    executor_options={"client": client})
    time.sleep(1.0)
    client.restart()  # type: ignore[attr-defined]
    res = job.result(timeout=60)
    assert read_parts(out) == DATA
    assert any(a.status == "lost" for a in res.attempts)


def test_dask_scheduler_address_and_user_error_names_block_and_record(
        cluster: object, tmp_path: Path) -> None:
    src = local_input(tmp_path)
    out = str(tmp_path / "out")
    bad = LINES[1234]
    address = cluster.scheduler_address  # type: ignore[attr-defined]
    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_lines(jobs.fail_on(bad), src, output=out, block_size=4096, executor="dask",
                     executor_options={"address": address}, max_attempts=2)
    message = str(info.value)
    assert f"block {info.value.block_id} of " in message
    assert "failed on all 2 attempts" in message
    assert f"ValueError: bad record {bad!r}" in message and "record " in message
    assert "Traceback" in info.value.remote_traceback
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    # the cluster lives on: only the client made for the address was closed
    with distributed.Client(address, set_as_default=False) as again:
        assert len(again.nthreads()) == 2


def test_dask_without_client_starts_and_closes_a_local_cluster(tmp_path: Path) -> None:
    src = local_input(tmp_path)
    out = str(tmp_path / "out")
    before = set(threading.enumerate())
    res = bp.map_blocks(jobs.count_block, src, output=out, block_size=5000, executor="dask",
                        workers=2)
    assert sum(int(line.split(",")[1]) for line in read_parts(out).decode().splitlines()) \
        == len(LINES)
    assert res.num_records == len(LINES)
    time.sleep(0.2)
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()
                and not t.daemon]
    assert not leftover, leftover


def test_dask_progress_reaches_the_master(client: object, tmp_path: Path) -> None:
    from blockproc.executors.dask import DaskExecutor
    from blockproc.job import Job, start_job
    from blockproc.storage import filesystem
    from blockproc.worker import Mapper

    src = local_input(tmp_path)
    plan = bp.plan(src, block_size=16384)
    executor = DaskExecutor(client=client)
    job = Job(plan, Mapper("record", jobs.slow(0.002)), output_fs=filesystem("file"),
              output_path=str(tmp_path / "out"), executor=executor)
    seen: list[str] = []
    start_job(job)
    while not job.done():
        seen.append(executor.describe())
        time.sleep(0.1)
    job.result()
    text = "\n".join(seen)
    assert "(1 slot): block " in text and "% at " in text, text[-2000:]


def test_memory_filesystem_is_refused_for_dask(memfs: str) -> None:
    bp.testing.write_files(memfs, {"a.log": b"a\n"})
    with pytest.raises(bp.ConfigError, match=r"memory://"):
        bp.map_lines(jobs.upper, f"{memfs}/a.log", output=f"{memfs}/out", executor="dask")


def test_bad_executor_options_are_refused(memfs: str, tmp_path: Path) -> None:
    src = local_input(tmp_path)
    with pytest.raises(bp.ConfigError, match=r"unknown executor_options \['listen'\] for "
                                             r"executor='dask'; valid keys: client, address"):
        bp.map_lines(jobs.upper, src, output=str(tmp_path / "o"), executor="dask",
                     executor_options={"listen": "x"})
    with pytest.raises(TypeError, match=r"must be a distributed\.Client"):
        bp.map_lines(jobs.upper, src, output=str(tmp_path / "o"), executor="dask",
                     executor_options={"client": "tcp://x:1"})
    with pytest.raises(bp.ConfigError, match="takes no executor_options"):
        bp.map_lines(jobs.upper, src, output=str(tmp_path / "o"), executor="threads",
                     executor_options={"client": None})
