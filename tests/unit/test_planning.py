"""Planning: list inputs, cut them into nominal byte ranges, fingerprint the result."""

from __future__ import annotations

import gzip
import itertools
import os
import re
from pathlib import Path

import pytest

import blockproc as bp
from blockproc.errors import ConfigError, NoInputFilesError
from blockproc.formats import Delimited, Lines
from blockproc.model import Block, InputFile
from blockproc.planning import cut_blocks, make_plan, nominal_ranges
from blockproc.testing import write_files

# -- nominal_ranges --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "block_size", "expected"),
    [
        (0, 4, []),
        (0, 1, []),
        (1, 1, [(0, 1)]),
        (1, 100, [(0, 1)]),
        (3, 1, [(0, 1), (1, 2), (2, 3)]),
        (8, 4, [(0, 4), (4, 8)]),
        (9, 4, [(0, 4), (4, 8), (8, 9)]),
        (10, 4, [(0, 4), (4, 8), (8, 10)]),
        (4, 5, [(0, 4)]),
        (5, 5, [(0, 5)]),
    ],
)
def test_nominal_ranges_cut_consecutive_blocks_with_a_shorter_last_one(
    size: int, block_size: int, expected: list[tuple[int, int]]
) -> None:
    assert nominal_ranges(size, block_size) == expected


@pytest.mark.parametrize("size", [0, 1, 2, 7, 64, 100, 1000])
def test_nominal_ranges_tile_the_file_for_every_block_size(size: int) -> None:
    for block_size in range(1, size + 3):
        ranges = nominal_ranges(size, block_size)
        assert len(ranges) == -(-size // block_size)
        assert [s for s, _ in ranges] == list(range(0, size, block_size))
        assert all(0 < e - s <= block_size for s, e in ranges)
        if ranges:
            assert ranges[-1][1] == size
            assert all(e == s2 for (_, e), (s2, _) in itertools.pairwise(ranges))


@pytest.mark.parametrize("block_size", [0, -1, -64])
def test_nominal_ranges_rejects_block_size_below_one(block_size: int) -> None:
    with pytest.raises(ConfigError, match=f"block_size must be >= 1 byte, got {block_size}"):
        nominal_ranges(10, block_size)


# -- cut_blocks ------------------------------------------------------------------------


def test_cut_blocks_gives_dense_ids_across_files_in_order() -> None:
    files = [InputFile("/a", 5), InputFile("/b", 0), InputFile("/c", 9)]
    blocks = cut_blocks(files, 4)
    assert blocks == [
        Block(0, "/a", 0, 4), Block(1, "/a", 4, 5),
        Block(2, "/c", 0, 4), Block(3, "/c", 4, 8), Block(4, "/c", 8, 9),
    ]


def test_cut_blocks_keeps_a_compressed_file_in_one_block() -> None:
    files = [InputFile("/a.log", 5), InputFile("/b.log.gz", 90, compression="gzip"),
             InputFile("/c.log", 3)]
    blocks = cut_blocks(files, 4)
    assert [(b.id, b.path, b.start, b.end) for b in blocks] == [
        (0, "/a.log", 0, 4), (1, "/a.log", 4, 5), (2, "/b.log.gz", 0, 90), (3, "/c.log", 0, 3),
    ]


def test_cut_blocks_gives_no_block_for_an_empty_file() -> None:
    assert cut_blocks([InputFile("/empty", 0)], 4) == []
    assert cut_blocks([InputFile("/empty.gz", 0, compression="gzip")], 4) == []
    assert cut_blocks([], 4) == []


def test_make_plan_rejects_block_size_below_one() -> None:
    with pytest.raises(ConfigError, match="block_size must be >= 1 byte, got 0"):
        make_plan(["memory://never-listed"], block_size=0, format=Lines())


# -- plan(): listing -------------------------------------------------------------------


def test_plan_cuts_files_in_sorted_order_with_dense_ids(memfs: str) -> None:
    write_files(memfs, {"b.log": b"y\n" * 10, "a.log": b"x\n" * 5, "c.log": b"z\n" * 3})
    plan = bp.plan(memfs, block_size=4)
    base = memfs.removeprefix("memory:/")
    assert [f.path for f in plan.files] == [f"{base}/a.log", f"{base}/b.log", f"{base}/c.log"]
    assert [b.id for b in plan.blocks] == list(range(len(plan.blocks)))
    assert [(b.path.rsplit("/", 1)[1], b.start, b.end) for b in plan.blocks] == [
        ("a.log", 0, 4), ("a.log", 4, 8), ("a.log", 8, 10),
        ("b.log", 0, 4), ("b.log", 4, 8), ("b.log", 8, 12), ("b.log", 12, 16),
        ("b.log", 16, 20),
        ("c.log", 0, 4), ("c.log", 4, 6),
    ]
    assert plan.protocol == "memory"
    assert plan.block_size == 4
    assert plan.num_bytes == 36
    assert plan.format == Lines().to_dict()


def test_plan_reads_directories_recursively_and_skips_underscore_and_dot_names(
    memfs: str,
) -> None:
    write_files(memfs, {
        "a.log": b"a\n", "sub/b.log": b"b\n", "sub/deeper/c.log": b"c\n",
        "_SUCCESS": b"{}", ".hidden": b"h\n", "_temporary/0/part-00000.txt": b"t\n",
        "sub/.cache/d.log": b"d\n", "sub/_e.log": b"e\n",
    })
    plan = bp.plan(memfs, block_size=100)
    names = [f.path.rsplit(memfs.removeprefix("memory:/"), 1)[1] for f in plan.files]
    assert names == ["/a.log", "/sub/b.log", "/sub/deeper/c.log"]


def test_plan_reads_a_local_directory_recursively_and_skips_hidden_names(
    tmp_path: Path,
) -> None:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "_temporary").mkdir()
    (tmp_path / "data" / "a.log").write_bytes(b"a\n" * 3)
    (tmp_path / "data" / "sub" / "b.log").write_bytes(b"b\n")
    (tmp_path / "data" / "_temporary" / "part-00000.txt").write_bytes(b"x\n")
    (tmp_path / "data" / ".DS_Store").write_bytes(b"x")
    plan = bp.plan(str(tmp_path / "data"), block_size=4)
    assert plan.protocol in ("file", "local")
    assert [os.path.basename(f.path) for f in plan.files] == ["a.log", "b.log"]
    assert [(os.path.basename(b.path), b.start, b.end) for b in plan.blocks] == [
        ("a.log", 0, 4), ("a.log", 4, 6), ("b.log", 0, 2),
    ]


def test_plan_accepts_a_local_path_object(tmp_path: Path) -> None:
    (tmp_path / "in.log").write_bytes(b"x\n" * 4)
    plan = bp.plan(tmp_path / "in.log", block_size=3)
    assert [(b.start, b.end) for b in plan.blocks] == [(0, 3), (3, 6), (6, 8)]


def test_plan_expands_globs(memfs: str) -> None:
    write_files(memfs, {"a.log": b"a\n", "b.log": b"b\n", "c.txt": b"c\n", "_d.log": b"d\n"})
    plan = bp.plan(f"{memfs}/*.log", block_size=100)
    assert [f.path.rsplit("/", 1)[1] for f in plan.files] == ["a.log", "b.log"]


def test_plan_expands_local_globs(tmp_path: Path) -> None:
    for name in ("2026-01.log", "2026-02.log", "2025-12.log", "notes.txt"):
        (tmp_path / name).write_bytes(b"x\n")
    plan = bp.plan(str(tmp_path / "2026-*.log"), block_size=100)
    assert [os.path.basename(f.path) for f in plan.files] == ["2026-01.log", "2026-02.log"]


@pytest.mark.parametrize("pattern", ["**", "*/*", "**/*.txt"])
def test_plan_glob_skips_names_starting_with_underscore_or_dot_below_the_glob(
    memfs: str, pattern: str
) -> None:
    # a previous job's output directory: its _temporary/_blockproc state and dot
    # directories must not become input of the next job
    write_files(memfs, {
        "part-00000.txt": b"a\n", "sub/c.txt": b"c\n",
        "_temporary/1/part-00001.txt": b"t\n", "_blockproc/state/x.txt": b"{}",
        ".cache/d.txt": b"d\n",
    })
    plan = bp.plan(f"{memfs}/{pattern}", block_size=100)
    paths = [f.path for f in plan.files]
    assert not [p for p in paths if "/_" in p or "/." in p], paths


def test_plan_takes_a_list_of_inputs_deduplicated_and_sorted(memfs: str) -> None:
    urls = write_files(memfs, {"a.log": b"a\n", "b.log": b"bb\n", "dir/c.log": b"c\n"})
    plan = bp.plan([urls[1], f"{memfs}/dir", urls[0], urls[1]], block_size=2)
    assert [f.path.rsplit("/", 1)[1] for f in plan.files] == ["a.log", "b.log", "c.log"]
    assert [b.id for b in plan.blocks] == [0, 1, 2, 3]


def test_plan_accepts_an_explicit_file_whose_name_starts_with_underscore(memfs: str) -> None:
    (url,) = write_files(memfs, {"_data.log": b"x\n"})
    plan = bp.plan(url, block_size=100)
    assert len(plan.files) == 1


def test_plan_keeps_empty_files_without_blocks(memfs: str) -> None:
    write_files(memfs, {"a.log": b"", "b.log": b"x\n"})
    plan = bp.plan(memfs, block_size=100)
    assert [f.size for f in plan.files] == [0, 2]
    assert [(b.id, b.path.rsplit("/", 1)[1]) for b in plan.blocks] == [(0, "b.log")]


def test_plan_keeps_a_gzip_file_in_one_block(memfs: str) -> None:
    packed = gzip.compress(b"line\n" * 1000)
    write_files(memfs, {"a.log": b"x\n" * 10, "b.log.gz": packed})
    plan = bp.plan(memfs, block_size=8)
    gz = [b for b in plan.blocks if b.path.endswith(".gz")]
    assert [(b.start, b.end) for b in gz] == [(0, len(packed))]
    assert plan.file(gz[0].path).compression == "gzip"
    assert [b.id for b in plan.blocks] == list(range(len(plan.blocks)))
    assert gz[0].id == len(plan.blocks) - 1  # after a.log's three blocks


# -- plan(): determinism and fingerprint -----------------------------------------------


def test_plan_is_deterministic_for_the_same_inputs(memfs: str) -> None:
    write_files(memfs, {"a.log": b"x\n" * 100, "b/c.log": b"y\n" * 7})
    first = bp.plan(memfs, block_size=16)
    second = bp.plan(memfs, block_size=16)
    assert first == second
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 32


def test_plan_is_deterministic_for_local_files(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"x\n" * 100)
    assert bp.plan(str(tmp_path), block_size=7) == bp.plan(str(tmp_path), block_size=7)
    assert (bp.plan(str(tmp_path), block_size=7).fingerprint
            == bp.plan(str(tmp_path), block_size="7").fingerprint)


def test_plan_fingerprint_changes_with_a_file_size(memfs: str) -> None:
    write_files(memfs, {"a.log": b"x\n" * 100})
    before = bp.plan(memfs, block_size=16)
    write_files(memfs, {"a.log": b"x\n" * 101})
    after = bp.plan(memfs, block_size=16)
    assert after.files[0].size == 202
    assert before.fingerprint != after.fingerprint


def test_plan_fingerprint_changes_with_a_local_file_size(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"x\n" * 100)
    before = bp.plan(str(path), block_size=16)
    stat = path.stat()
    path.write_bytes(b"x\n" * 99)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime, other size
    after = bp.plan(str(path), block_size=16)
    assert before.fingerprint != after.fingerprint


def test_plan_fingerprint_changes_with_the_block_size(memfs: str) -> None:
    write_files(memfs, {"a.log": b"x\n" * 100})
    assert (bp.plan(memfs, block_size=16).fingerprint
            != bp.plan(memfs, block_size=17).fingerprint)


def test_plan_fingerprint_changes_with_the_format(memfs: str) -> None:
    write_files(memfs, {"a.log": b"x\n" * 100})
    prints = {
        bp.plan(memfs, block_size=16, format=fmt).fingerprint
        for fmt in ("lines", "raw", Delimited(b"|"), Delimited(b"\n"),
                    Lines(encoding="latin-1"))
    }
    assert len(prints) == 5


def test_plan_fingerprint_changes_when_a_file_is_added(memfs: str) -> None:
    write_files(memfs, {"a.log": b"x\n"})
    before = bp.plan(memfs, block_size=16)
    write_files(memfs, {"b.log": b"y\n"})
    assert bp.plan(memfs, block_size=16).fingerprint != before.fingerprint


def test_plan_parses_block_size_strings(memfs: str) -> None:
    write_files(memfs, {"a.log": b"x" * 3000})
    assert bp.plan(memfs, block_size="1KiB").block_size == 1024
    assert len(bp.plan(memfs, block_size="1KiB").blocks) == 3
    assert bp.plan(memfs, block_size="1kB").block_size == 1000


# -- plan(): errors before any work ----------------------------------------------------


def test_plan_rejects_a_missing_path_naming_it(memfs: str) -> None:
    url = f"{memfs}/no/such/file.log"
    expected = re.escape(f"input '{url}' does not exist; check the path")
    with pytest.raises(NoInputFilesError, match=expected):
        bp.plan(url)


def test_plan_missing_path_error_is_a_file_not_found_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.log")
    with pytest.raises(FileNotFoundError, match=r"missing\.log' does not exist"):
        bp.plan(missing)


def test_plan_rejects_a_glob_matching_nothing(memfs: str) -> None:
    write_files(memfs, {"a.log": b"x\n"})
    url = f"{memfs}/*.csv"
    expected = re.escape(f"the glob '{url}' matched no files; check")
    with pytest.raises(NoInputFilesError, match=expected):
        bp.plan(url)


def test_plan_rejects_a_glob_matching_only_hidden_files(memfs: str) -> None:
    write_files(memfs, {"_a.log": b"x\n", ".b.log": b"y\n"})
    with pytest.raises(NoInputFilesError, match="matched no files"):
        bp.plan(f"{memfs}/*.log")


def test_plan_rejects_an_empty_local_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoInputFilesError, match="holds no input files") as info:
        bp.plan(str(empty))
    assert str(empty) in str(info.value)
    assert "'_' or '.'" in str(info.value)


def test_plan_rejects_a_directory_holding_only_hidden_files(memfs: str) -> None:
    write_files(memfs, {"_SUCCESS": b"{}", ".x": b"x", "_temporary/p.txt": b"p"})
    expected = re.escape(f"the directory '{memfs}' holds no input")
    with pytest.raises(NoInputFilesError, match=expected):
        bp.plan(memfs)


def test_plan_rejects_an_empty_list_of_inputs() -> None:
    with pytest.raises(ConfigError, match="no input given"):
        bp.plan([])


@pytest.mark.parametrize(
    ("block_size", "fragment"),
    [
        (0, "block_size must be >= 1 byte, got 0"),
        (-1, "block_size must be >= 1 byte, got -1"),
        ("0", "block_size must be >= 1 byte, got '0'"),
        ("-5", "block_size '-5' is not a size"),
        ("lots", "block_size 'lots' is not a size"),
        ("64 XB", "block_size '64 XB' is not a size"),
    ],
)
def test_plan_rejects_bad_block_size_naming_it(
    memfs: str, block_size: int | str, fragment: str
) -> None:
    write_files(memfs, {"a.log": b"x\n"})
    with pytest.raises(ConfigError, match=fragment) as info:
        bp.plan(memfs, block_size=block_size)
    assert "64MiB" in str(info.value)  # shows how to write one


def test_plan_rejects_zero_block_size_before_listing_anything() -> None:
    with pytest.raises(ConfigError, match="block_size"):
        bp.plan("memory://there-is-nothing-here", block_size=0)


@pytest.mark.parametrize("block_size", [1.5, True, None])
def test_plan_rejects_block_size_of_wrong_type(memfs: str, block_size: object) -> None:
    with pytest.raises(TypeError, match="block_size must be an int or a string"):
        bp.plan(memfs, block_size=block_size)  # type: ignore[arg-type]


def test_plan_rejects_unknown_format_listing_the_valid_ones(memfs: str) -> None:
    write_files(memfs, {"a.log": b"x\n"})
    with pytest.raises(ConfigError, match="unknown format 'xml'; choose one of "
                                          "csv, delimited, fixed, jsonl, lines, parquet, raw"):
        bp.plan(memfs, format="xml")


def test_plan_rejects_inputs_on_two_filesystems(memfs: str, tmp_path: Path) -> None:
    (url,) = write_files(memfs, {"a.log": b"x\n"})
    (tmp_path / "b.log").write_bytes(b"y\n")
    with pytest.raises(ConfigError, match="all inputs must be on one filesystem"):
        bp.plan([url, str(tmp_path / "b.log")])
