"""One job per output, raced for real: contenders behind a barrier, hundreds of trials.

Every trial must admit exactly one job, every loser must get the one-line "being written
by" (or, once the winner finished, "already exists") refusal, and the finished output
must verify against its manifest with every line written by the admitted job alone.
The loops are bounded by a trial count and a time budget (not timed assertions): a
slow machine runs fewer trials, never a weaker check.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
from blockproc.output import read_manifest, verify_output
from blockproc.storage import filesystem
from blockproc.testing import read_parts, write_files
from tests import lock_race

LINES = [f"{i:05d} {'x' * (i % 17)}" for i in range(300)]
DATA = ("\n".join(LINES) + "\n").encode()
BLOCK_SIZE = 1024

#: (contenders, mode, trials, seconds): at most this many trials, stopped early past the
#: time budget (measured from one job on this machine, so a slow machine runs fewer)
RACES = [(2, "error", 200, 15.0), (2, "resume", 150, 15.0), (2, "overwrite", 100, 10.0),
         (4, "error", 80, 10.0), (4, "resume", 60, 10.0), (8, "error", 40, 10.0)]
MODES = ["error", "overwrite", "resume"]


def check_trials(results: list[tuple[Any, ...]], contenders: int) -> dict[str, int]:
    """Assert one admission per trial and only lock/exists refusals; return the counts."""
    by_trial: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for row in results:
        by_trial[row[0]].append(row)
    outcomes: Counter[str] = Counter()
    for trial, rows in sorted(by_trial.items()):
        assert len(rows) == contenders, f"trial {trial}: {rows}"
        admitted = [r for r in rows if r[2] == "admitted"]
        assert len(admitted) == 1, f"trial {trial}: {len(admitted)} jobs admitted: {rows}"
        for row in rows:
            outcomes[row[2]] += 1
    assert set(outcomes) <= {"admitted", "OutputLockedError", "OutputExistsError",
                             "UnfinishedOutputError"}, outcomes
    return dict(outcomes)


def check_output(out: str, job_id: str) -> None:
    """The output verifies and holds only the admitted job's lines, each once."""
    fs = filesystem("memory" if out.startswith("memory://") else "file")
    path = out.removeprefix("memory://")
    manifest = read_manifest(fs, path)
    assert manifest["job_id"] == job_id
    assert verify_output(fs, path, manifest) == []
    lines = read_parts(out).decode().splitlines()
    tags = {line.rpartition("\t")[2] for line in lines}
    assert len(tags) == 1, f"{out} mixes the output of {sorted(tags)}"
    assert [line.rpartition("\t")[0] for line in lines] == LINES


@pytest.mark.slow
@pytest.mark.parametrize(("contenders", "mode", "trials", "budget"), RACES)
def test_processes_racing_for_one_output_admit_exactly_one(
        tmp_path: Path, contenders: int, mode: str, trials: int, budget: float) -> None:
    src = tmp_path / "in.log"
    src.write_bytes(DATA)
    template = None
    if mode == "resume":
        template = tmp_path / "template"
        bp.map_lines(lock_race.tagged, str(src), output=str(template), executor="inline",
                     block_size=BLOCK_SIZE)
    trials = _trials_within(budget, trials, contenders)
    for trial in range(trials):
        lock_race.prepare_trial(tmp_path, trial, mode, template)
    ctx = multiprocessing.get_context("spawn")
    start, tried, results = ctx.Barrier(contenders), ctx.Barrier(contenders), ctx.Queue()
    procs = [ctx.Process(target=lock_race.contend,
                         args=(n, trials, str(src), str(tmp_path), mode, BLOCK_SIZE,
                               start, tried, results))
             for n in range(contenders)]
    for proc in procs:
        proc.start()
    rows = [results.get(timeout=120) for _ in range(trials * contenders)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    outcomes = check_trials(rows, contenders)
    print(f"{contenders} processes, mode={mode}: {trials} trials, outcomes {outcomes}")
    for trial, _, outcome, job_id in rows:
        if outcome == "admitted":
            check_output(str(tmp_path / f"out-{trial:04d}"), job_id)


def _trials_within(budget: float, trials: int, contenders: int) -> int:
    """Trials that fit the budget, from the cost of one job on this machine (at least 10)."""
    root = f"memory://lock-race-probe-{time.time_ns()}"
    write_files(root, {"in.log": DATA})
    started = time.perf_counter()
    bp.map_lines(str.upper, f"{root}/in.log", output=f"{root}/out", executor="inline",
                 block_size=BLOCK_SIZE)
    per_trial = (time.perf_counter() - started) * (1 + contenders / 2) + 0.005
    return max(10, min(trials, int(budget / per_trial)))


@pytest.mark.parametrize("mode", MODES)
def test_threads_racing_on_the_memory_filesystem_admit_exactly_one(mode: str) -> None:
    root = f"memory://lock-race-{mode}-{time.time_ns()}"
    write_files(root, {"in.log": DATA})
    src = f"{root}/in.log"
    template = f"{root}/template"
    if mode == "resume":
        bp.map_lines(str, src, output=template, executor="inline", block_size=BLOCK_SIZE)
    fs = filesystem("memory")

    def prepare(trial: int) -> None:
        if mode == "resume":
            out = f"{root}/out-{trial:04d}".removeprefix("memory://")
            fs.cp(template.removeprefix("memory://"), out, recursive=True)
            fs.rm(f"{out}/_SUCCESS")
            fs.rm(f"{out}/_blockproc/committed", recursive=True)

    rows = lock_race.contend_threads(4, 40, src, root, mode, BLOCK_SIZE, prepare)
    outcomes = check_trials(rows, 4)
    assert outcomes["admitted"] == 40
    for trial, _, outcome, job_id in rows:
        if outcome == "admitted":
            check_output(f"{root}/out-{trial:04d}", job_id)
