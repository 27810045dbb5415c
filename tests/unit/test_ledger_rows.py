"""Each committed block's row is formatted once: the ledger line is written again, as it
is, into ``_SUCCESS``, as are the attempts file's rows; and the ledger lines of the
blocks committed within ``LEDGER_DELAY`` seconds take one write (issue 16). The rows
must stay what ``block_json`` makes, and a line must never be written before its
part-file has its final name, nor by a job that lost its lock."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
import blockproc.master
import blockproc.output.manifest as manifest_module
from blockproc.errors import BlockFailedError, StorageError
from blockproc.master import Master
from blockproc.model import BlockResult
from blockproc.output import OutputDir
from blockproc.output.layout import LEDGER, STATE_DIR, SUCCESS
from blockproc.output.ledger import Ledger
from blockproc.output.manifest import (
    KnownRows,
    WrittenRows,
    block_json,
    build_manifest,
    dumps_rows,
    iter_list,
)
from blockproc.storage import filesystem
from blockproc.worker import Mapper
from tests.unit.test_master import DATA, FakeClock, FakeExecutor


def local_job(tmp_path: Path, script: dict[tuple[int, int], list[str]] | None = None,
              **kw: Any) -> tuple[Master, OutputDir]:
    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    plan = bp.plan(str(src), block_size=120)
    ex = FakeExecutor(FakeClock(), script, **kw)
    fs = filesystem("file")
    out = OutputDir(fs, str(tmp_path / "out"), "job-local")
    return Master(plan, Mapper("record", str.upper), out, ex,  # type: ignore[arg-type]
                  input_fs=fs, progress=False, clock=ex.clock), out


def ledger_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "out" / STATE_DIR / LEDGER / "job-local.jsonl"
    return path.read_text().splitlines()


def test_success_holds_the_ledger_rows_as_written_and_formats_none_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    formatted: list[BlockResult] = []

    def counted(r: BlockResult) -> str:
        formatted.append(r)
        return block_json(r)

    monkeypatch.setattr(manifest_module, "block_json", counted)  # the manifest's own calls
    m, _ = local_job(tmp_path, {(1, 1): ["fail"]})
    result = m.run(threading.Event())
    assert formatted == []  # every row of _SUCCESS came from the ledger
    success = json.loads((tmp_path / "out" / SUCCESS).read_bytes())
    assert success["blocks"] == [b.to_dict() for b in result.blocks]
    rows = {json.loads(line)["id"]: line for line in ledger_lines(tmp_path)}
    text = (tmp_path / "out" / SUCCESS).read_text()
    assert all(f"\n  {rows[b.block.id]}" in text for b in result.blocks)
    # byte for byte the manifest the results give when formatted afresh
    doc = build_manifest("job-local", m.plan, result.blocks, {"k": 1})
    fresh = dumps_rows(doc)
    known = dumps_rows({**doc, "blocks": KnownRows(
        result.blocks, [rows[b.block.id] for b in result.blocks])})
    assert known == fresh and len(formatted) == len(result.blocks)


def test_a_row_of_another_result_than_the_committed_one_is_formatted_afresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = OutputDir.finish

    def finish(self: OutputDir, plan: Any, results: Any, job: Any) -> None:
        real(self, plan, (results[0].committed(7), *results[1:]), job)  # same block

    monkeypatch.setattr(OutputDir, "finish", finish)
    m, _ = local_job(tmp_path)
    result = m.run(threading.Event())
    success = json.loads((tmp_path / "out" / SUCCESS).read_bytes())
    assert success["blocks"][0] == {**result.blocks[0].to_dict(), "attempts": 7}
    assert success["blocks"][1:] == [b.to_dict() for b in result.blocks[1:]]


def test_known_rows_need_one_text_per_row_and_none_are_an_empty_list(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 texts for 2 rows"):
        KnownRows([{"id": 0}, {"id": 1}], [None])
    empty = {"blocks": KnownRows([], []), "attempts": WrittenRows([], str(tmp_path / "no"))}
    assert json.loads(dumps_rows(empty)) == {"blocks": [], "attempts": []}


def test_the_lines_of_one_pass_take_one_write(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blockproc.master, "LEDGER_DELAY", 0.0)  # a flush after each pass
    writes: list[int] = []
    real = Ledger.flush

    def flush(self: Ledger) -> None:
        writes.append(self.pending)
        real(self)

    monkeypatch.setattr(Ledger, "flush", flush)
    m, _ = local_job(tmp_path, slots=3)  # the three blocks finish in the same pass
    m.run(threading.Event())
    assert len(m.plan.blocks) == 3 and writes == [3]
    assert sorted(json.loads(line)["id"] for line in ledger_lines(tmp_path)) == [0, 1, 2]


def test_a_failing_job_keeps_the_lines_of_the_blocks_it_committed(tmp_path: Path) -> None:
    # blocks 0 and 1 commit in the pass where block 2 fails for good
    m, _ = local_job(tmp_path, {(2, 1): ["fatal"]}, slots=3)
    with pytest.raises(BlockFailedError):
        m.run(threading.Event())
    assert sorted(json.loads(line)["id"] for line in ledger_lines(tmp_path)) == [0, 1]
    for line in ledger_lines(tmp_path):  # each names a part-file in place
        entry = json.loads(line)
        assert (tmp_path / "out" / entry["part"]).stat().st_size == entry["bytes_written"]


def test_success_copies_the_attempts_from_the_attempts_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = manifest_module._attempt_text

    def counted(*fields: Any) -> str:
        calls.append(fields)
        return real(*fields)

    m, _ = local_job(tmp_path, {(1, 1): ["fail"], (2, 1): ["lost"]})
    real_finish = OutputDir.finish

    def finish(self: OutputDir, *args: Any) -> None:
        monkeypatch.setattr(manifest_module, "_attempt_text", counted)
        real_finish(self, *args)

    monkeypatch.setattr(OutputDir, "finish", finish)
    result = m.run(threading.Event())
    assert len(result.attempts) == 5 and len(calls) == 2  # the first and last, checked
    text = (tmp_path / "out" / SUCCESS).read_bytes()
    success = json.loads(text)
    assert success["attempts"] == [a.to_dict() for a in result.attempts]
    fresh = dumps_rows({"attempts": list(result.attempts)})
    assert fresh[fresh.index(b"[\n"):fresh.index(b"\n ]")] in text


@pytest.mark.parametrize("damage", ["gone", "a row less", "another last row", "empty"])
def test_written_rows_are_formatted_when_the_file_does_not_hold_them(
        tmp_path: Path, damage: str) -> None:
    rows = [{"n": i} for i in range(5)]
    path = tmp_path / "rows.json"
    path.write_bytes(b"".join(iter_list(rows)))
    if damage == "gone":
        path.unlink()
    elif damage == "a row less":
        path.write_bytes(b"".join(iter_list(rows[:2] + rows[3:])))
    elif damage == "another last row":
        path.write_bytes(b"".join(iter_list([*rows[:4], {"n": 9}])))
    else:
        path.write_bytes(b"")
    written = WrittenRows(rows, str(path))
    assert written.copied() is None
    assert dumps_rows({"rows": written}) == dumps_rows({"rows": rows})
    path.write_bytes(b"".join(iter_list(rows)))
    assert written.copied() is not None
    assert dumps_rows({"rows": written}) == dumps_rows({"rows": rows})
    single = WrittenRows(rows[:1], str(path))
    path.write_bytes(b"".join(iter_list(rows[:1])))
    assert dumps_rows({"rows": single}) == dumps_rows({"rows": rows[:1]})


def test_the_lines_wait_at_most_the_ledger_delay(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blockproc.master, "LEDGER_DELAY", 3600.0)
    written: list[int] = []

    def on_poll(polls: int) -> None:
        path = tmp_path / "out" / STATE_DIR / LEDGER / "job-local.jsonl"
        written.append(len(path.read_bytes().splitlines()) if path.exists() else 0)
        if polls == 2:  # block 0 was committed in the first pass, block 1 comes next
            monkeypatch.setattr(blockproc.master, "LEDGER_DELAY", 0.0)

    m, _ = local_job(tmp_path, {(1, 1): ["progress", "ok"], (2, 1): ["progress", "ok"]},
                     on_poll=on_poll)
    m.run(threading.Event())
    assert written[:3] == [0, 0, 2]  # blocks 0 and 1 waited for the delay, then came
    assert sorted(json.loads(line)["id"] for line in ledger_lines(tmp_path)) == [0, 1, 2]


def test_a_local_rename_that_fails_is_retried_then_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import blockproc.output.directory as directory_module

    real, calls = directory_module.os.replace, []

    def flaky(source: str, destination: str) -> None:
        if "_temporary" in source:  # a part-file's (os.replace is the os module's)
            calls.append(source)
            if len(calls) == 1:
                raise ConnectionResetError("a network disk hiccup")  # transient: retried
        real(source, destination)

    monkeypatch.setattr(directory_module.os, "replace", flaky)
    m, _ = local_job(tmp_path)
    result = m.run(threading.Event())
    assert len(calls) == len(result.blocks) + 1 and calls[0] == calls[1]  # one, twice
    assert all((tmp_path / "out" / b.part).exists() for b in result.blocks)
    monkeypatch.setattr(directory_module.os, "replace", real)
    out = OutputDir(filesystem("file"), str(tmp_path / "out2"), "job-2")
    out.prepare(m.plan, "error", [])
    with pytest.raises(StorageError, match=r"to commit part-00000\.txt"):
        out.commit(result.blocks[0], str(tmp_path / "no-such-staged-file"))
    out.release()
