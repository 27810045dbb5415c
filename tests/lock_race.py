"""Contenders for one output, for the lock race tests: each runs in its own process.

Every trial, all contenders pass a barrier together and submit the same job on the same
output. A contender that is admitted holds the lock inside its mapper until every
contender has tried (the ``tried`` barrier), so a second admission cannot hide behind a
first job that already finished. The mapper tags each line with the contender's number:
an output written by two jobs fails verification.
"""

from __future__ import annotations

import multiprocessing.synchronize
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blockproc as bp

_state: dict[str, Any] = {"tried": None, "tag": "", "waited": False}
"""This contender process's barrier, tag, and whether its current job has waited."""


def tagged(line: str) -> str:
    """Wait (once per job) until every contender has tried, then tag the line."""
    tried: multiprocessing.synchronize.Barrier | None = _state["tried"]
    if not _state["waited"] and tried is not None:
        _state["waited"] = True
        tried.wait(timeout=60)
    return f"{line}\t{_state['tag']}"


def prepare_trial(root: Path, trial: int, mode: str, template: Path | None) -> Path:
    """Make the output of ``trial``: absent for ``error`` and ``overwrite``, an unfinished
    copy of a finished job for ``resume`` (its manifest and ledger removed)."""
    out = root / f"out-{trial:04d}"
    if mode == "resume" and template is not None:
        shutil.copytree(template, out)
        (out / "_SUCCESS").unlink()
        shutil.rmtree(out / "_blockproc" / "committed")
    return out


def contend(number: int, trials: int, src: str, root: str, mode: str, block_size: int,
            start: Any, tried: Any, results: Any) -> None:
    """Run ``trials`` rounds: wait at ``start``, submit the job, report whether it was
    admitted as ``(trial, number, "admitted" | error class, job_id)``."""
    _state.update(tried=tried, tag=f"contender-{number}")
    for trial in range(trials):
        _state["waited"] = False
        out = Path(root) / f"out-{trial:04d}"
        start.wait(timeout=60)
        job_id = ""
        try:
            res = bp.map_lines(tagged, src, output=str(out), executor="inline",
                               block_size=block_size, if_exists=mode)  # type: ignore[arg-type]
            outcome, job_id = "admitted", res.job_id
        except bp.OutputExistsError as exc:
            outcome = type(exc).__name__
            if not _state["waited"]:
                tried.wait(timeout=60)
        except Exception as exc:  # reported, so the test names it
            outcome = f"{type(exc).__name__}: {exc}"
            if not _state["waited"]:
                tried.wait(timeout=60)
        results.put((trial, number, outcome, job_id))


def contend_threads(count: int, trials: int, src: str, root: str, mode: str,
                    block_size: int, prepare: Callable[[int], None]) -> list[tuple[Any, ...]]:
    """The same race among ``count`` threads of this process (for the memory filesystem,
    which lives in one process)."""
    import queue

    results: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    start = threading.Barrier(count, action=None)
    tried = threading.Barrier(count)
    local = threading.local()

    def tagged_here(line: str) -> str:
        if not getattr(local, "waited", False):
            local.waited = True
            tried.wait(timeout=60)
        return f"{line}\t{local.tag}"

    def run(number: int) -> None:
        local.tag = f"contender-{number}"
        for trial in range(trials):
            local.waited = False
            if number == 0:
                prepare(trial)
            start.wait(timeout=60)
            try:
                res = bp.map_lines(tagged_here, src, output=f"{root}/out-{trial:04d}",
                                   executor="inline", block_size=block_size,
                                   if_exists=mode)  # type: ignore[arg-type]
                outcome, job_id = "admitted", res.job_id
            except bp.OutputExistsError as exc:
                outcome, job_id = type(exc).__name__, ""
                if not local.waited:
                    tried.wait(timeout=60)
            results.put((trial, number, outcome, job_id))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return [results.get() for _ in range(results.qsize())]
