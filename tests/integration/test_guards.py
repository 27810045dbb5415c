"""Guard rails that are not refusals: the worker cap and bound, skipped outputs inside input
directories, the plan table of packed blocks, and the CLI's wording (plural, demo cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import blockproc as bp
from blockproc import job_setup, limits
from blockproc.cli import main
from blockproc.planning import MAX_SMALL_BLOCKS, check_block_count
from blockproc.storage import scan_inputs


def test_a_job_never_starts_more_workers_than_blocks(tmp_path: Path) -> None:
    (tmp_path / "in.log").write_bytes(b"a\nb\nc\n")
    bp.map_lines(str.upper, str(tmp_path / "in.log"), output=str(tmp_path / "out"),
                 executor="threads", workers=8, block_size=4)
    manifest = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert len(manifest["blocks"]) == 2 and manifest["workers"] == 2


def test_the_worker_bound_comes_from_cpus_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(limits.MAX_WORKERS_ENV, raising=False)
    monkeypatch.setattr(limits, "default_workers", lambda: 4)
    monkeypatch.setattr(limits, "total_memory", lambda: 64 * 2**30)
    assert limits.max_workers() == (32, "8 per CPU, 4 CPUs; 256.0 MiB each of 64.0 GiB memory")
    monkeypatch.setattr(limits, "total_memory", lambda: 2 * 2**30)  # memory binds first
    assert limits.max_workers()[0] == 8
    monkeypatch.setenv(limits.MAX_WORKERS_ENV, "500")
    assert limits.max_workers() == (500, "BLOCKPROC_MAX_WORKERS=500")


def test_the_environment_variable_allows_more_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in.log").write_bytes(b"a\n")
    plan = bp.plan(str(tmp_path / "in.log"))
    monkeypatch.setenv(limits.MAX_WORKERS_ENV, "1")
    with pytest.raises(bp.ConfigError, match=r"at most 1 .*BLOCKPROC_MAX_WORKERS=2"):
        bp.submit(plan, str.upper, output=str(tmp_path / "out"), workers=2)
    monkeypatch.setenv(limits.MAX_WORKERS_ENV, "2")
    job = job_setup.make_job(plan, str.upper, output=str(tmp_path / "out"), per="record",
                             executor="processes", workers=2, if_exists="error",
                             max_attempts=1, speculation=None, max_bad_records=None,
                             max_record_size="1MiB", progress=False, storage_options=None)
    assert job._master.executor.num_slots == 1  # allowed, and capped at the plan's one block


def test_block_count_limits() -> None:
    check_block_count(MAX_SMALL_BLOCKS, 100, MAX_SMALL_BLOCKS * 100)  # at the limit: fine
    with pytest.raises(bp.ConfigError, match=r"100,001 blocks.*block_size='64KiB'"):
        check_block_count(MAX_SMALL_BLOCKS + 1, 100, (MAX_SMALL_BLOCKS + 1) * 100)
    check_block_count(20_000, 2**20, 20_000 * 2**20)  # many blocks of 1 MiB: fine
    with pytest.raises(bp.ConfigError, match=r"1,000,001 blocks; more than the limit"):
        check_block_count(1_000_001, 2**20, 1_000_001 * 2**20)


def test_outputs_inside_an_input_directory_are_skipped_and_named(memfs: str) -> None:
    bp.testing.write_files(memfs, {
        "a.log": b"a\n", "deep/b.log": b"b\n",
        "deep/run1/part-00000.txt": b"A\n", "deep/run1/_SUCCESS": b"{}",
        "run2/part-00000.txt": b"B\n", "run2/_blockproc/plan.json": b"{}",
        "run2/nested/_SUCCESS": b"{}",
    })
    plan = bp.plan(memfs)
    root = memfs.replace("memory://", "/")
    assert [f.path for f in plan.files] == [f"{root}/a.log", f"{root}/deep/b.log"]
    assert plan.skipped == (f"{root}/deep/run1", f"{root}/run2")
    assert plan.directories == (root,)
    assert plan.to_dict()["skipped"] == list(plan.skipped)


def test_an_output_given_as_the_input_is_read(memfs: str) -> None:
    bp.map_lines(str.upper, bp.testing.write_files(memfs, {"in.log": b"a\n"}),
                 output=f"{memfs}/out", executor="inline")
    plan = bp.plan(f"{memfs}/out")  # one job's output is the next job's input
    assert [f.path.rsplit("/", 1)[1] for f in plan.files] == ["part-00000.txt"]
    assert plan.skipped == ()


def test_a_glob_reads_what_it_matches_outputs_included(memfs: str) -> None:
    bp.testing.write_files(memfs, {"run1/part-00000.txt": b"A\n", "run1/_SUCCESS": b"{}"})
    listing = scan_inputs([f"{memfs}/*/part-*"])
    assert [f.path.rsplit("/", 2)[1] for f in listing.files] == ["run1"]
    assert listing.skipped == ()


def test_plan_shows_each_file_of_a_packed_block(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.log").write_bytes(b"a\n" * 3)
    (tmp_path / "b.log").write_bytes(b"b\n" * 5)
    assert main(["plan", str(tmp_path), "--block-size", "1KiB"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("<Plan 2 files, 1 block, 16 B")
    assert out[2].split() == ["0", "(2", "files", "packed)", "16", "B"]
    assert out[3].split() == [str(tmp_path / "a.log"), "0", "6", "6", "B"]
    assert out[4].split() == [str(tmp_path / "b.log"), "0", "10", "10", "B"]


def test_the_summary_says_block_for_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.log").write_bytes(b"a\n")
    assert main(["run", str(tmp_path / "in.log"), "-o", str(tmp_path / "out"), "--cmd", "cat",
                 "--executor", "inline"]) == 0
    assert capsys.readouterr().out.startswith("committed 1 block: 1 records in")


def test_demo_says_whether_it_generated_the_input(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["demo", "--size", "64KiB", "--executor", "inline", "-q"]
    assert main(args) == 0
    assert "KiB, generated now, cached for the next run)" in capsys.readouterr().out
    assert main(args) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("KiB, cached)") and "generated" not in first


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "in.log", "-o", "out", "--block-size", "0"]) == 2
    assert capsys.readouterr().err == (
        "error: Invalid value for '--block-size': must be >= 1 byte, got '0'; see "
        "'blockproc run --help'\n")
