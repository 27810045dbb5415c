"""Incremental runs over growing inputs (``if_exists="append"``): only what is new is
processed, and the live part-files of all runs equal one run over the final input."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
from blockproc.errors import BlockFailedError, ConfigError, InputChangedError
from blockproc.formats import CSV, Fixed, JSONLines, Lines
from blockproc.testing import read_parts

BS = 4096


def lines(prefix: str, start: int, stop: int) -> bytes:
    return b"".join(f"{prefix}{i:05d} {'x' * (i % 23)}\n".encode() for i in range(start, stop))


def run(src: Path | str, out: Path, **options: Any) -> bp.JobResult:
    options.setdefault("block_size", BS)
    return bp.map_lines(repr, str(src), output=str(out), executor="inline",
                        progress=False, **options)


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "_SUCCESS").read_bytes())


def by_file(out: Path) -> dict[str, bytes]:
    """The part-files of each input file, in part order (a packed block counts for its
    first file)."""
    found: dict[str, list[tuple[str, bytes]]] = {}
    for b in manifest(out)["blocks"]:
        found.setdefault(Path(b["path"]).name, []).append(
            (b["part"], (out / b["part"]).read_bytes()))
    return {name: b"".join(data for _, data in sorted(parts)) for name, parts in found.items()}


def one_run(src: Path, tmp: Path, **options: Any) -> bytes:
    """What one run over the inputs as they are now writes, in order."""
    out = tmp / f"full-{len(list(tmp.iterdir()))}"
    run(src, out, **options)
    return read_parts(str(out))


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    src = tmp_path / "logs"
    src.mkdir()
    return src


def test_clean_append_reads_only_the_new_bytes(logs: Path, tmp_path: Path) -> None:
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 2000))
    out = tmp_path / "out"
    first = run(log, out)
    old_size = log.stat().st_size
    append(log, lines("a", 2000, 2100))
    second = run(log, out, if_exists="append")
    # one new block, starting at the delimiter before the old end: it owns from there on
    assert second.blocks[0].block.start == old_size - 1
    assert sum(b.bytes_read for b in second.blocks) < 2 * BS + 8192
    assert second.blocks[0].part == f"part-{len(first.blocks):05d}.txt"
    assert read_parts(str(out)) == one_run(log, tmp_path)
    runs = manifest(out)["runs"]
    assert [r["num_blocks"] for r in runs] == [len(first.blocks), len(second.blocks)]
    assert runs[1]["superseded"] == [] and runs[1]["inputs"][0]["from"] == old_size
    assert bp.output.verify(str(out)) == []


def test_append_that_completes_a_half_written_last_line(logs: Path, tmp_path: Path) -> None:
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 1500) + b"a01500 half of a li")
    out = tmp_path / "out"
    first = run(log, out)
    last = first.blocks[-1].part
    assert (out / last).read_bytes().endswith(b"'a01500 half of a li'\n")  # written as final
    append(log, b"ne, now complete\n" + lines("a", 1501, 1600))
    second = run(log, out, if_exists="append")
    assert second.blocks[0].block.start == first.blocks[-1].block.start  # re-read, superseded
    assert not (out / last).exists()
    assert manifest(out)["runs"][1]["superseded"] == [last]
    assert read_parts(str(out)) == one_run(log, tmp_path)
    assert b"'a01500 half of a line, now complete'" in read_parts(str(out))
    assert b"half of a li'" not in read_parts(str(out))
    totals = manifest(out)["totals"]
    assert totals["records_in"] == totals["records_out"] == 1600
    assert totals["num_blocks"] == len(manifest(out)["blocks"]) == len(first.blocks) + len(
        second.blocks) - 1
    assert totals["bytes_written"] == len(read_parts(str(out)))
    status = bp.output.status(str(out))
    assert status.is_finished and status.records_out == 1600
    assert status.committed_attempts == len(status.committed)


def test_new_files_and_packed_small_files(logs: Path, tmp_path: Path) -> None:
    (logs / "a.log").write_bytes(lines("a", 0, 400))
    (logs / "b.log").write_bytes(b"b1\nb2\n")
    (logs / "c.log").write_bytes(b"c1\nc2")  # packed with b.log, no final newline
    out = tmp_path / "out"
    run(logs, out)
    (logs / "d.log").write_bytes(b"d1\n")
    append(logs / "c.log", b" end\nc3\n")
    append(logs / "b.log", b"b3\n")
    run(logs, out, if_exists="append")
    expected = one_run(logs, tmp_path)
    got = by_file(out)
    assert sorted(got["a.log"].splitlines() + got["b.log"].splitlines()
                  + got.get("d.log", b"").splitlines()) == sorted(expected.splitlines())
    assert b"'c1'\n'c2 end'\n'c3'\n" in got["b.log"]  # the packed block, superseded whole
    assert b"'c2'\n" not in b"".join(got.values())


def test_nothing_new_leaves_the_output_untouched(logs: Path, tmp_path: Path) -> None:
    (logs / "a.log").write_bytes(lines("a", 0, 100))
    out = tmp_path / "out"
    run(logs, out)
    before = (out / "_SUCCESS").stat().st_mtime_ns
    result = run(logs, out, if_exists="append")
    assert result.blocks == () and (out / "_SUCCESS").stat().st_mtime_ns == before


def test_rotation_is_refused_and_explained(logs: Path, tmp_path: Path) -> None:
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 300))
    out = tmp_path / "out"
    run(logs, out)
    log.rename(logs / "a.log.1")
    log.write_bytes(lines("n", 0, 10))
    with pytest.raises(InputChangedError) as info:
        run(logs, out, if_exists="append")
    message = str(info.value)
    assert "a.log" in message and "a.log.1 is a new file" in message
    assert "--if-exists overwrite" in message
    assert (out / "_SUCCESS").exists()  # refused before anything was touched


def test_rotation_to_a_longer_file_is_refused_by_the_tail(logs: Path, tmp_path: Path) -> None:
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 300))
    out = tmp_path / "out"
    run(logs, out)
    log.rename(logs / "a.log.1")
    log.write_bytes(lines("n", 0, 900))
    with pytest.raises(InputChangedError, match=r"CRC-32 of its last 4096 bytes differs"):
        run(logs, out, if_exists="append")


def test_truncation_is_refused(logs: Path, tmp_path: Path) -> None:
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 300))
    out = tmp_path / "out"
    run(logs, out)
    log.write_bytes(lines("a", 0, 100))
    with pytest.raises(InputChangedError, match=r"fewer than the .* truncated"):
        run(logs, out, if_exists="append")


def test_a_rewrite_of_the_same_size_is_refused(logs: Path, tmp_path: Path) -> None:
    log = logs / "a.log"
    data = lines("a", 0, 300)
    log.write_bytes(data)
    out = tmp_path / "out"
    run(logs, out)
    log.write_bytes(data[:-5] + b"XXXX\n")
    stat = log.stat()
    os.utime(log, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(InputChangedError, match="rewritten"):
        run(logs, out, if_exists="append")
    log.write_bytes(data)  # a touch alone (same bytes, new mtime) is no change
    os.utime(log, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    assert run(logs, out, if_exists="append").blocks == ()


def test_compressed_files_are_whole(logs: Path, tmp_path: Path) -> None:
    (logs / "a.log").write_bytes(lines("a", 0, 100))
    out = tmp_path / "out"
    run(logs, out)
    (logs / "b.log.gz").write_bytes(gzip.compress(lines("b", 0, 50)))
    second = run(logs, out, if_exists="append")
    assert [Path(b.block.path).name for b in second.blocks] == ["b.log.gz"]
    assert by_file(out)["b.log.gz"] == b"".join(
        repr(x).encode() + b"\n" for x in lines("b", 0, 50).decode().splitlines())
    (logs / "b.log.gz").write_bytes(gzip.compress(lines("b", 0, 60)))
    with pytest.raises(InputChangedError, match=r"b.log.gz.*gzip-compressed, read whole"):
        run(logs, out, if_exists="append")


def test_a_deleted_input_is_refused(logs: Path, tmp_path: Path) -> None:
    (logs / "a.log").write_bytes(b"a\n")
    (logs / "b.log").write_bytes(b"b\n")
    out = tmp_path / "out"
    run(logs, out)
    (logs / "b.log").unlink()
    with pytest.raises(InputChangedError, match=r"b.log' was processed .* is gone"):
        run(logs, out, if_exists="append")


def test_other_options_are_refused(logs: Path, tmp_path: Path) -> None:
    (logs / "a.log").write_bytes(lines("a", 0, 100))
    out = tmp_path / "out"
    run(logs, out)
    append(logs / "a.log", b"more\n")
    with pytest.raises(ConfigError, match="block_size=4096"):
        run(logs, out, if_exists="append", block_size=8192)
    with pytest.raises(ConfigError, match="format"):
        bp.map_lines(repr, str(logs), output=str(out), block_size=BS, format="jsonl",
                     executor="inline", if_exists="append")


def test_append_into_an_empty_output_is_a_first_run(logs: Path, tmp_path: Path) -> None:
    (logs / "a.log").write_bytes(lines("a", 0, 100))
    out = tmp_path / "out"
    run(logs, out, if_exists="append")
    assert read_parts(str(out)) == one_run(logs, tmp_path)


class FailOn:
    """Raise on one record (so the append run stops half way), until disarmed."""

    armed = True

    def __call__(self, line: str) -> str:
        if FailOn.armed and line.startswith("a01950"):
            raise ValueError("stop here")
        return repr(line)


@pytest.mark.parametrize("finish_with", ["resume", "append"])
def test_an_interrupted_append_is_finished(logs: Path, tmp_path: Path, finish_with: str) -> None:
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 1000))
    out = tmp_path / "out"
    run(log, out)
    append(log, lines("a", 1000, 2500))
    FailOn.armed = True
    with pytest.raises(BlockFailedError):
        bp.map_lines(FailOn(), str(log), output=str(out), block_size=BS, executor="inline",
                     max_attempts=1, if_exists="append", progress=False)
    assert not (out / "_SUCCESS").exists()  # readers see an unfinished output
    assert bp.output.status(str(out)).is_finished is False
    FailOn.armed = False
    if finish_with == "append":
        append(log, lines("a", 2500, 2600))  # it grew meanwhile: planned again
    bp.map_lines(FailOn(), str(log), output=str(out), block_size=BS, executor="inline",
                 if_exists=finish_with, progress=False)  # type: ignore[arg-type]
    assert read_parts(str(out)) == one_run(log, tmp_path)
    assert not (out / "_blockproc" / "previous.json").exists()
    assert bp.output.verify(str(out)) == []


def test_csv_appends_keep_the_header(logs: Path, tmp_path: Path) -> None:
    table = logs / "t.csv"
    rows = b"".join(f'{i},"text {i}\nwith a newline"\n'.encode() for i in range(300))
    table.write_bytes(b"id,text\n" + rows + b'300,"half')
    out = tmp_path / "out"
    fmt = CSV(allow_unclosed_quote=True)
    run(table, out, format=fmt)
    append(table, b' a row"\n' + b"".join(f"{i},t{i}\n".encode() for i in range(301, 400)))
    run(table, out, format=fmt, if_exists="append")
    append(table, b"400,clean\n")
    third = run(table, out, format=fmt, if_exists="append")
    assert third.blocks[0].block.start == table.stat().st_size - len(b"400,clean\n")
    expected = one_run(table, tmp_path, format=fmt)
    assert read_parts(str(out)) == expected
    assert b"{'id': '300', 'text': 'half a row'}" in expected
    assert b"'id': 'id'" not in expected


def test_jsonl_and_fixed_width_appends(logs: Path, tmp_path: Path) -> None:
    events = logs / "e.jsonl"
    events.write_bytes(b"".join(b'{"n": %d}\n' % i for i in range(500)))
    out = tmp_path / "out-jsonl"
    run(events, out, format=JSONLines())
    append(events, b"".join(b'{"n": %d}\n' % i for i in range(500, 600)))
    run(events, out, format=JSONLines(), if_exists="append")
    assert read_parts(str(out)) == one_run(events, tmp_path, format=JSONLines())
    records = logs / "r.bin"
    records.write_bytes(bytes(range(256)) * 40)
    out = tmp_path / "out-fixed"
    run(records, out, format=Fixed(record_size=16))
    append(records, bytes(range(256)) * 3)
    second = run(records, out, format=Fixed(record_size=16), if_exists="append")
    assert second.blocks[0].block.start == 256 * 40
    assert read_parts(str(out)) == one_run(records, tmp_path, format=Fixed(record_size=16))


def test_utf16_lines_append(logs: Path, tmp_path: Path) -> None:
    log = logs / "w.log"
    text = "".join(f"línea {i}\n" for i in range(400))
    log.write_bytes(text.encode("utf-16"))
    out = tmp_path / "out"
    run(log, out, format=Lines("utf-16"))
    append(log, "más\nsin fin".encode("utf-16-le"))
    run(log, out, format=Lines("utf-16"), if_exists="append")
    append(log, " ahora\n".encode("utf-16-le"))
    run(log, out, format=Lines("utf-16"), if_exists="append")
    assert read_parts(str(out)) == one_run(log, tmp_path, format=Lines("utf-16"))


def blockproc_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("blockproc")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "blockproc"]
    return subprocess.run([*command, *args], check=False, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_end_to_end(logs: Path, tmp_path: Path) -> None:
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 1000) + b"a01000 half")
    args = ["run", "logs", "-o", "out", "--cmd", "cat", "--block-size", "4KiB",
            "--executor", "inline"]
    assert blockproc_cli(*args, cwd=tmp_path).returncode == 0
    append(log, b" done\n" + lines("a", 1001, 1100))
    proc = blockproc_cli(*args, "--if-exists", "append", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert read_parts(str(tmp_path / "out")) == log.read_bytes()
    proc = blockproc_cli("status", "out", "--verify", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "runs: 2 (the output was extended with --if-exists append)" in proc.stdout
    assert "superseded part-" in proc.stdout and "verify: all" in proc.stdout
    log.write_bytes(b"short\n")
    proc = blockproc_cli(*args, "--if-exists", "append", cwd=tmp_path)
    assert proc.returncode != 0 and "a.log" in proc.stderr and "overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr


class GrowWhileRunning:
    """Append to the input while an append run reads it (a log still being written)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, line: str) -> str:
        if line.startswith("a01000"):
            append(self.path, lines("a", 5000, 5001))
        return repr(line)


def test_an_input_growing_during_an_append_run_is_picked_up_by_the_next(
        logs: Path, tmp_path: Path) -> None:
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 1000))
    out = tmp_path / "out"
    run(log, out)
    append(log, lines("a", 1000, 1100) + b"a01100 being wri")
    planned = log.stat().st_size
    # the run reads the bytes it planned, though the log grows meanwhile
    result = bp.map_lines(GrowWhileRunning(log), str(log), output=str(out), block_size=BS,
                          executor="inline", if_exists="append", progress=False)
    assert len(result.blocks) >= 2 and log.stat().st_size > planned
    assert manifest(out)["inputs"][0]["size"] == planned
    append(log, b"tten\n")
    run(log, out, if_exists="append")  # the next run takes the rest
    assert read_parts(str(out)) == one_run(log, tmp_path)


def test_a_packed_input_growing_during_an_append_run_fails_it_resumably(
        logs: Path, tmp_path: Path) -> None:
    (logs / "a.log").write_bytes(b"a\n")
    out = tmp_path / "out"
    run(logs, out)
    (logs / "b.log").write_bytes(b"b\n")
    (logs / "c.log").write_bytes(b"c\n")
    plan = bp.plan(str(logs), block_size=BS)
    append(logs / "c.log", b"more\n")  # after planning: c.log, packed, is read whole
    job = bp.submit(plan, repr, output=str(out), executor="inline", if_exists="append",
                    max_attempts=1, progress=False)
    with pytest.raises(BlockFailedError) as info:
        job.result()
    assert info.value.resumable and "--if-exists append" in "".join(info.value.__notes__)
    run(logs, out, if_exists="append")
    assert read_parts(str(out)) == one_run(logs, tmp_path)


def test_a_crash_right_after_hiding_success_loses_no_part(logs: Path, tmp_path: Path) -> None:
    """An append run killed after it hid _SUCCESS but before it cleared the earlier job's
    ledger: the next run must not take the earlier parts for its own and remove them."""
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 1000))
    out = tmp_path / "out"
    run(log, out)
    (out / "_blockproc" / "previous.json").write_bytes((out / "_SUCCESS").read_bytes())
    (out / "_SUCCESS").unlink()  # the old ledger and plan.json are still there
    append(log, lines("a", 1000, 1200))
    run(log, out, if_exists="append")
    assert read_parts(str(out)) == one_run(log, tmp_path)
    assert bp.output.verify(str(out)) == []


def test_append_on_object_stores(store: Any) -> None:
    """On S3-compatible stores (moto, SeaweedFS): an object is rewritten whole when it
    grows, so its ETag always changes; the tail tells growth from a rewrite."""
    options = {"output": store.url("out"), "block_size": BS, "executor": "threads",
               "storage_options": store.storage_options, "progress": False}
    data = lines("a", 0, 800) + b"a00800 still bei"
    store.put({"in/a.log": data, "in/b.log": b"b1\n"})
    first = bp.map_lines(repr, store.url("in/"), **options)
    data += b"ng written\n" + lines("a", 801, 900)
    store.put({"in/a.log": data, "in/c.log": b"c1\n"})
    bp.map_lines(repr, store.url("in/"), if_exists="append", **options)
    full = bp.map_lines(repr, store.url("in/"), **{**options, "output": store.url("full")})
    assert sorted(read_parts(store.url("out"), store.storage_options).splitlines()) == \
        sorted(read_parts(store.url("full"), store.storage_options).splitlines())
    assert len(full.blocks) < len(first.blocks) + 3
    superseded = [b.part for b in first.blocks if b.block.path.endswith("a.log")][-1]
    assert f"out/{superseded}" not in store.keys("out")
    assert f"out/{first.blocks[0].part}" in store.keys("out")
    assert bp.output.verify(store.url("out"), store.storage_options) == []
    store.put({"in/a.log": b"X" + data[1:]})  # same size, another ETag, same tail
    assert bp.map_lines(repr, store.url("in/"), if_exists="append", **options).blocks == ()
    store.put({"in/a.log": data[:-2] + b"Z\n"})
    with pytest.raises(InputChangedError, match=r"a.log.*rewritten"):
        bp.map_lines(repr, store.url("in/"), if_exists="append", **options)


def test_append_on_every_executor(logs: Path, tmp_path: Path, executor: str) -> None:
    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 1500) + b"a01500 half")
    (logs / "b.log").write_bytes(b"b\n")
    out = tmp_path / "out"
    options = {"output": str(out), "block_size": BS, "executor": executor, "workers": 2,
               "progress": False}
    bp.map_lines(repr, str(logs), **options)
    append(log, b" done\n" + lines("a", 1501, 1800))
    bp.map_lines(repr, str(logs), if_exists="append", **options)
    assert by_file(out)["a.log"] == b"".join(
        repr(x).encode() + b"\n" for x in log.read_bytes().decode().splitlines())
    assert bp.output.verify(str(out)) == []


def test_jobs_whose_values_go_to_the_master_cannot_append(logs: Path, tmp_path: Path) -> None:
    (logs / "a.log").write_bytes(b"a\n")
    out = tmp_path / "out"
    bp.reduce_blocks(len, lambda a, b: a + b, str(logs), output=str(out), executor="inline")
    with pytest.raises(ConfigError, match="cannot be appended to"):
        bp.reduce_blocks(len, lambda a, b: a + b, str(logs), output=str(out),
                         executor="inline", if_exists="append")


def test_parquet_files_are_whole(logs: Path, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"n": list(range(100))}), logs / "a.parquet")
    out = tmp_path / "out"
    options = {"output": str(out), "format": "parquet", "executor": "inline",
               "progress": False}
    bp.map_blocks(lambda t: [str(t.num_rows)], str(logs), **options)
    pq.write_table(pa.table({"n": list(range(50))}), logs / "b.parquet")
    second = bp.map_blocks(lambda t: [str(t.num_rows)], str(logs), if_exists="append",
                           **options)
    assert [Path(b.block.path).name for b in second.blocks] == ["b.parquet"]
    assert read_parts(str(out)) == b"100\n50\n"
    pq.write_table(pa.table({"n": list(range(60))}), logs / "b.parquet")
    with pytest.raises(InputChangedError, match=r"b.parquet.*a parquet file, read whole"):
        bp.map_blocks(lambda t: [str(t.num_rows)], str(logs), if_exists="append", **options)


def test_an_output_written_meanwhile_is_refused_under_the_lock(logs: Path,
                                                                tmp_path: Path) -> None:
    from blockproc.incremental import start_append
    from blockproc.output import OutputDir
    from blockproc.storage import filesystem

    log = logs / "a.log"
    log.write_bytes(lines("a", 0, 100))
    out = tmp_path / "out"
    run(log, out)
    append(log, lines("a", 100, 200))
    fs = filesystem("file")
    plan, _, output, mode = start_append(OutputDir(fs, str(out), "job-late"),
                                         bp.plan(str(log), block_size=BS), fs, extension=".txt")
    assert mode == "append" and plan.blocks
    run(log, out, if_exists="append")  # another job appends first
    with pytest.raises(bp.OutputExistsError, match="changed while this append run was planned"):
        output.prepare(plan, "append", [])
    output.release()
    assert read_parts(str(out)) == one_run(log, tmp_path)
