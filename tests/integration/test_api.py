"""End-to-end jobs through the Python API, on memory:// and local files, every executor."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import fsspec
import pytest

import blockproc as bp
from blockproc.output import read_ledger
from blockproc.storage import resolve
from blockproc.testing import read_parts, write_files
from tests import jobs

LINES = [f"{i:05d} {'x' * (i % 37)}" for i in range(3000)]
DATA = ("\n".join(LINES) + "\n").encode()


def local_input(root: str, data: bytes = DATA, name: str = "in.log") -> str:
    path = Path(root) / "input" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def manifest(output: str) -> dict:
    fs, path = fsspec.core.url_to_fs(output)
    return json.loads(fs.cat_file(f"{path.rstrip('/')}/_SUCCESS"))


def test_map_lines_on_local_files_every_executor(local_root: str, executor: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    res = bp.map_lines(jobs.upper, src, output=out, block_size=4096, executor=executor,
                       workers=2)
    assert read_parts(out) == DATA.upper()
    assert res.num_records == len(LINES) == res.num_records_out
    assert len(res.blocks) == -(-len(DATA) // 4096)
    names = [f"part-{i:05d}.txt" for i in range(len(res.blocks))]
    assert [Path(p).name for p in res.parts] == names
    entries = manifest(out)["blocks"]
    assert [e["id"] for e in entries] == list(range(len(res.blocks)))
    assert {"id", "path", "start", "end", "part", "records_in", "records_out", "bytes_read",
            "bytes_written", "checksum", "attempt", "worker", "seconds"} <= set(entries[0])
    assert not (Path(out) / "_temporary").exists()


@pytest.mark.parametrize("executor_name", ["inline", "threads"])
def test_map_lines_on_memory_filesystem(memfs: str, executor_name: str) -> None:
    (src,) = write_files(memfs, {"in/a.log": DATA})
    res = bp.map_lines(jobs.drop_empty, src, output=f"{memfs}/out", block_size=1000,
                       executor=executor_name)
    assert read_parts(f"{memfs}/out") == DATA
    assert res.output == f"{memfs}/out"


def test_lambda_runs_in_worker_processes(local_root: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    suffix = "!"
    bp.map_lines(lambda s: s + suffix, src, output=out, block_size=8192, workers=2)
    assert read_parts(out) == b"".join(line.encode() + b"!\n" for line in LINES)


def test_mapper_results_none_iterable_and_bytes(memfs: str) -> None:
    (src,) = write_files(memfs, {"a.log": b"a\nb\nc\n"})

    def fn(line: str) -> object:
        return {"a": None, "b": ["b1", b"b2"], "c": b"c"}[line]

    res = bp.map_lines(fn, src, output=f"{memfs}/out", executor="inline")
    assert read_parts(f"{memfs}/out") == b"b1\nb2\nc\n"
    assert (res.num_records, res.num_records_out) == (3, 3)


def test_map_blocks_gets_every_record_once(local_root: str, executor: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    res = bp.map_blocks(jobs.count_block, src, output=out, block_size=5000, executor=executor,
                        workers=2)
    rows = [line.split(",") for line in read_parts(out).decode().splitlines()]
    assert [int(r[0]) for r in rows] == list(range(len(res.blocks)))
    assert sum(int(r[1]) for r in rows) == len(LINES)
    assert res.num_records == len(LINES)


def test_map_blocks_batch_data_and_verbatim_str(memfs: str) -> None:
    (src,) = write_files(memfs, {"a.log": b"one\ntwo\nthree\n"})
    bp.map_blocks(lambda b: b.data.decode().replace("\n", ";"), src, output=f"{memfs}/out",
                  executor="inline", block_size=5)
    assert read_parts(f"{memfs}/out") == b"one;two;three;"


def test_map_command_pipes_each_block(local_root: str, executor: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    res = bp.map_command("grep ' x$' || true", src, output=out, block_size=3000,
                         executor=executor, workers=2)
    expected = b"".join(line.encode() + b"\n" for line in LINES if line.endswith(" x"))
    assert read_parts(out) == expected
    assert res.num_records == len(LINES)


def test_command_failure_names_exit_code_and_stderr(memfs: str) -> None:
    (src,) = write_files(memfs, {"a.log": b"a\nb\n"})
    match = r"(?s)exited with code 3.*boom on stderr"
    with pytest.raises(bp.BlockFailedError, match=match) as info:
        bp.map_command("echo 'boom on stderr' >&2; exit 3", src, output=f"{memfs}/out",
                       executor="inline", max_attempts=2)
    assert info.value.attempt == 2


def test_user_error_fails_job_with_block_range_record_and_traceback(local_root: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    bad = LINES[1234]
    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_lines(jobs.fail_on(bad), src, output=out, block_size=4096, workers=2,
                     max_attempts=2)
    err = info.value
    block = bp.plan(src, block_size=4096).blocks[err.block_id]
    message = str(err)
    assert f"block {err.block_id} of " in message
    assert f"{block.path} [{block.start}, {block.end})" in message
    assert "failed on all 2 attempts" in message
    assert f"ValueError: bad record {bad!r}" in message
    assert "record " in message and repr(bad) in message
    assert "def mapper" in err.remote_traceback or "mapper" in err.remote_traceback
    assert isinstance(err.__cause__, ValueError)  # the user's exception, pickled back
    assert "Traceback" in str(err.__cause__.__cause__)  # its traceback text, once
    assert not (Path(out) / "_SUCCESS").exists()
    assert not (Path(out) / "_temporary").exists()


def test_failed_job_leaves_only_complete_parts(local_root: str) -> None:
    src = local_input(local_root)
    out = Path(local_root) / "out"
    with pytest.raises(bp.BlockFailedError):
        bp.map_lines(jobs.fail_on(LINES[-1]), src, output=str(out), block_size=4096,
                     executor="inline", max_attempts=1)
    plan = bp.plan(src, block_size=4096)
    for part in out.glob("part-*"):
        block = plan.blocks[int(part.stem.split("-")[1])]
        aligned = _sequential_block_bytes(block)
        assert part.read_bytes() == aligned.upper() or part.read_bytes() == aligned


def _sequential_block_bytes(block: bp.Block) -> bytes:
    data = Path(block.path).read_bytes()
    start = 0 if block.start == 0 else data.index(b"\n", block.start) + 1
    end = len(data) if block.end >= len(data) else data.index(b"\n", block.end) + 1
    return data[start:end]


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_killed_worker_process_block_runs_again(local_root: str, how: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    marker = str(Path(local_root) / "killed")
    make = jobs.kill_once if how == "kill" else jobs.exit_once
    res = bp.map_lines(make(marker, LINES[2000]), src, output=out, block_size=4096, workers=2)
    assert Path(marker).exists()
    assert read_parts(out) == DATA
    lost = [a for a in res.attempts if a.status == "lost"]
    assert len(lost) == 1
    assert ("SIGKILL" if how == "kill" else "exit code 3") in lost[0].error
    winner = next(b for b in res.blocks if b.block.id == lost[0].block_id)
    assert winner.attempt == 2
    assert manifest(out)["blocks"][winner.block.id]["attempt"] == 2


def test_resume_runs_only_uncommitted_blocks_and_matches_clean_run(local_root: str) -> None:
    src = local_input(local_root)
    clean, out = str(Path(local_root) / "clean"), str(Path(local_root) / "out")
    bp.map_lines(jobs.upper, src, output=clean, block_size=4096, executor="inline")
    with pytest.raises(bp.BlockFailedError):
        bp.map_lines(jobs.fail_on(LINES[1500]), src, output=out, block_size=4096,
                     executor="inline", max_attempts=1)
    committed = set(read_ledger(*resolve(out)))
    assert committed and len(committed) < len(bp.plan(src, block_size=4096).blocks)
    with pytest.raises(bp.OutputExistsError, match="unfinished blockproc job"):
        bp.map_lines(jobs.upper, src, output=out, block_size=4096, executor="inline")
    res = bp.map_lines(jobs.upper, src, output=out, block_size=4096, executor="inline",
                       if_exists="resume")
    ran = {a.block_id for a in res.attempts}
    assert ran == set(range(len(res.blocks))) - committed
    clean_sums = [e["checksum"] for e in manifest(clean)["blocks"]]
    # blocks committed by the failed run hold identity output, the rest upper-case
    assert read_parts(out) != read_parts(clean)
    resumed = manifest(out)["blocks"]
    assert [e["checksum"] for e in resumed if e["id"] not in committed] == \
        [c for i, c in enumerate(clean_sums) if i not in committed]


def test_resume_with_same_function_is_byte_identical(local_root: str) -> None:
    src = local_input(local_root)
    clean, out = str(Path(local_root) / "clean"), str(Path(local_root) / "out")
    bp.map_lines(jobs.upper, src, output=clean, block_size=4096, executor="inline")
    marker = Path(local_root) / "once"

    def fail_first_time(line: str) -> str:
        if line == LINES[2500] and not marker.exists():
            marker.write_text("x")
            raise RuntimeError("transient")
        return line.upper()

    with pytest.raises(bp.BlockFailedError):
        bp.map_lines(fail_first_time, src, output=out, block_size=4096, executor="inline",
                     max_attempts=1)
    bp.map_lines(fail_first_time, src, output=out, block_size=4096, executor="inline",
                 if_exists="resume")
    assert [e["checksum"] for e in manifest(out)["blocks"]] == \
        [e["checksum"] for e in manifest(clean)["blocks"]]
    assert read_parts(out) == read_parts(clean)


def test_resume_refuses_a_different_plan(local_root: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    bp.map_lines(jobs.upper, src, output=out, block_size=4096, executor="inline")
    with pytest.raises(bp.OutputExistsError, match="different plan"):
        bp.map_lines(jobs.upper, src, output=out, block_size=8192, executor="inline",
                     if_exists="resume")


def test_resume_of_finished_job_runs_nothing(local_root: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    bp.map_lines(jobs.upper, src, output=out, block_size=4096, executor="inline")
    res = bp.map_lines(jobs.upper, src, output=out, block_size=4096, executor="inline",
                       if_exists="resume")
    assert res.attempts == ()
    assert read_parts(out) == DATA.upper()


def test_existing_output_is_refused_then_overwritten(local_root: str) -> None:
    src = local_input(local_root)
    out = Path(local_root) / "out"
    bp.map_lines(jobs.identity, src, output=str(out), executor="inline", block_size=1000)
    with pytest.raises(bp.OutputExistsError, match=r"finished blockproc job.*overwrite"):
        bp.map_lines(jobs.upper, src, output=str(out), executor="inline")
    assert read_parts(str(out)) == DATA
    bp.map_lines(jobs.upper, src, output=str(out), executor="inline", if_exists="overwrite")
    assert read_parts(str(out)) == DATA.upper()
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.txt"]  # none stale


@pytest.mark.parametrize("if_exists", ["error", "overwrite", "resume"])
@pytest.mark.parametrize("foreign", [["keep.txt"], ["part-00000.txt", "notes.md"],
                                     ["_SUCCESS", "photos/"]])
def test_a_folder_of_the_users_files_is_never_touched(local_root: str, if_exists: str,
                                                       foreign: list[str]) -> None:
    src = local_input(local_root)
    out = Path(local_root) / "out"
    for name in foreign:
        if name.endswith("/"):
            (out / name).mkdir(parents=True)
            (out / name / "a.jpg").write_bytes(b"jpeg")
        else:
            out.mkdir(exist_ok=True)
            (out / name).write_text(f"user data {name}")
    before = sorted((str(p.relative_to(out)), p.is_file() and p.read_bytes())
                    for p in out.rglob("*"))
    user_names = [n.rstrip("/") for n in foreign if n not in ("part-00000.txt", "_SUCCESS")]
    with pytest.raises(bp.OutputExistsError, match=f"did not write \\({user_names[0]}"):
        bp.map_lines(jobs.upper, src, output=str(out), executor="inline",
                     if_exists=if_exists)  # type: ignore[arg-type]
    after = sorted((str(p.relative_to(out)), p.is_file() and p.read_bytes())
                   for p in out.rglob("*"))
    assert after == before  # nothing deleted, nothing added (not even a lock)


def test_output_that_contains_the_input_is_refused(local_root: str) -> None:
    src = local_input(local_root)
    with pytest.raises(bp.ConfigError, match="contains the input"):
        bp.map_lines(jobs.upper, src, output=str(Path(local_root)), executor="inline",
                     if_exists="overwrite")
    assert Path(src).read_bytes() == DATA


def test_unpicklable_function_is_refused_before_any_block_runs(local_root: str) -> None:
    src = local_input(local_root)
    out = Path(local_root) / "out"
    lock = threading.Lock()
    with pytest.raises(bp.ConfigError, match=r"cannot send .* to worker processes"):
        bp.map_lines(lambda s: (lock, s)[1], src, output=str(out))
    assert not out.exists()


def test_memory_filesystem_with_processes_is_refused(memfs: str) -> None:
    (src,) = write_files(memfs, {"a.log": b"a\n"})
    with pytest.raises(bp.ConfigError, match=r"memory://.*threads"):
        bp.map_lines(jobs.upper, src, output=f"{memfs}/out")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"block_size": 0}, "block_size must be >= 1"),
    ({"block_size": "lots"}, "block_size 'lots' is not a size"),
    ({"executor": "gpu"}, "unknown executor 'gpu'; choose one of inline, threads, processes"),
    ({"if_exists": "merge"}, "if_exists must be one of"),
    ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
    ({"format": "xml"}, "unknown format 'xml'"),
])
def test_bad_options_are_refused_with_the_value(memfs: str, kwargs: dict, match: str) -> None:
    (src,) = write_files(memfs, {"a.log": b"a\n"})
    with pytest.raises(bp.ConfigError, match=match):
        bp.map_lines(jobs.upper, src, output=f"{memfs}/out", **kwargs)


def test_missing_input_names_the_path(memfs: str) -> None:
    with pytest.raises(bp.NoInputFilesError, match=r"'memory://nowhere/x.log' does not exist"):
        bp.map_lines(jobs.upper, "memory://nowhere/x.log", output=f"{memfs}/out")


def test_gzip_input_is_one_block_and_decompressed(local_root: str) -> None:
    src = local_input(local_root, gzip.compress(DATA), name="in.log.gz")
    out = str(Path(local_root) / "out")
    plan = bp.plan(src, block_size=1024)
    assert len(plan.blocks) == 1
    res = bp.map_lines(jobs.upper, src, output=out, block_size=1024, executor="threads")
    assert read_parts(out) == DATA.upper()
    assert res.num_records == len(LINES)


def test_worker_reads_only_its_slice(local_root: str) -> None:
    long_line = "y" * 50_000
    data = DATA + (long_line + "\n").encode() + DATA
    src = local_input(local_root, data)
    res = bp.map_lines(jobs.identity, src, output=str(Path(local_root) / "out"),
                       block_size=8192, executor="threads", workers=2)
    bound = len(data) + len(res.blocks) * (len(long_line) + 1 + 64 * 1024)
    assert res.num_bytes_read <= bound
    assert sum(b.bytes_read for b in res.blocks) == res.num_bytes_read
    assert res.num_bytes_read >= len(data)


def test_empty_input_gives_success_and_no_parts(local_root: str) -> None:
    src = local_input(local_root, b"")
    out = str(Path(local_root) / "out")
    res = bp.map_lines(jobs.upper, src, output=out, executor="inline")
    assert res.blocks == ()
    assert manifest(out)["totals"]["num_blocks"] == 0


def test_directory_input_skips_underscore_and_dot_files(local_root: str) -> None:
    first = str(Path(local_root) / "first")
    src = local_input(local_root)
    bp.map_lines(jobs.upper, src, output=first, block_size=4096, executor="inline")
    second = str(Path(local_root) / "second")
    res = bp.map_lines(jobs.identity, first, output=second, executor="inline")
    assert read_parts(second) == DATA.upper()
    assert all(Path(b.block.path).name.startswith("part-") for b in res.blocks)


def test_submit_returns_a_future_like_job(memfs: str) -> None:
    (src,) = write_files(memfs, {"a.log": DATA})
    plan = bp.plan(src, block_size=2048)
    seen: list[bp.Job] = []
    job = bp.submit(plan, jobs.upper, output=f"{memfs}/out", executor="threads", workers=2)
    job.add_done_callback(seen.append)
    res = job.result(timeout=60)
    assert job.done() and not job.cancelled() and job.exception() is None
    assert seen == [job]
    assert res.num_records == len(LINES)
    assert "committed" in repr(job)


def test_cancel_stops_workers_and_leaves_resumable_state(local_root: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    plan = bp.plan(src, block_size=2048)
    job = bp.submit(plan, jobs.slow(0.002), output=out, workers=2)
    time.sleep(1.5)
    started = time.monotonic()
    assert job.cancel()
    with pytest.raises(bp.JobCancelledError, match="resume"):
        job.result(timeout=30)
    assert time.monotonic() - started < 5
    assert job.cancelled()
    assert not Path(out, "_SUCCESS").exists()
    res = bp.map_lines(jobs.identity, src, output=out, block_size=2048, if_exists="resume",
                       workers=2)
    assert read_parts(out) == DATA
    assert len({a.block_id for a in res.attempts}) < len(plan.blocks)


def test_progress_bar_runs(memfs: str, capsys: pytest.CaptureFixture[str]) -> None:
    (src,) = write_files(memfs, {"a.log": DATA})
    bp.map_lines(jobs.upper, src, output=f"{memfs}/out", executor="inline", progress=True,
                 block_size=4096)
    err = capsys.readouterr().err
    assert "blockproc" in err and f"blocks {-(-len(DATA) // 4096)}/" in err


def test_attempts_of_every_run_are_counted_in_the_manifest(local_root: str) -> None:
    src = local_input(local_root)
    out = str(Path(local_root) / "out")
    flag = Path(local_root) / "failing"
    flag.touch()
    bad = LINES[len(LINES) // 2]
    mapper = jobs.fail_while(str(flag), bad)
    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_lines(mapper, src, output=out, executor="inline", block_size=1000,
                     max_attempts=3)
    bad_block = info.value.block_id
    flag.unlink()
    res = bp.map_lines(mapper, src, output=out, executor="inline", block_size=1000,
                       if_exists="resume")
    manifest = json.loads((Path(out) / "_SUCCESS").read_text())
    by_id = {b["id"]: b for b in manifest["blocks"]}
    assert by_id[bad_block]["attempts"] == 4  # 3 failed in the first run, 1 in the second
    assert all(b["attempts"] == 1 for i, b in by_id.items() if i != bad_block)
    earlier = manifest["earlier_attempts"]
    assert [a["status"] for a in earlier if a["block_id"] == bad_block] == ["failed"] * 3
    assert {a["job_id"] for a in earlier} != {res.job_id}
    assert res.blocks[bad_block].attempts == 4
