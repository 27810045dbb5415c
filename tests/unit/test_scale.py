"""The master at scale: no cost that grows with the square of the blocks or attempts.

The complexity check runs the simulation of ``benchmarks/bench_scale.py`` (the real
Scheduler, Master loop, commit ledger and manifest against a simulated executor) at
1,000 and 10,000 blocks: ten times the blocks may take at most 15 times the time (best of
3 each, so noise on a shared machine does not decide). Nothing here times absolute speed.
The scheduler's bookkeeping (per-block counts, the deadline heap, the running median,
the running bytes) is checked against brute force over random operations.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockproc.model import AttemptRecord, Block, BlockResult, FileTail, InputFile
from blockproc.output import manifest
from blockproc.output.ledger import earlier_attempts, save_attempts
from blockproc.scheduler import AttemptKey, AttemptRows, RunningMedian, Scheduler
from blockproc.storage import filesystem, listing
from blockproc.testing import write_files

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scale.py"


def bench_scale() -> ModuleType:
    """``benchmarks/bench_scale.py`` as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("bench_scale", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_scale", module)
    spec.loader.exec_module(module)
    return module


# -- the running median ---------------------------------------------------------------


@given(st.lists(st.floats(min_value=0.0, max_value=1e12, allow_nan=False), min_size=1,
                max_size=200))
def test_running_median_is_the_median_of_all_numbers(numbers: list[float]) -> None:
    m = RunningMedian()
    for i, x in enumerate(numbers):
        m.add(x)
        assert m.value == pytest.approx(statistics.median(numbers[:i + 1]))
    assert len(m) == len(numbers)


# -- the scheduler's indexes against brute force --------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


OPS = st.lists(st.tuples(st.sampled_from(["assign", "speculate", "beat", "complete", "fail",
                                          "lost", "tick", "expire"]),
                         st.integers(0, 50)), max_size=120)


def check_against_brute_force(s: Scheduler) -> None:
    running = list(s.running.values())
    assert s.running_bytes == sum(min(a.bytes_done, s.size(a.block)) for a in running)
    assert s.num_running == len(running)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 6), st.integers(1, 3))
def test_scheduler_indexes_agree_with_scans_of_running(ops: list[tuple[str, int]],
                                                       blocks: int, max_attempts: int) -> None:
    clock = Clock()
    s = Scheduler(blocks, max_attempts=max_attempts, lease_timeout=5.0, clock=clock,
                  wall_clock=clock, block_sizes=[100] * blocks)
    for op, n in ops:
        keys = sorted(s.running)
        key: AttemptKey | None = keys[n % len(keys)] if keys else None
        if op == "assign":
            s.assign()
        elif op == "speculate":
            before = {k[0] for k, a in s.running.items() if a.speculative}
            started = s.speculate()
            if started is not None:
                assert started[0] not in before and started[0] not in s.committed
                assert s.running[started].speculative
        elif op == "beat" and key is not None:
            s.heartbeat(key, n * 7, n)
        elif op == "complete" and key is not None:
            others = [k for k in s.running if k[0] == key[0] and k != key]
            first = key[0] not in s.committed
            commit, cancel = s.complete(key)
            assert commit is first
            assert sorted(cancel) == (sorted(others) if first else [])
            assert not any(k[0] == key[0] for k in s.running) or not first
        elif op in ("fail", "lost") and key is not None:
            s.fail(key, "boom", lost=op == "lost")
            if key[0] not in s.committed and any(k[0] == key[0] for k in s.running):
                assert key[0] not in s.pending  # another attempt still runs: not queued
        elif op == "tick":
            clock.now += n / 10
        elif op == "expire":
            due = sorted(k for k, a in s.running.items() if a.deadline < clock.now)
            assert sorted(s.expire()) == due
            assert not any(a.deadline < clock.now for a in s.running.values())
        check_against_brute_force(s)


def test_a_renewed_lease_is_not_expired_by_its_old_deadline() -> None:
    clock = Clock()
    s = Scheduler(2, lease_timeout=10.0, clock=clock, wall_clock=clock)
    a, b = s.assign(), s.assign()
    assert a is not None and b is not None
    for _ in range(5):  # renewed many times: one heap entry suffices
        clock.now += 6
        s.heartbeat(a, 1, 1)
    assert s.expire() == [b]
    clock.now += 10.5
    assert s.expire() == [a]


def test_stragglers_asked_twice_at_one_time_agree() -> None:
    clock = Clock()
    s = Scheduler(4, clock=clock, wall_clock=clock, block_sizes=[100] * 4)
    keys = [s.assign() for _ in range(4)]
    clock.now = 1.0
    assert s.complete(keys[0]) == (True, [])  # 100 B/s
    clock.now = 5.0
    lagging = s.stragglers()
    assert sorted(lagging) == sorted(keys[1:])
    assert s.stragglers() == lagging
    spec = s.speculate()
    assert spec is not None and spec[0] == lagging[0][0]
    second = s.speculate()  # the same pass, the next block
    assert second is not None and second[0] == lagging[1][0]
    s.complete(spec)  # an attempt ended: asked again, the scheduler looks again
    assert lagging[0] not in s.stragglers()


# -- the model: to_dict without asdict, a plan's files by path ----------------------------


RECORDS = st.builds(AttemptRecord, st.integers(0, 10**6), st.integers(1, 4),
                    st.text(max_size=8), st.floats(0, 2e9), st.floats(0, 2e9),
                    st.sampled_from(["committed", "failed", "lost", "discarded"]),
                    st.text(max_size=20), st.booleans())


@given(RECORDS)
def test_records_and_input_files_are_their_fields(record: AttemptRecord) -> None:
    assert record.to_dict() == dataclasses.asdict(record)
    f = InputFile(record.worker, record.attempt, record.error, record.status or None)
    assert f.to_dict() == dataclasses.asdict(f)
    assert InputFile.from_dict(f.to_dict()) == f


def test_a_plan_finds_its_files_by_path_and_keeps_its_fingerprint() -> None:
    module = bench_scale()
    plan = module.sim_plan(5_500)
    assert [plan.file(b.path) for b in plan.blocks[::1000]] == list(plan.files[:6])
    with pytest.raises(KeyError):
        plan.file("/sim/in/nothing.log")
    again = module.sim_plan(5_500)
    assert plan.fingerprint == again.fingerprint == plan.fingerprint and plan == again
    assert dataclasses.replace(plan, block_size=1).fingerprint != plan.fingerprint


# -- rows formatted without json.dumps ----------------------------------------------------

FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 2e9)
TEXT = st.text(max_size=10)
INTS = st.integers(0, 2**40)
BLOCKS = st.builds(Block, INTS, TEXT, INTS, INTS,
                   st.just(()) | st.lists(st.builds(InputFile, TEXT, INTS), max_size=2)
                   .map(tuple))
RESULTS = st.builds(
    BlockResult, BLOCKS, TEXT, INTS, TEXT, INTS, INTS, INTS, INTS, TEXT, FLOATS, FLOATS,
    bad_records=INTS, stderr_bytes=st.just(0) | INTS, attempts=st.just(0) | INTS,
    counters=st.just({}) | st.dictionaries(TEXT, INTS, max_size=2),
    tails=st.just(()) | st.lists(st.builds(FileTail, TEXT, INTS, INTS, TEXT), max_size=1)
    .map(tuple))


@settings(max_examples=300)
@given(RESULTS)
def test_a_block_row_is_json_dumps_of_its_dict(result: BlockResult) -> None:
    assert manifest.block_json(result) == json.dumps(result.to_dict())


@settings(max_examples=300)
@given(RECORDS, FLOATS, FLOATS)
def test_an_attempt_row_is_json_dumps_of_its_dict(record: AttemptRecord, started: float,
                                                  finished: float) -> None:
    row = {**record.to_dict(), "started": started, "finished": finished}
    assert manifest.attempt_json(row) == json.dumps(row)
    assert manifest.attempt_json(record.to_dict()) == json.dumps(record.to_dict())
    odd = {**row, "attempt": True, "speculative": 1}  # other types: json.dumps decides
    assert manifest.attempt_json(odd) == json.dumps(odd)
    as_record = dataclasses.replace(record, started=started, finished=finished)
    assert manifest.dumps_rows({"a": [as_record]}) == reference_dumps_rows({"a": [row]})


def test_block_rows_know_every_field_of_a_block_result() -> None:
    """A new BlockResult or Block field: teach manifest.block_json to write it (or to
    leave it to to_dict), then add it here."""
    assert [f.name for f in dataclasses.fields(BlockResult)] == [
        "block", "part", "attempt", "worker", "records_in", "records_out", "bytes_read",
        "bytes_written", "checksum", "started", "seconds", "bad_records", "stderr_bytes",
        "attempts", "counters", "value", "tails"]
    assert [f.name for f in dataclasses.fields(Block)] == ["id", "path", "start", "end",
                                                            "files"]


# -- the manifest, streamed ------------------------------------------------------------


def reference_dumps_rows(doc: dict[str, object]) -> bytes:
    """The manifest layout as one string: one line per key and per row of a list of dicts."""
    fields = []
    for key, value in doc.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows = ",\n  ".join(json.dumps(v) for v in value)
            fields.append(f" {json.dumps(key)}: [\n  {rows}\n ]")
        else:
            fields.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return ("{\n" + ",\n".join(fields) + "\n}\n").encode()


@settings(max_examples=100, deadline=None)
@given(st.lists(RECORDS, max_size=12), st.lists(RECORDS, max_size=5),
       st.integers(1, 4))
def test_streamed_rows_are_the_rows_of_the_whole_document(
        blocks: list[AttemptRecord], attempts: list[AttemptRecord], per_chunk: int) -> None:
    as_dicts = {"job_id": "j", "blocks": [b.to_dict() for b in blocks], "n": 3,
                "attempts": [a.to_dict() for a in attempts]}
    as_rows = {**as_dicts, "blocks": blocks, "attempts": tuple(attempts)}
    expected = reference_dumps_rows(as_dicts)
    saved = manifest.ROWS_PER_CHUNK
    manifest.ROWS_PER_CHUNK = per_chunk  # chunk boundaries anywhere
    try:
        assert manifest.dumps_rows(as_rows) == expected
        assert manifest.dumps_rows(as_dicts) == expected
        listed = b"".join(manifest.iter_list(attempts))
    finally:
        manifest.ROWS_PER_CHUNK = saved
    assert json.loads(expected) == json.loads(json.dumps(as_dicts))
    assert json.loads(listed) == [a.to_dict() for a in attempts]


class Exploding:
    def to_dict(self) -> dict[str, object]:
        raise OSError("the disk is full")


@pytest.mark.parametrize("protocol", ["file", "memory"])
def test_a_manifest_that_fails_mid_stream_leaves_nothing(protocol: str, tmp_path: Path,
                                                         memfs: str) -> None:
    fs = filesystem(protocol)
    root = str(tmp_path) if protocol == "file" else memfs.replace("memory://", "/")
    rows = [AttemptRecord(i, 1, "w", 0.0, 1.0, "committed") for i in range(5000)]
    manifest.write_manifest(fs, f"{root}/_SUCCESS", {"job_id": "j", "blocks": rows})
    assert len(manifest.read_manifest(fs, root)["blocks"]) == 5000
    with pytest.raises(OSError, match="the disk is full"):
        manifest.write_manifest(fs, f"{root}/other", {"blocks": [*rows, Exploding()]})
    assert sorted(fs.ls(root, detail=False)) == [f"{root}/_SUCCESS"]


def test_attempts_are_saved_from_the_scheduler_s_attempts(memfs: str) -> None:
    fs, root = filesystem("memory"), memfs.replace("memory://", "/")
    clock = Clock()
    s = Scheduler(3, clock=clock, wall_clock=clock)
    keys = [s.assign() for _ in range(3)]
    for key in keys:
        assert key is not None
        s.fail(key, "boom") if key[0] == 1 else s.complete(key, "w:1")
    expected = [{**a.to_record().to_dict(), "job_id": "run-1"} for a in s.history]
    save_attempts(fs, root, "run-1", s.history)
    assert earlier_attempts(fs, root, "run-2") == expected
    save_attempts(fs, root, "run-1", AttemptRows(s.history))  # dicts made as written
    assert earlier_attempts(fs, root, "run-2") == expected


# -- the manifest, read lazily ----------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8)
DOCS = st.dictionaries(st.text(max_size=6),
                       JSON_VALUES | st.lists(st.dictionaries(st.text(max_size=4), JSON_VALUES,
                                                              max_size=3), max_size=4),
                       max_size=6)


@settings(max_examples=200, deadline=None)
@given(DOCS, st.booleans())
def test_a_manifest_read_lazily_is_the_document(doc: dict[str, object], indented: bool) -> None:
    data = json.dumps(doc, indent=1).encode() if indented else manifest.dumps_rows(doc)
    lazy = manifest.Manifest(data)
    for key, value in doc.items():
        if isinstance(value, list):
            assert lazy.num_rows(key) == sum(isinstance(v, dict) for v in value) or \
                lazy.is_parsed(key)
    assert list(lazy) == list(doc)
    assert dict(lazy) == json.loads(data)


def test_status_reads_no_row_of_a_big_manifest_and_agrees_with_an_older_one(
        tmp_path: Path) -> None:
    from blockproc.output import status as output_status

    figures = bench_scale().simulate(3000, 50, root=str(tmp_path), fail=0.05, lost=0.02,
                                     cli=False)
    out = f"{tmp_path}/out"
    new = output_status(out)
    assert isinstance(new.manifest, manifest.Manifest)
    assert not new.manifest.is_parsed("blocks") and not new.manifest.is_parsed("attempts")
    assert len(new.attempts) == figures["attempts"]
    assert new.attempts_by_status == {**figures["by_status"],
                                      "speculative": figures["speculative"]}
    assert not new.manifest.is_parsed("attempts")  # counted from the header
    # the same output, its manifest as an older blockproc wrote it: indented, no totals
    old_doc = dict(new.manifest)
    del old_doc["attempt_totals"]
    Path(out, "_SUCCESS").write_text(json.dumps(old_doc, indent=1))
    old = output_status(out)
    for name in ("num_blocks", "committed", "committed_attempts", "earlier_blocks",
                 "earlier_attempts", "attempts_by_status", "records_in", "job_id"):
        assert getattr(old, name) == getattr(new, name), name
    assert old.attempts == new.attempts and len(new.committed) == 3000


# -- listing: outputs inside an input directory ------------------------------------------

NAMES = st.sampled_from(["a", "b", "_SUCCESS", "_blockproc", "part-0", "x.log"])


def outputs_below_by_pairs(root: str, names: list[str]) -> list[str]:
    """The rule as it reads: a directory holding a marker is an output, unless it is
    inside another output."""
    outputs = set()
    for name in names:
        parts = name[len(root):].strip("/").split("/")
        for depth in range(1, len(parts)):
            if parts[depth] in listing.OUTPUT_MARKERS:
                outputs.add(root + "/" + "/".join(parts[:depth]))
                break
    return sorted(o for o in outputs if not any(o.startswith(p + "/") for p in outputs))


@settings(max_examples=200)
@given(st.lists(st.lists(NAMES, min_size=1, max_size=5), max_size=30))
def test_outputs_inside_an_input_directory_are_found_by_their_ancestors(
        paths: list[list[str]]) -> None:
    root = "/in"
    names = [root + "/" + "/".join(p) for p in paths]
    outputs = listing._outputs_below(root, {name: {} for name in names})
    assert outputs == outputs_below_by_pairs(root, names)
    for name in names:
        assert listing._inside(name, root, set(outputs)) == \
            any(name.startswith(o + "/") for o in outputs)


def test_a_directory_of_many_outputs_is_listed_without_them(tmp_path: Path) -> None:
    files = {f"job{j:03d}/part-{i:05d}.txt": b"x\n" for j in range(300) for i in range(20)}
    files.update({f"job{j:03d}/_SUCCESS": b"{}" for j in range(300)})
    files.update({f"in{i:03d}.log": b"a line\n" for i in range(100)})
    write_files(tmp_path.as_uri(), files)
    found = listing.scan_inputs([str(tmp_path)])  # each file's ancestors looked up, not
    assert len(found.files) == 100 and len(found.skipped) == 300  # 6,000 x 300 compared


# -- the complexity check -------------------------------------------------------------


def cpu_of(blocks: int, workers: int, root: Path) -> float:
    """The master's CPU seconds for one simulated job (the simulated executor's left out)."""
    root.mkdir()
    t0 = time.process_time()
    figures = bench_scale().simulate(blocks, workers, root=str(root), cli=False)
    assert figures["by_status"]["committed"] == blocks
    return time.process_time() - t0 - float(figures["executor_cpu_s"])


@pytest.mark.parametrize(("few", "many"), [(10, 10), (100, 1000)])
def test_ten_times_the_blocks_takes_at_most_fifteen_times_the_time(
        few: int, many: int, tmp_path: Path) -> None:
    """With as many workers (a cost per block that grows with the blocks), and with ten
    times the workers too (a scan of the running attempts per event). Best of 3 each; the
    big job stops at its first run within the bound."""
    small = min(cpu_of(1_000, few, tmp_path / f"small-{i}") for i in range(3))
    large = float("inf")
    for i in range(3):
        large = min(large, cpu_of(10_000, many, tmp_path / f"large-{i}"))
        if large <= 15 * small:
            break
    assert large <= 15 * small, (
        f"10,000 blocks on {many} workers took {large:.3f}s of CPU, 1,000 blocks on {few} "
        f"{small:.3f}s: {large / small:.1f}x for 10x the blocks; something grows faster "
        f"than linearly")
