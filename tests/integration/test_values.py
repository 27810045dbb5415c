"""Results back to the master: ``JobResult.values``, :func:`blockproc.reduce_blocks` and
``bp.counter``, exactly once on every executor, under kill -9, speculation and resume.

Every job here runs for real: worker processes, a cluster of ``blockproc worker``
processes joining over TCP, a dask LocalCluster; faults are struck from inside the
attempts by :class:`tests.faults.FaultPlan` (a worker kills itself with SIGKILL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import blockproc as bp
from blockproc.executors import make_executor
from blockproc.job import Job, JobOptions, run_job
from blockproc.output_formats import PickleOutput
from blockproc.storage import resolve
from blockproc.values import Values
from blockproc.worker import Mapper
from tests import jobs
from tests.faults import FaultPlan

WORDS = ("GET", "POST", "PUT", "DELETE")
LINES = [f"{WORDS[i * 7 % 4]} /item/{i}" for i in range(4000)]
DATA = "".join(line + "\n" for line in LINES).encode()
EXPECTED = {w: sum(1 for line in LINES if line.startswith(w + " ")) for w in WORDS}
BLOCK_SIZE = 4096
ALL_EXECUTORS = ["inline", "threads", "processes", "cluster", "dask"]


@pytest.fixture
def src(tmp_path: Path) -> str:
    path = tmp_path / "in" / "access.log"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return str(path)


def per_block_counts(src: str) -> list[dict[str, int]]:
    """What :func:`tests.jobs.word_counts` returns for each block, computed here."""
    plan = bp.plan(src, block_size=BLOCK_SIZE)
    result = bp.map_blocks(lambda b: b.records, src, block_size=BLOCK_SIZE, executor="inline")
    assert len(result.values) == len(plan.blocks)
    return [{w: sum(1 for r in records if r.startswith(w + " ")) for w in WORDS
             if any(r.startswith(w + " ") for r in records)} for records in result.values]


def skip_without_dask(executor: str) -> None:
    if executor == "dask":
        pytest.importorskip("distributed")


# -- every executor ----------------------------------------------------------------------

@pytest.mark.parametrize("executor", ALL_EXECUTORS)
def test_values_come_back_in_block_order_on_every_executor(src: str, executor: str) -> None:
    skip_without_dask(executor)
    result = bp.map_blocks(jobs.word_counts, src, block_size=BLOCK_SIZE, executor=executor,
                           workers=2)
    assert list(result.values) == per_block_counts(src)
    assert result.parts == () and result.output == ""
    assert result.counters == {"blocks": len(result.blocks), "lines": len(LINES)}


@pytest.mark.parametrize("executor", ALL_EXECUTORS)
def test_reduce_blocks_folds_every_block_once_on_every_executor(src: str,
                                                                executor: str) -> None:
    skip_without_dask(executor)
    result = bp.reduce_blocks(jobs.word_counts, jobs.merge_counts, src, initial={},
                              block_size=BLOCK_SIZE, executor=executor, workers=2)
    assert result.value == EXPECTED
    assert result.values is None
    assert result.counters["lines"] == len(LINES)


def test_map_lines_without_output_returns_each_blocks_results(src: str) -> None:
    result = bp.map_lines(lambda line: line.split()[1] if line.startswith("PUT") else None,
                          src, block_size=BLOCK_SIZE, executor="threads", workers=2)
    flat = [item for block in result.values for item in block]
    assert flat == [line.split()[1] for line in LINES if line.startswith("PUT")]
    assert all(isinstance(block, list) for block in result.values)  # [] for a block
    assert result.num_records_out == len(flat)


# -- faults: kill -9, speculation ----------------------------------------------------------

def fault_job(src: str, executor: str, hook: FaultPlan, *, speculation: bool,
              out: str | None = None, max_attempts: int = 4) -> Job:
    """A word-count ``reduce_blocks`` job with a fault plan, built as make_job builds it."""
    plan = bp.plan(src, block_size=BLOCK_SIZE)
    fs, path = resolve(out) if out is not None else (None, "")
    return Job(plan, Mapper("block", jobs.word_counts, PickleOutput()), output_fs=fs,
               output_path=path, executor=make_executor(executor, 2),
               options=JobOptions(speculation=speculation, hook=hook,
                                  max_attempts=max_attempts),
               values=Values(len(plan.blocks), combine=jobs.merge_counts, initial={}))


@pytest.mark.parametrize("executor", ["processes", "cluster", "dask"])
@pytest.mark.parametrize("point", ["crash_before_write", "crash_after_write"])
def test_a_worker_killed_mid_job_counts_its_block_once(src: str, executor: str,
                                                       point: str) -> None:
    skip_without_dask(executor)
    faults = FaultPlan({(1, 1): point, (4, 1): point})
    job = fault_job(src, executor, faults, speculation=False)
    run_job(job)
    result = job.result()
    assert result.value == EXPECTED
    assert result.counters == {"blocks": len(result.blocks), "lines": len(LINES)}
    lost = {(a.block_id, a.attempt) for a in result.attempts if a.status in ("failed", "lost")}
    assert {(1, 1), (4, 1)} <= lost  # a dask worker process takes its other attempts along
    assert executor == "dask" or lost == {(1, 1), (4, 1)}


@pytest.mark.parametrize("executor", ["processes", "cluster"])
def test_a_straggler_and_its_speculative_copy_count_once(src: str, executor: str) -> None:
    faults = FaultPlan({(0, 1): "slow"}, slow_seconds=3.0)  # block 0's first attempt lags
    job = fault_job(src, executor, faults, speculation=True)
    run_job(job)
    result = job.result()
    attempts_of_0 = [a for a in result.attempts if a.block_id == 0]
    assert len(attempts_of_0) == 2 and any(a.speculative for a in attempts_of_0)
    assert result.value == EXPECTED
    assert result.counters == {"blocks": len(result.blocks), "lines": len(LINES)}


def test_an_order_sensitive_combine_gives_the_completion_order(src: str) -> None:
    """List concatenation is associative but not commutative: the answer is the
    partials in the order the blocks committed, here block 0 last (it is slow)."""
    plan = bp.plan(src, block_size=BLOCK_SIZE)
    n = len(plan.blocks)
    job = Job(plan, Mapper("block", jobs.block_id_list, PickleOutput()), output_fs=None,
              output_path="", executor=make_executor("threads", 2),
              options=JobOptions(speculation=False,
                                 hook=FaultPlan({(0, 1): "slow"}, slow_seconds=1.0)),
              values=Values(n, combine=jobs.concatenate, initial=[]))
    run_job(job)
    folded = job.result().value
    assert sorted(folded) == list(range(n))  # every block once...
    assert folded[-1] == 0 and folded != list(range(n))  # ...in completion order


# -- resume ------------------------------------------------------------------------------

def test_a_failed_reduce_resumes_to_the_same_answer_without_rerunning(src: str,
                                                                       tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    plan = bp.plan(src, block_size=BLOCK_SIZE)
    job = fault_job(src, "processes", FaultPlan({(3, 1): "exception"}), speculation=False,
                    out=out, max_attempts=1)
    run_job(job)
    with pytest.raises(bp.BlockFailedError, match="block 3 of"):
        job.result()
    committed = {int(p.name[5:10]) for p in Path(out).glob("part-*.pickle")}
    assert committed and 3 not in committed
    resumed = bp.reduce_blocks(jobs.word_counts, jobs.merge_counts, src, initial={},
                               output=out, block_size=BLOCK_SIZE, if_exists="resume",
                               workers=2)
    assert resumed.value == EXPECTED
    assert resumed.counters == {"blocks": len(plan.blocks), "lines": len(LINES)}
    rerun = {a.block_id for a in resumed.attempts}
    assert rerun == set(range(len(plan.blocks))) - committed  # committed blocks not rerun
    assert bp.output.status(out).counters == resumed.counters


def test_collected_values_resume_from_their_pickle_parts(src: str, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    first = bp.map_blocks(jobs.word_counts, src, output=out, output_format="pickle",
                          block_size=BLOCK_SIZE, workers=2)
    again = bp.map_blocks(jobs.word_counts, src, output=out, output_format="pickle",
                          block_size=BLOCK_SIZE, workers=2, if_exists="resume")
    assert list(first.values) == list(again.values) == per_block_counts(src)
    assert again.attempts == ()  # every block was committed: nothing ran again


# -- bounds ------------------------------------------------------------------------------

def test_a_block_value_over_the_limit_fails_without_retries(src: str,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setenv("BLOCKPROC_MAX_BLOCK_VALUE", "1KiB")
    with pytest.raises(bp.BlockFailedError) as info:
        bp.map_blocks(lambda b: b.records, src, block_size=BLOCK_SIZE, executor="threads")
    message = str(info.value)
    assert "was not retried" in message
    assert "over the limit of 1.0 KiB per block (BLOCKPROC_MAX_BLOCK_VALUE)" in message
    assert "output=" in message and "reduce_blocks" in message
    assert isinstance(info.value.__cause__, bp.ValueTooLargeError)


def test_the_values_of_a_job_over_the_limit_fail_it(src: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_MAX_JOB_VALUES", "20KiB")
    with pytest.raises(bp.ValueTooLargeError, match=r"the values of \d+ blocks take .* over "
                       r"the limit of 20.0 KiB per job \(BLOCKPROC_MAX_JOB_VALUES\); write "
                       r"the results to files with output="):
        bp.map_blocks(lambda b: b.records, src, block_size=BLOCK_SIZE, executor="threads")


def test_a_fold_keeps_no_values_so_the_job_limit_does_not_apply(
        src: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKPROC_MAX_JOB_VALUES", "1KiB")
    result = bp.reduce_blocks(lambda b: len(b.records), lambda a, b: a + b, src,
                              block_size=BLOCK_SIZE, executor="threads")
    assert result.value == len(LINES)


def test_a_value_that_cannot_be_pickled_fails_at_once_naming_it(src: str) -> None:
    import threading

    with pytest.raises(bp.BlockFailedError, match=r"was not retried.*cannot be pickled"):
        bp.map_blocks(lambda b: threading.Lock(), src, block_size=BLOCK_SIZE,
                      executor="threads")


# -- counters ----------------------------------------------------------------------------

def test_counters_reach_the_manifest_status_and_the_report(src: str, tmp_path: Path) -> None:
    out = str(tmp_path / "out")

    def count_gets(line: str) -> str | None:
        if line.startswith("GET"):
            bp.counter("gets").add()
            return line
        return None

    result = bp.map_lines(count_gets, src, output=out, block_size=BLOCK_SIZE,
                          executor="threads")
    gets = EXPECTED["GET"]
    assert result.counters == {"gets": gets}
    manifest = json.loads((Path(out) / "_SUCCESS").read_text())
    assert manifest["totals"]["counters"] == {"gets": gets}
    assert sum(b.get("counters", {}).get("gets", 0) for b in manifest["blocks"]) == gets
    assert bp.output.status(out).counters == {"gets": gets}
    assert f"gets = {gets:,}" in result._repr_html_()


def test_a_counter_takes_whole_numbers_only() -> None:
    with pytest.raises(TypeError, match=r"counter 'x' adds whole numbers, got 1\.5"):
        bp.counter("x").add(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty str"):
        bp.counter("")


# -- the CLI -------------------------------------------------------------------------------

def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockproc", *args], cwd=cwd, check=False,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ,
                               "PYTHONPATH": str(Path(__file__).parents[2])})


def test_cli_prints_the_combined_value_as_json_and_counters_in_the_summary(
        src: str, tmp_path: Path) -> None:
    done = cli("run", src, "--map-blocks", "tests.jobs:word_counts", "--combine",
               "tests.jobs:merge_counts", "--initial", "{}", "--block-size", "4KiB",
               "--workers", "2", cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == EXPECTED  # stdout holds the answer alone
    assert f"counters: blocks={len(bp.plan(src, block_size=BLOCK_SIZE).blocks)}, " \
           f"lines={len(LINES):,}" in done.stderr


def test_cli_without_output_prints_one_json_line_per_result(src: str) -> None:
    done = cli("run", src, "--map", "tests.jobs:drop_empty", "--block-size", "4KiB", "-q",
               cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == LINES
    assert done.stderr == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--cmd", "cat"], "--cmd writes its stdout as part-files, which need -o OUT"),
    (["--map", "tests.jobs:upper", "--combine", "tests.jobs:merge_counts"],
     "--combine folds what --map-blocks returns per block"),
    (["--map-blocks", "tests.jobs:word_counts", "--combine", "tests.jobs:merge_counts",
      "--initial", "{nope"], "--initial '{nope' is not JSON"),
    (["--map-blocks", "tests.jobs:word_counts", "--initial", "0"],
     "--initial is the start of a --combine fold"),
    (["--map-blocks", "tests.jobs:word_counts", "--output-format", "csv"],
     "output_format='csv' writes part-files, which need output="),
    (["--map-blocks", "tests.jobs:word_counts", "--resume"],
     "if_exists='resume' is about an output directory, and this job has none"),
])
def test_cli_refuses_a_fold_or_print_misuse_in_one_line(src: str, args: list[str],
                                                         message: str) -> None:
    done = cli("run", src, *args, cwd=Path(__file__).parents[2])
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_command_counts_with_hadoop_streaming_counter_lines(src: str,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = ("awk '/^PUT/ {n++} {print} END {print \"reporter:counter:http,puts,\" n+0 "
              "> \"/dev/stderr\"; print \"a real warning\" > \"/dev/stderr\"}'")
    result = bp.map_command(script, src, output=str(out), block_size=BLOCK_SIZE, workers=2)
    assert result.counters == {"http.puts": EXPECTED["PUT"]}
    logs = sorted((out / "_logs").glob("*.stderr"))
    assert len(logs) == len(result.blocks)  # the counter lines are counted, not logged
    assert all(p.read_text() == "a real warning\n" for p in logs)


def test_the_callers_initial_is_never_changed(src: str) -> None:
    initial: dict[str, int] = {}
    first = bp.reduce_blocks(jobs.word_counts, jobs.merge_counts, src, initial=initial,
                             block_size=BLOCK_SIZE, executor="threads")
    second = bp.reduce_blocks(jobs.word_counts, jobs.merge_counts, src, initial=initial,
                              block_size=BLOCK_SIZE, executor="threads")
    assert initial == {}
    assert first.value == second.value == EXPECTED  # not doubled by a shared accumulator


def test_resuming_values_with_another_output_format_is_refused(src: str,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    bp.reduce_blocks(jobs.word_counts, jobs.merge_counts, src, output=str(out),
                     block_size=BLOCK_SIZE, executor="threads")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(bp.ConfigError, match=r"it holds part-files such as "
                       r"part-\d{5}\.pickle, and this job writes \.txt files"):
        bp.map_lines(str.upper, src, output=str(out), block_size=BLOCK_SIZE,
                     executor="threads", if_exists="resume")
    assert sorted(p.name for p in out.iterdir()) == before
    assert bp.output.status(str(out)).lock_holder is None  # the lock was released


def test_the_summary_of_a_job_without_output_says_where_its_values_went(src: str) -> None:
    result = bp.map_blocks(len, src, block_size=BLOCK_SIZE, executor="inline")
    assert repr(result).endswith(f"{len(result.blocks)} values back, "
                                 f"{result.seconds:.2f}s>")
    assert "output=" not in repr(result)


def test_counting_gives_a_unit_test_a_fresh_tally() -> None:
    with bp.testing.counting() as counts:
        bp.counter("seen").add(2)
    with bp.testing.counting() as again:
        bp.counter("seen").add()
    assert counts == {"seen": 2} and again == {"seen": 1}
