"""What a block's attempt ends with: the return values each output format accepts, the
errors that are retried and those that fail the job at once, and what a ``--cmd``
writes to stderr."""

from __future__ import annotations

import bz2
import errno
import gzip
import json
import lzma
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import blockproc as bp
from blockproc.executors import make_executor
from blockproc.job import Job, JobOptions, run_job
from blockproc.output_formats import ACCEPTED_RETURNS, OUTPUT_FORMATS
from blockproc.storage import resolve
from blockproc.testing import read_parts
from blockproc.worker import Mapper

LINES = b"alpha\nbeta\ngamma\n"


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def fails_at_once(call: Any) -> bp.BlockFailedError:
    """Run ``call()`` and return its BlockFailedError, checking it was not retried."""
    with pytest.raises(bp.BlockFailedError) as info:
        call()
    assert "was not retried (the same error would happen again)" in str(info.value)
    assert info.value.attempt == 1
    return info.value


# -- return values -----------------------------------------------------------------------

REFUSED_PER_RECORD = [
    ("text", {"k": "beta"}, "dict"),
    ("text", 5, "int"),
    ("text", {"a", "b"}, "set"),
    ("text", ["ok", 3.5], "float"),
    ("csv", "beta", "str"),
    ("csv", 7, "int"),
    ("jsonl", {1, 2}, "set"),
    ("jsonl", object(), "object"),
    ("parquet", "beta", "str"),
    ("parquet", 1.5, "float"),
    ("npy", "beta", "str"),
    ("npy", {"a": 1}, "dict"),
]


@pytest.mark.parametrize(("output_format", "value", "kind"), REFUSED_PER_RECORD,
                         ids=[f"{f}-{k}" for f, _, k in REFUSED_PER_RECORD])
def test_a_refused_return_value_fails_at_once_naming_record_offset_type_and_accepted(
        tmp_path: Path, output_format: str, value: Any, kind: str) -> None:
    src = write(tmp_path, "in.txt", LINES)
    good = {"text": "x", "csv": {"a": 1}, "jsonl": {"a": 1}, "parquet": {"a": 1},
            "npy": np.float64(1.0)}[output_format]

    def fn(line: str) -> Any:
        return value if line == "beta" else good

    error = fails_at_once(lambda: bp.map_lines(
        fn, src, output=str(tmp_path / "out"), executor="inline",
        output_format=output_format))
    message = str(error)
    assert "ReturnTypeError" in message
    assert "record 1 of block 0 of 1" in message and "at byte offset 6 ('beta')" in message
    assert re.search(rf"returned {kind}\b", message) or f"cannot write {kind}" in message
    assert f"output_format='{output_format}'" in message
    assert ACCEPTED_RETURNS[output_format, "record"] in message
    assert not (tmp_path / "out" / "_SUCCESS").exists()


REFUSED_PER_BLOCK = [
    ("text", 5, "int"),
    ("text", {"k": "v"}, "dict"),
    ("text", ["line", 7], "int"),
    ("csv", 5, "int"),
    ("jsonl", {1, 2}, "set"),
    ("parquet", 5, "int"),
    ("parquet", "text", "str"),
    ("npy", "text", "str"),
    ("npy", [{"a": 1}], "list"),
]


@pytest.mark.parametrize(("output_format", "value", "kind"), REFUSED_PER_BLOCK,
                         ids=[f"{f}-{k}" for f, _, k in REFUSED_PER_BLOCK])
def test_a_refused_block_result_fails_at_once_naming_the_block(
        tmp_path: Path, output_format: str, value: Any, kind: str) -> None:
    src = write(tmp_path, "in.txt", LINES)
    error = fails_at_once(lambda: bp.map_blocks(
        lambda batch: value, src, output=str(tmp_path / "out"), executor="inline",
        output_format=output_format))
    message = str(error)
    assert f"for block 0 of 1 ({src} [0, {len(LINES)}))" in message
    assert kind in message and f"output_format='{output_format}'" in message


@pytest.mark.parametrize(("output_format", "value", "expected"), [
    ("text", ["a", None, b"b"], b"a\nb\n"),
    ("text", (s for s in ["g"]), b"g\n"),
    ("jsonl", 5, b"5\n"),
    ("csv", [{"a": 1}], b"a\n1\n"),
    ("jsonl", pa.record_batch({"x": [1, 2]}), b'{"x": 1}\n{"x": 2}\n'),
])
def test_accepted_block_results_are_written(tmp_path: Path, output_format: str, value: Any,
                                            expected: bytes) -> None:
    src = write(tmp_path, "in.txt", LINES)
    res = bp.map_blocks(lambda batch: value, src, output=str(tmp_path / "out"),
                        executor="inline", output_format=output_format)
    assert Path(res.parts[0]).read_bytes() == expected


def test_every_output_format_documents_what_it_accepts_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for name in OUTPUT_FORMATS:
        for mode in ("record", "block"):
            assert ACCEPTED_RETURNS[name, mode] in readme, (name, mode)


def test_a_user_exception_is_still_retried(tmp_path: Path) -> None:
    src = write(tmp_path, "in.txt", LINES)

    def fn(line: str) -> str:
        raise TypeError("the user's own bug")

    with pytest.raises(bp.BlockFailedError, match="failed on all 2 attempts") as info:
        bp.map_lines(fn, src, output=str(tmp_path / "out"), executor="inline",
                     max_attempts=2)
    assert info.value.attempt == 2


# -- errors that would repeat ------------------------------------------------------------


def test_undecodable_bytes_fail_at_once(tmp_path: Path) -> None:
    src = write(tmp_path, "in.txt", b"ok\n\xff\xfe bad\n")
    error = fails_at_once(lambda: bp.map_lines(str.upper, src, output=str(tmp_path / "out"),
                                               executor="inline"))
    assert "TextDecodeError" in str(error) and "at byte 3 of the file" in str(error)


def _zstd(data: bytes) -> bytes:
    import zstandard

    return bytes(zstandard.ZstdCompressor().compress(data))


COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "zst": _zstd}


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_a_truncated_compressed_input_fails_at_once(tmp_path: Path, ext: str,
                                                    keep: float) -> None:
    noise = bytes(33 + (i * 7919) % 90 for i in range(16384))  # compresses little, decodes
    whole = COMPRESSORS[ext](noise + b"\n" + LINES * 100)
    src = write(tmp_path, f"in.txt.{ext}", whole[:int(len(whole) * keep)])
    error = fails_at_once(lambda: bp.map_lines(str.upper, src, output=str(tmp_path / "out"),
                                               executor="inline"))
    assert "is not a complete" in str(error) and "truncated or corrupt" in str(error)


@pytest.mark.parametrize(("ext", "compress", "name"), [("gz", gzip.compress, "gzip"),
                                                       ("zst", _zstd, "zstd")])
def test_a_truncated_file_packed_with_others_fails_at_once_naming_it(
        tmp_path: Path, ext: str, compress: Any, name: str) -> None:
    (tmp_path / "small").mkdir()
    for stem in ("a", "b", "c"):
        write(tmp_path, f"small/{stem}.txt.{ext}", compress(LINES))
    write(tmp_path, f"small/b.txt.{ext}", compress(LINES * 50)[:-10])
    plan = bp.plan(str(tmp_path / "small"), block_size="1MiB")
    assert [len(b.files) for b in plan.blocks] == [3]  # packed into one block
    error = fails_at_once(lambda: bp.map_lines(str.upper, str(tmp_path / "small"),
                                               output=str(tmp_path / "out"),
                                               executor="inline"))
    assert f"'{tmp_path / 'small' / f'b.txt.{ext}'}' (packed into block 0 of 1" in str(error)
    assert f"is not a complete {name} stream" in str(error)


def test_packed_zstd_files_of_several_frames_are_read_whole(tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    for stem in ("a", "b"):
        write(tmp_path, f"small/{stem}.txt.zst", _zstd(LINES) + _zstd(b"delta\n"))
    res = bp.map_lines(str.upper, str(tmp_path / "small"), output=str(tmp_path / "out"),
                       executor="inline")
    assert [len(b.block.files) for b in res.blocks] == [2]
    assert read_parts(str(tmp_path / "out")) == (LINES + b"delta\n").upper() * 2


def test_a_zstd_input_of_several_frames_is_read_whole(tmp_path: Path) -> None:
    src = write(tmp_path, "in.txt.zst", _zstd(LINES) + _zstd(b"delta\n"))
    res = bp.map_lines(str.upper, src, output=str(tmp_path / "out"), executor="inline")
    assert Path(res.parts[0]).read_bytes() == b"ALPHA\nBETA\nGAMMA\nDELTA\n"


def test_a_parquet_file_without_its_footer_fails_at_once(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": list(range(100))}), tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    src = write(tmp_path, "cut.parquet", data[:-30])
    error = fails_at_once(lambda: bp.map_blocks(
        lambda t: t, src, output=str(tmp_path / "out"), executor="inline",
        format="parquet", output_format="parquet"))
    assert "does not end with a Parquet footer" in str(error)


def test_a_malformed_csv_row_fails_at_once(tmp_path: Path) -> None:
    src = write(tmp_path, "in.csv", b"a,b\n1,2\n3,4,5\n")
    error = fails_at_once(lambda: bp.map_lines(
        lambda row: row["a"], src, output=str(tmp_path / "out"), executor="inline",
        format="csv"))
    assert "cannot parse the rows as CSV" in str(error) and "Expected 2 columns" in str(error)


@pytest.mark.parametrize(("command", "what"), [
    ("no-such-command-blockproc", "was not found: sh exited with code 127"),
    ("./not-executable.sh", "cannot be run (not executable): sh exited with code 126"),
])
def test_a_command_that_cannot_run_fails_at_once(tmp_path: Path, monkeypatch: Any,
                                                 command: str, what: str) -> None:
    (tmp_path / "not-executable.sh").write_text("echo hi\n")
    monkeypatch.chdir(tmp_path)
    src = write(tmp_path, "in.txt", LINES)
    error = fails_at_once(lambda: bp.map_command(command, src, output=str(tmp_path / "out"),
                                                 executor="inline"))
    assert "CommandNotFoundError" in str(error) and what in str(error)


def test_a_failing_command_is_still_retried(tmp_path: Path) -> None:
    src = write(tmp_path, "in.txt", LINES)
    with pytest.raises(bp.BlockFailedError, match="failed on all 2 attempts"):
        bp.map_command("exit 3", src, output=str(tmp_path / "out"), executor="inline",
                       max_attempts=2)


class DiskFull:
    """A fault plan whose part-file write fails with ENOSPC (errno 28), as on a full disk.

    Simulated: making a real file system full needs root (a small tmpfs)."""

    def fire(self, point: str, task: Any) -> None:
        if point == "during_write":
            raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_fails_at_once(tmp_path: Path) -> None:
    src = write(tmp_path, "in.txt", LINES)
    fs, path = resolve(str(tmp_path / "out"))
    job = Job(bp.plan(src), Mapper("record", str.upper), output_fs=fs, output_path=path,
              executor=make_executor("inline", 1),
              options=JobOptions(max_attempts=4, hook=DiskFull()))
    run_job(job)
    error = fails_at_once(job.result)
    assert "No space left on device" in str(error)


# -- a command's stderr ------------------------------------------------------------------


def test_a_commands_stderr_is_staged_and_counted(tmp_path: Path) -> None:
    src = write(tmp_path, "in.txt", LINES)
    res = bp.map_command("echo warning: odd line >&2; cat", src, block_size=6,
                         output=str(tmp_path / "out"), executor="inline")
    assert [b.stderr_bytes for b in res.blocks] == [len(b"warning: odd line\n")] * 3
    manifest = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert [b["stderr_bytes"] for b in manifest["blocks"]] == [18] * 3
    assert manifest["totals"]["blocks_with_stderr"] == 3
    quiet = bp.map_command("cat", src, output=str(tmp_path / "quiet"), executor="inline")
    assert [b.stderr_bytes for b in quiet.blocks] == [0]


def test_a_commands_stderr_is_kept_per_block_under_logs(tmp_path: Path) -> None:
    src = write(tmp_path, "in.txt", LINES)
    bp.map_command("echo warning >&2; cat", src, block_size=6, output=str(tmp_path / "out"),
                   executor="inline")
    logs = tmp_path / "out" / "_logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "part-00000.stderr", "part-00001.stderr", "part-00002.stderr"]
    assert (logs / "part-00001.stderr").read_bytes() == b"warning\n"


# -- what the CLI shows ------------------------------------------------------------------

MAPPER = '''
def skip_beta(line):
    if line == "beta":
        raise ValueError("beta is bad")
    return line
'''


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from blockproc.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().out


def test_summary_and_status_show_skipped_bad_records_and_where_they_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mapper_skip.py").write_text(MAPPER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    src, out = write(tmp_path, "in.txt", LINES), str(tmp_path / "out")
    code, text = run_cli(capsys, "run", src, "-o", out, "--map", "mapper_skip:skip_beta",
                         "--max-bad-records", "3", "--executor", "inline")
    assert code == 0
    line = f"bad records: 1 skipped, logged in {out}/_errors/"
    assert line in text.splitlines()
    code, text = run_cli(capsys, "status", out)
    assert code == 0 and line in text.splitlines()
    assert (tmp_path / "out" / "_errors" / "part-00000.jsonl").exists()


def test_summary_and_status_count_the_blocks_that_wrote_to_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = write(tmp_path, "in.txt", LINES), str(tmp_path / "out")
    code, text = run_cli(capsys, "run", src, "-o", out, "--cmd", "echo warn >&2; cat",
                         "--block-size", "6", "--executor", "inline")
    assert code == 0
    line = f"stderr: kept for 3 of 3 blocks in {out}/_logs/"
    assert line in text.splitlines()
    assert line in run_cli(capsys, "status", out)[1].splitlines()
    code, text = run_cli(capsys, "run", src, "-o", str(tmp_path / "quiet"), "--cmd", "cat",
                         "--executor", "inline")
    assert code == 0 and "stderr" not in text and "bad records" not in text


def test_status_counts_the_attempts_of_every_run_of_a_resumed_job(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = write(tmp_path, "in.txt", LINES), str(tmp_path / "out")
    marker = tmp_path / "failed-once"

    def flaky(line: str) -> str:
        if line == "alpha" and not marker.exists():
            marker.touch()
            raise ValueError("first attempt of block 0 fails")
        if line == "gamma":
            raise ValueError("block 1 fails in the first run")
        return line

    with pytest.raises(bp.BlockFailedError):  # block 0 committed at its 2nd attempt
        bp.map_lines(flaky, src, output=out, block_size=6, executor="inline",
                     max_attempts=2)
    res = bp.map_lines(str.upper, src, output=out, block_size=6, executor="inline",
                       if_exists="resume")
    assert len(res.attempts) == 2  # this run: blocks 1 and 2
    text = run_cli(capsys, "status", out)[1]
    assert "attempts: 2 (2 committed); 0 speculative" in text
    # the first run: block 0 failed once and committed, block 1 failed twice
    assert "resumed: earlier runs made 4 attempts and committed 1 block; 6 attempts in all " \
        "runs" in text


def test_errors_that_would_repeat_are_not_retried_on_any_executor(
        tmp_path: Path, executor: str) -> None:
    # the verdict is made where the attempt runs and travels back with its Failed event
    src = write(tmp_path, "in.txt", LINES)
    error = fails_at_once(lambda: bp.map_lines(lambda line: {"k": line}, src,
                                               output=str(tmp_path / "out"),
                                               executor=executor, workers=1))
    assert "returned dict {'k': 'alpha'}" in str(error)
    gz = write(tmp_path, "in.txt.gz", gzip.compress(LINES * 100)[:-12])
    error = fails_at_once(lambda: bp.map_lines(str.upper, gz, output=str(tmp_path / "gz"),
                                               executor=executor, workers=1))
    assert "is not a complete gzip stream" in str(error)


# -- the byte offset of a record in error messages ---------------------------------------

_OFFSET = re.compile(r"record (\d+) of the block at byte offset (\d+)")


@st.composite
def numbered_input(draw: st.DrawFn) -> tuple[str, bytes, list[bytes]]:
    """A lines, jsonl or csv input whose records each hold their number; returns the
    format, the bytes and each record's first bytes in the file (its "key")."""
    fmt = draw(st.sampled_from(["lines", "jsonl", "csv"]))
    count = draw(st.integers(1, 12))
    out, keys = [b"id,text\n"] if fmt == "csv" else [], []
    for i in range(count):
        if draw(st.booleans()) and fmt != "lines":
            out.append(b"\n")  # a blank line: no record in jsonl and csv
        filler = draw(st.sampled_from(["", "x", "a b", 'q"uote']))
        if fmt == "lines":
            key = f"r{i} {filler}".encode()
            line = key
        elif fmt == "jsonl":
            key = b'{"i": %d' % i
            line = key + b', "t": ' + json.dumps(filler).encode() + b"}"
        else:
            key = b"%d," % i
            line = key + (b'"multi\nline ""' + filler.replace('"', "").encode() + b'"'
                          if draw(st.booleans()) else filler.replace('"', "").encode())
        keys.append(key)
        out.append(line + draw(st.sampled_from([b"\n", b"\r\n"])))
    data = b"".join(out)
    if draw(st.booleans()):
        data = data.rstrip(b"\r\n")  # no final line end
    return fmt, data, keys


def _key(record: Any) -> int:
    if isinstance(record, str):
        return int(record.split(" ")[0][1:])
    return int(record["i"] if "i" in record else record["id"])


@settings(max_examples=40, deadline=None)
@given(case=numbered_input(), block_size=st.integers(1, 80), pick=st.integers(0, 100))
def test_the_byte_offset_of_a_failing_record_points_at_it(
        case: tuple[str, bytes, list[bytes]], block_size: int, pick: int) -> None:
    fmt, data, keys = case
    target = pick % len(keys)
    root = f"memory://offsets-{uuid.uuid4().hex[:10]}"
    bp.testing.write_files(root, {"in": data})

    def fn(record: Any) -> str:
        if _key(record) == target:
            raise ValueError("this one")
        return "ok"

    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_lines(fn, f"{root}/in", output=f"{root}-out", executor="inline",
                     block_size=block_size, format=fmt, max_attempts=1)
    found = _OFFSET.search(str(info.value))
    assert found is not None, str(info.value)
    offset = int(found[2])
    assert data[offset:].startswith(keys[target]), (offset, data)


def test_status_of_an_unfinished_job_shows_its_attempts_and_bad_records(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = write(tmp_path, "in.txt", LINES), str(tmp_path / "out")

    def fn(line: str) -> Any:
        if line == "beta":
            raise ValueError("skipped")
        return {"refused": line} if line == "gamma" else line  # gamma fails the job

    with pytest.raises(bp.BlockFailedError):  # block 0 committed with 1 bad record
        bp.map_lines(fn, src, output=out, block_size=6, executor="inline", max_attempts=1,
                     max_bad_records=5)
    code, text = run_cli(capsys, "status", out)
    assert code == 1
    assert text.splitlines()[1:] == [
        "attempts: the committed blocks took 1 attempt",
        f"bad records: 1 skipped, logged in {out}/_errors/"]
