"""Many small files: packed whole into combined blocks (Hadoop's CombineFileInputFormat),
listed in bulk, each read exactly once; on memory:// and on the local S3 server."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

import blockproc as bp
from blockproc.formats import Delimited, Lines
from blockproc.model import Block, Plan
from blockproc.planning import pack_blocks
from blockproc.storage.local import LocalFileSystem
from blockproc.testing import read_parts, write_files
from tests import jobs
from tests.s3server import S3Bucket


def small_file(i: int) -> bytes:
    """A few KiB of lines, different for every ``i``."""
    return "".join(f"file {i:05d} line {j} {'x' * ((i + j) % 50)}\n"
                   for j in range(40 + i % 40)).encode()


def records_of(files: dict[str, bytes], fmt: Any = None) -> list[Any]:
    """Each file's records on its own (the sequential parse), files in sorted order."""
    fmt = fmt or Lines()
    return [r for name in sorted(files) for batch in
            fmt.iter_batches([files[name]], at_file_start=True) for r in batch]


@pytest.fixture
def big_memfs() -> Iterator[str]:
    """A memory:// root for thousands of files, dropped from the store directly afterwards
    (memory://'s recursive rm is quadratic)."""
    root = f"/many-{uuid.uuid4().hex[:8]}"
    yield f"memory:/{root}"
    for key in [k for k in MemoryFileSystem.store if k.startswith(root + "/")]:
        del MemoryFileSystem.store[key]
    MemoryFileSystem.pseudo_dirs[:] = [d for d in MemoryFileSystem.pseudo_dirs
                                       if not d.startswith(root)]


def counting(monkeypatch: pytest.MonkeyPatch, cls: type, names: tuple[str, ...]
             ) -> Counter[str]:
    """Count the calls of ``cls``'s methods ``names``, by name (and by path for _open)."""
    calls: Counter[str] = Counter()
    for name in names:
        real = getattr(cls, name)

        def counted(self: Any, *args: Any, _real: Any = real, _name: str = name,
                    **kwargs: Any) -> Any:
            calls[_name] += 1
            if _name in ("_open", "open") and args:
                calls[f"open:{args[0]}"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)
    return calls


@pytest.fixture
def counted_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count the calls memory:// gets, by method name."""
    yield counting(monkeypatch, MemoryFileSystem,
                   ("info", "ls", "find", "glob", "exists", "size", "_open", "cat_file"))


# -- planning ---------------------------------------------------------------------------------

def test_ten_thousand_small_files_are_listed_once_and_packed(
        big_memfs: str, counted_memory: Counter[str]) -> None:
    files = {f"logs/{i // 1000:02d}/f{i:05d}.log": small_file(i) for i in range(10_000)}
    write_files(big_memfs, files)
    total = sum(len(v) for v in files.values())
    counted_memory.clear()
    plan = bp.plan(f"{big_memfs}/logs", block_size="1MiB")
    assert counted_memory["info"] <= 1  # the directory itself, not one per file
    assert counted_memory["_open"] == counted_memory["cat_file"] == 0
    assert len(plan.files) == 10_000
    assert len(plan.blocks) <= total // 2**20 + 2  # ~ a block per MiB, not 10,000 tasks
    assert [b.id for b in plan.blocks] == list(range(len(plan.blocks)))
    packed = [f.path for b in plan.blocks for f in b.files]
    assert packed == [f.path for f in plan.files]  # every file once, in plan order
    assert all(b.end - b.start <= 2**20 for b in plan.blocks)
    assert all(b.path == b.files[0].path and b.start == 0 for b in plan.blocks)


def test_ten_thousand_small_files_run_as_few_blocks_each_file_read_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {f"f{i:05d}.log": small_file(i) for i in range(10_000)}
    src = tmp_path / "in"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    calls = counting(monkeypatch, LocalFileSystem, ("open", "info"))  # blockproc's local fs
    out = str(tmp_path / "out")
    res = bp.map_lines(jobs.identity, f"{src}/*.log", output=out, block_size="2MiB",
                       executor="threads", workers=2)
    assert len(res.blocks) <= 20
    opened = Counter({k[5:]: n for k, n in calls.items()
                      if k.startswith("open:") and k[5:].startswith(str(src))})
    assert len(opened) == 10_000 and set(opened.values()) == {1}  # each input read once
    assert res.num_bytes_read == sum(len(v) for v in files.values())
    assert read_parts(out) == b"".join(files[k] for k in sorted(files))
    manifest = json.loads((tmp_path / "out" / "_SUCCESS").read_bytes())
    assert [e["part"] for e in manifest["blocks"]] == [f"part-{i:05d}.txt"
                                                       for i in range(len(res.blocks))]
    assert sum(len(e["files"]) for e in manifest["blocks"]) == 10_000


def test_big_files_are_cut_and_small_neighbours_packed_around_them(memfs: str) -> None:
    write_files(memfs, {"a.log": b"a\n" * 10, "b.log": b"b\n" * 10, "c.log": b"c\n" * 100,
                        "d.log": b"d\n" * 5, "e.log": b"", "f.log": b"f\n" * 5})
    plan = bp.plan(memfs, block_size=64)
    shape = [(b.path.rsplit("/", 1)[1], b.start, b.end, [f.path[-5:] for f in b.files])
             for b in plan.blocks]
    assert shape == [("a.log", 0, 40, ["a.log", "b.log"]), ("c.log", 0, 64, []),
                     ("c.log", 64, 128, []), ("c.log", 128, 192, []), ("c.log", 192, 200, []),
                     ("d.log", 0, 20, ["d.log", "f.log"])]


def test_packing_keeps_block_compatible_and_round_trips(memfs: str) -> None:
    write_files(memfs, {"a.log": b"a\n", "b.log": b"bb\n"})
    plan = bp.plan(memfs, block_size=100)
    (block,) = plan.blocks
    assert (block.start, block.end, len(block.files)) == (0, 5, 2)
    assert Block.from_dict(json.loads(json.dumps(block.to_dict()))) == block
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).blocks == plan.blocks
    assert "files" not in Block(0, "x", 0, 1).to_dict()  # single-file blocks look as before
    assert Block.from_dict({"id": 0, "path": "x", "start": 0, "end": 1}) == Block(0, "x", 0, 1)


def test_a_self_overlapping_delimiter_is_never_packed(memfs: str) -> None:
    write_files(memfs, {"a.bin": b"xa", "b.bin": b"aay"})
    plan = bp.plan(memfs, block_size=100, format=Delimited(b"aa"))
    assert [b.files for b in plan.blocks] == [(), ()]


# -- records -----------------------------------------------------------------------------------

EDGE_FILES = {
    "1.log": b"first\nno final newline",
    "2.log": b"\xef\xbb\xbfbom at the start\r\ncrlf\r\n",
    "3.log": b"",
    "4.log": b"\n\n",
    "5.log": b"last\r",
}


def test_combined_block_gives_each_file_its_own_records(memfs: str) -> None:
    write_files(memfs, EDGE_FILES)
    plan = bp.plan(memfs, block_size=1000)
    assert len(plan.blocks) == 1
    bp.map_lines(jobs.identity, memfs, output=f"{memfs}-out", executor="inline")
    expected = records_of(EDGE_FILES)
    assert expected[:3] == ["first", "no final newline", "bom at the start"]
    assert read_parts(f"{memfs}-out").decode().split("\n")[:-1] == expected


def test_map_blocks_sees_one_batch_per_combined_block(memfs: str) -> None:
    write_files(memfs, EDGE_FILES)
    res = bp.map_blocks(jobs.count_block, memfs, output=f"{memfs}-out", executor="inline",
                        block_size=1000)
    assert read_parts(f"{memfs}-out") == f"0,{len(records_of(EDGE_FILES))}\n".encode()
    assert res.num_records == len(records_of(EDGE_FILES))


def test_command_gets_the_files_concatenated_with_their_records_kept_apart(memfs: str
                                                                           ) -> None:
    write_files(memfs, {"a.log": b"one\ntwo", "b.log": b"three\n"})
    bp.map_command("cat", memfs, output=f"{memfs}-out", executor="threads")
    assert read_parts(f"{memfs}-out") == b"one\ntwo\nthree\n"


def test_delimited_records_of_packed_files(memfs: str) -> None:
    files = {"a.bin": b"x\0y", "b.bin": b"\0z\0"}
    write_files(memfs, files)
    fmt = Delimited(b"\0")
    bp.map_lines(lambda r: r.hex(), memfs, output=f"{memfs}-out", format=fmt,
                 executor="inline")
    assert read_parts(f"{memfs}-out").split(b"\n")[:-1] == [r.hex().encode()
                                                           for r in records_of(files, fmt)]


def test_compressed_small_files_are_packed_and_decompressed(memfs: str) -> None:
    files = {"a.log.gz": gzip.compress(b"a1\na2\n"), "b.log": b"b1\n",
             "c.log.gz": gzip.compress(b"c1")}
    write_files(memfs, files)
    plan = bp.plan(memfs, block_size=10_000)
    assert len(plan.blocks) == 1 and len(plan.blocks[0].files) == 3
    bp.map_lines(jobs.upper, memfs, output=f"{memfs}-out", executor="inline")
    assert read_parts(f"{memfs}-out") == b"A1\nA2\nB1\nC1\n"


def test_a_changed_file_in_a_combined_block_is_named(memfs: str) -> None:
    urls = write_files(memfs, {f"f{i}.log": b"line\n" * 3 for i in range(5)})
    plan = bp.plan(memfs, block_size=1000)
    write_files(memfs, {"f3.log": b"line\n" * 4})
    job = bp.submit(plan, jobs.identity, output=f"{memfs}-out", executor="threads")
    with pytest.raises(bp.BlockFailedError, match=r"f3\.log.*changed after the job was planned"
                       ) as info:
        job.result(timeout=60)
    assert info.value.attempt == 1
    assert urls[3].endswith("f3.log")


@settings(max_examples=60, deadline=None)
@given(files=st.lists(st.binary(max_size=30).map(
    lambda b: b.replace(b"\x00", b"\n").replace(b"\x01", b"\r\n")), min_size=1, max_size=8),
    block_size=st.integers(min_value=1, max_value=120))
def test_packed_plan_partition_property(files: list[bytes], block_size: int) -> None:
    root = "memory://prop-small-files"
    fs = fsspec.filesystem("memory")
    if fs.exists("/prop-small-files"):
        fs.rm("/prop-small-files", recursive=True)
    named = {f"f{i:02d}.bin": data for i, data in enumerate(files)}
    write_files(f"{root}/in", named)
    fmt = Delimited(b"\n")
    bp.map_lines(lambda r: r.hex(), f"{root}/in", output=f"{root}/out", format=fmt,
                 block_size=block_size, executor="inline")
    expected = [r.hex().encode() for r in records_of(named, fmt)]
    assert read_parts(f"{root}/out").split(b"\n")[:-1] == expected


def test_pack_blocks_is_deterministic_and_bounded() -> None:
    from blockproc.model import InputFile

    files = [InputFile(f"f{i}", size) for i, size in enumerate([5, 0, 3, 3, 9, 1, 1, 1, 2])]
    blocks = pack_blocks(files, 6)
    assert blocks == pack_blocks(files, 6)
    assert [[f.path for f in b.files] or [b.path] for b in blocks] == [
        ["f0"], ["f2", "f3"], ["f4"], ["f4"], ["f5", "f6", "f7", "f8"]]
    assert [(b.start, b.end) for b in blocks] == [(0, 5), (0, 6), (0, 6), (6, 9), (0, 5)]


# -- on S3 -----------------------------------------------------------------------------------

def test_small_files_on_s3_listed_in_pages_and_each_fetched_once(s3: S3Bucket) -> None:
    files = {f"many/f{i:04d}.log": small_file(i) for i in range(400)}
    s3.put(files)
    s3.server.reset()
    plan = bp.plan(s3.url("many/*.log"), block_size="512KiB",
                   storage_options=s3.storage_options)
    lists = s3.server.count("GET", f"/{s3.name}", query="list-type=2")
    assert lists == 1  # one bulk listing (paged by 1000 keys on a bigger prefix)
    assert s3.server.count("HEAD", s3.prefix("many/")) == 0  # no per-file info call
    assert len(plan.blocks) <= 4
    s3.server.reset()
    res = bp.submit(plan, jobs.identity, output=s3.url("many-out"), executor="processes",
                    workers=2, storage_options=s3.storage_options).result(timeout=300)
    gets = Counter(r.path for r in s3.server.requests
                   if r.method == "GET" and r.path.startswith(s3.prefix("many/")))
    assert len(gets) == 400 and set(gets.values()) == {1}  # each object fetched once
    assert s3.server.bytes_sent("GET", s3.prefix("many/")) == sum(map(len, files.values()))
    manifest = json.loads(s3.get("many-out/_SUCCESS"))
    data = b"".join(s3.get(f"many-out/{e['part']}") for e in manifest["blocks"])
    assert data == b"".join(files[k] for k in sorted(files))
    assert len(res.blocks) == len(plan.blocks)
