"""S3 end to end against a real S3-compatible server on loopback (moto, see tests/s3server.py):
jobs through the API and the CLI, the object-store commit, ranged reads counted on the
server, inputs that change under a job, and transient server errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import blockproc as bp
from blockproc.cli import main
from blockproc.formats.base import WINDOW_SIZE
from blockproc.storage import InputChangedError, RangeSource, resolve
from blockproc.testing import read_parts
from tests import jobs
from tests.s3server import OFFLINE_ENV, Faults, S3Bucket


def log_lines(count: int, seed: int = 0) -> list[str]:
    """Lines of varied length (up to ~300 bytes), deterministic for a seed."""
    return [f"{seed}-{i:06d} " + "abcdefghij"[i % 10] * ((i * 7919 + seed) % 290)
            for i in range(count)]


def as_bytes(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def read_output(s3: S3Bucket, out_key: str) -> tuple[dict[str, Any], bytes]:
    """The manifest and the concatenated parts it lists, in block order."""
    manifest = json.loads(s3.get(f"{out_key}/_SUCCESS"))
    data = b"".join(s3.get(f"{out_key}/{entry['part']}") for entry in manifest["blocks"])
    return manifest, data


def visible_parts(s3: S3Bucket, out_key: str) -> list[str]:
    """Part-files under their final names (what a reader listing the output sees)."""
    return [k.rsplit("/", 1)[1] for k in s3.keys(out_key)
            if k.rsplit("/", 1)[1].startswith("part-") and f"{out_key}/part-" in k]


# -- reads -------------------------------------------------------------------------------

def test_range_source_sends_one_ranged_get_per_read(s3: S3Bucket) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    (url,) = s3.put({"obj.bin": data})
    fs, path = resolve(url, s3.storage_options)
    planned = bp.plan(url, storage_options=s3.storage_options).files[0]
    s3.server.reset()
    with RangeSource(fs, path, expected=planned) as source:
        assert source.read(1000, 6000) == data[1000:6000]
        assert source.read(500_000, 500_100) == data[500_000:500_100]
        assert source.read(len(data) - 10, len(data) + 50) == data[-10:]  # short at EOF
    gets = [r for r in s3.server.requests if r.method == "GET"]
    assert [r.range for r in gets] == [
        "bytes=1000-5999", "bytes=500000-500099", f"bytes={len(data) - 10}-{len(data) + 49}"]
    assert [r.bytes_sent for r in gets] == [5000, 100, 10]
    assert s3.server.count("HEAD", s3.prefix("obj.bin")) == 0  # the planned ETag: If-Match
    assert planned.token.startswith("ETag=")


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_map_lines_reads_and_writes_s3(s3: S3Bucket, executor: str) -> None:
    inputs = {f"in/{name}.log": as_bytes(log_lines(400, seed)) for seed, name in
              enumerate(["a", "b", "c"])}
    s3.put(inputs | {"in/_ignored.log": b"not an input\n", "in/notes.txt": b"no match\n"})
    out = s3.url("out")
    res = bp.map_lines(jobs.upper, s3.url("in/*.log"), output=out, block_size="16KiB",
                       executor=executor, workers=2, storage_options=s3.storage_options)
    expected = b"".join(inputs[k] for k in sorted(inputs)).upper()
    manifest, data = read_output(s3, "out")
    assert data == expected
    assert res.num_records == 1200 == res.num_records_out
    assert res.parts[0] == f"{out}/part-00000.txt"
    # _SUCCESS lists exactly the committed parts, and nothing else is visible
    assert [e["part"] for e in manifest["blocks"]] == [f"part-{i:05d}.txt"
                                                       for i in range(len(res.blocks))]
    assert visible_parts(s3, "out") == [e["part"] for e in manifest["blocks"]]
    assert not [k for k in s3.keys("out") if "_temporary" in k]
    assert all(i["token"].startswith("ETag=") for i in manifest["inputs"])


def test_cli_run_with_storage_options(s3: S3Bucket, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    (url,) = s3.put({"in/a.log": as_bytes(log_lines(300))})
    args = ["run", url, "-o", s3.url("cli-out"), "--map", "tests.jobs:upper",
            "--block-size", "8KiB", "--executor", "processes", "--workers", "2", "-q",
            "--storage-option", "key=testing", "--storage-option", "secret=testing",
            "--storage-option",
            f'client_kwargs={{"endpoint_url": "{s3.server.endpoint_url}"}}']
    assert main(args) == 0, capsys.readouterr().err
    _, data = read_output(s3, "cli-out")
    assert data == as_bytes(log_lines(300)).upper()
    assert main(["status", s3.url("cli-out"), "--verify", *args[-6:]]) == 0
    assert "verify: all" in capsys.readouterr().out
    assert read_parts(s3.url("cli-out"), storage_options=s3.storage_options) == data


def test_cli_run_with_aws_environment_variables(s3: S3Bucket, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (url,) = s3.put({"in/a.log": as_bytes(log_lines(200))})
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.server.endpoint_url)  # boto's own variables
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        assert main(["run", url, "-o", s3.url("env-out"), "--map", "tests.jobs:upper",
                     "--block-size", "8KiB", "--executor", "threads", "-q"]) == 0, \
            capsys.readouterr().err
        assert main(["status", s3.url("env-out"), "--verify"]) == 0
    finally:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # it was configured from the environment
    _, data = read_output(s3, "env-out")
    assert data == as_bytes(log_lines(200)).upper()


def test_workers_fetch_only_their_slices(s3: S3Bucket) -> None:
    lines = log_lines(20_000, seed=7)
    lines[12_345] = "L" * 9000  # one long record, across a block boundary
    data = as_bytes(lines)
    (url,) = s3.put({"big/in.log": data})
    longest = max(len(line) + 1 for line in lines)
    s3.server.reset()
    res = bp.map_blocks(jobs.count_block, url, output=s3.url("slices-out"),
                        block_size="256KiB", executor="processes", workers=2,
                        storage_options=s3.storage_options)
    blocks = len(res.blocks)
    assert blocks == -(-len(data) // (256 * 1024)) >= 10
    assert sum(int(p.split(b",")[1]) for p in
               read_output(s3, "slices-out")[1].splitlines()) == len(lines)
    reads = [r for r in s3.server.requests
             if r.method == "GET" and r.path == s3.prefix("big/in.log")]
    fetched = sum(r.bytes_sent for r in reads)
    assert all(r.range.startswith("bytes=") for r in reads), "a whole-object GET was sent"
    assert fetched <= 1.02 * len(data) + blocks * (longest + WINDOW_SIZE)
    assert fetched >= len(data)
    assert fetched == res.num_bytes_read  # what the workers counted is what the server sent


# -- commit --------------------------------------------------------------------------------

CRASHING_JOB = textwrap.dedent("""
    import json, os, sys
    import blockproc as bp
    from blockproc.output import directory as commit

    url, out, options, crash_at = sys.argv[1:3] + [json.loads(sys.argv[3]), int(sys.argv[4])]
    real_commit = commit.OutputDir.commit
    done = []

    def commit_then_crash(self, result, staging_path):
        if len(done) == crash_at:
            os._exit(17)  # the master dies after the attempt wrote, before its commit
        real_commit(self, result, staging_path)
        done.append(result.block.id)

    commit.OutputDir.commit = commit_then_crash
    bp.map_lines(str.upper, url, output=out, block_size=4096, executor="inline",
                 storage_options=options)
""")


def run_crashing_job(s3: S3Bucket, url: str, out: str, crash_at: int) -> None:
    """Run a job in another process whose master dies before committing block ``crash_at``."""
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_JOB, url, out, json.dumps(s3.storage_options),
         str(crash_at)],
        env={**os.environ, **OFFLINE_ENV}, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 17, proc.stderr.decode()


def test_crash_between_write_and_commit_leaves_nothing_visible(s3: S3Bucket) -> None:
    data = as_bytes(log_lines(600, seed=3))
    (url,) = s3.put({"in/a.log": data})
    out = s3.url("crash-out")
    run_crashing_job(s3, url, out, crash_at=2)
    keys = s3.keys("crash-out")
    assert visible_parts(s3, "crash-out") == ["part-00000.txt", "part-00001.txt"]
    assert "crash-out/_SUCCESS" not in keys
    staged = [k for k in keys if "/_temporary/" in k and "/part-00002.txt.attempt-" in k]
    assert staged, keys  # block 2 was written, but only under _temporary
    # a resumed job runs only the rest and publishes exactly one part per block
    res = bp.map_lines(jobs.upper, s3.url("in/a.log"), output=out, block_size=4096,
                       executor="threads", if_exists="resume",
                       storage_options=s3.storage_options)
    manifest, output = read_output(s3, "crash-out")
    assert output == data.upper()
    assert visible_parts(s3, "crash-out") == [e["part"] for e in manifest["blocks"]]
    assert {a["block_id"] for a in manifest["attempts"]} == set(range(2, len(res.blocks)))
    assert not [k for k in s3.keys("crash-out") if "_temporary" in k]


def test_commit_copies_one_object_and_never_lists(s3: S3Bucket) -> None:
    (url,) = s3.put({"in/a.log": as_bytes(log_lines(100))})
    s3.server.reset()
    bp.map_lines(jobs.upper, url, output=s3.url("c-out"), block_size=2048,
                 executor="inline", storage_options=s3.storage_options)
    copies = [r for r in s3.server.requests
              if r.method == "PUT" and "/c-out/part-" in r.path]
    num_parts = len(visible_parts(s3, "c-out"))
    assert len(copies) == num_parts  # one server-side copy per part-file, no rewrite
    assert s3.server.count("PUT", s3.prefix("c-out/_SUCCESS")) == 1  # one PUT, in place


def test_resume_is_correct_when_the_ledger_listing_is_stale(
        s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    data = as_bytes(log_lines(500, seed=5))
    (url,) = s3.put({"in/a.log": data})
    out = s3.url("stale-out")
    run_crashing_job(s3, url, out, crash_at=3)
    fs, _ = resolve(out, s3.storage_options)
    real_ls = fs.ls

    def stale_ls(path: str, detail: bool = False, **kwargs: Any) -> Any:
        found = real_ls(path, detail=detail, **kwargs)
        return found[:-1] if "/_blockproc/committed" in path else found  # misses one

    monkeypatch.setattr(fs, "ls", stale_ls)
    res = bp.map_lines(jobs.upper, url, output=out, block_size=4096, executor="threads",
                       if_exists="resume", storage_options=s3.storage_options)
    manifest, output = read_output(s3, "stale-out")
    assert output == data.upper()
    assert len(manifest["blocks"]) == len(res.blocks)
    rerun = {a["block_id"] for a in manifest["attempts"]}
    assert 2 in rerun and 0 not in rerun  # the hidden ledger entry's block ran again


# -- inputs that change ------------------------------------------------------------------------

@pytest.mark.parametrize("executor", ["threads", "processes"])
@pytest.mark.parametrize("change", ["content", "size"])
def test_input_changed_after_planning_fails_once_with_a_clear_message(
        s3: S3Bucket, executor: str, change: str) -> None:
    data = as_bytes(log_lines(300))
    (url,) = s3.put({"in/a.log": data})
    plan = bp.plan(url, block_size="8KiB", storage_options=s3.storage_options)
    new = data.replace(b"0-000001", b"X-XXXXXX") if change == "content" else data + b"more\n"
    s3.put({"in/a.log": new})
    job = bp.submit(plan, jobs.upper, output=s3.url("chg-out"), executor=executor, workers=2,
                    storage_options=s3.storage_options)
    with pytest.raises(bp.BlockFailedError, match="changed after the job was planned") as info:
        job.result(timeout=120)
    message = str(info.value)
    assert "in/a.log" in message
    assert ("ETag" in message) if change == "content" else ("size" in message)
    assert info.value.attempt == 1  # not retried: it would fail the same way
    assert "chg-out/_SUCCESS" not in s3.keys("chg-out")


def test_input_changed_while_open_is_reported_not_mixed(s3: S3Bucket) -> None:
    data = as_bytes(log_lines(200))
    (url,) = s3.put({"in/a.log": data})
    planned = bp.plan(url, storage_options=s3.storage_options).files[0]
    fs, path = resolve(url, s3.storage_options)
    with RangeSource(fs, path, expected=planned) as source:
        assert source.read(0, 100) == data[:100]
        s3.put({"in/a.log": data.upper()})
        with pytest.raises(InputChangedError, match="ETag"):
            source.read(100, 200)


# -- transient errors ----------------------------------------------------------------------------

NO_CLIENT_RETRIES = {"config_kwargs": {"retries": {"total_max_attempts": 1}}}
"""botocore gives up at once, so the server's errors reach blockproc's own retries."""


def test_transient_read_errors_are_retried_inside_the_attempt(
        s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_IO_BACKOFF", "0.01")
    data = as_bytes(log_lines(3000, seed=2))
    (url,) = s3.put({"in/a.log": data})
    options = s3.server.storage_options(**NO_CLIENT_RETRIES)
    faults = s3.server.inject(Faults(every=3, methods=("GET", "HEAD"), status=500,
                                     path_contains="/in/"))
    res = bp.map_lines(jobs.upper, url, output=s3.url("t-out"), block_size="32KiB",
                       executor="threads", workers=1, storage_options=options)
    assert faults.failed >= 5
    assert res.num_retries == 0  # every error was absorbed inside its attempt
    assert read_output(s3, "t-out")[1] == data.upper()


def test_throttled_writes_and_commits_are_retried(s3: S3Bucket,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_IO_BACKOFF", "0.01")
    data = as_bytes(log_lines(800, seed=4))
    (url,) = s3.put({"in/a.log": data})
    options = s3.server.storage_options(**NO_CLIENT_RETRIES)
    faults = s3.server.inject(Faults(every=2, methods=("PUT",), status=500,
                                     path_contains="/w-out/_blockproc/committed/"))
    res = bp.map_lines(jobs.upper, url, output=s3.url("w-out"), block_size="16KiB",
                       executor="threads", workers=1, storage_options=options)
    assert faults.failed >= 2
    assert res.num_retries == 0
    assert read_output(s3, "w-out")[1] == data.upper()


def test_random_server_errors_with_worker_processes(s3: S3Bucket,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_IO_BACKOFF", "0.01")  # inherited by the worker processes
    data = as_bytes(log_lines(4000, seed=9))
    (url,) = s3.put({"in/a.log": data})
    options = s3.server.storage_options(**NO_CLIENT_RETRIES)
    faults = s3.server.inject(Faults(rate=0.2, status=503, path_contains="/in/", seed=1))
    bp.map_lines(jobs.upper, url, output=s3.url("r-out"), block_size="64KiB",
                 executor="processes", workers=2, storage_options=options)
    assert faults.failed > 0
    assert read_output(s3, "r-out")[1] == data.upper()
