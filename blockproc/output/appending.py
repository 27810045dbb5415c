"""An output that grows with its inputs: the directory side of ``if_exists="append"``.

An append run processes only what is new (planned by :mod:`blockproc.incremental`) and
merges its blocks into the manifest of the earlier runs. Readers trust ``_SUCCESS``
alone, so the run keeps the output consistent for them at every step::

    1. under the lock: _SUCCESS is copied to _blockproc/previous.json, then removed
       (readers now see an unfinished output, never a half-merged one)
    2. the new blocks are committed as part-files numbered after the earlier runs' parts
    3. the parts the run supersedes (the last block of a file whose last line was still
       being written) are removed, then the merged _SUCCESS is written, last

A run stopped anywhere is finished by ``if_exists="append"`` (or ``"resume"``) again:
``previous.json`` without ``_SUCCESS`` says an append was under way. If the inputs are
still as that run planned, its committed blocks are kept; if they grew further, its
parts are removed and the new bytes planned again against ``previous.json``.

Examples
--------
>>> from blockproc.storage import filesystem
>>> fs = filesystem("memory")
>>> read_previous(fs, "/doc/appending/none")
(None, False)
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from blockproc._types import IfExists
from blockproc.errors import OutputExistsError
from blockproc.model import BlockResult, Plan, sum_counters
from blockproc.output.checks import check_not_input, refuse_foreign
from blockproc.output.directory import OutputDir
from blockproc.output.layout import (
    ATTEMPTS,
    ERRORS_DIR,
    LEDGER,
    LOGS_DIR,
    PLAN,
    STATE_DIR,
    SUCCESS,
    TEMPORARY,
    kept_path,
    part_name,
)
from blockproc.output.ledger import read_ledger
from blockproc.output.manifest import (
    Manifest,
    build_manifest,
    read_manifest,
    write_manifest,
)
from blockproc.storage import (
    AbstractFileSystem,
    read_json,
    remove_tree,
    retry_call,
    write_bytes_atomic,
)

PREVIOUS = "previous.json"
"""``_blockproc/previous.json``: the manifest an append run extends, kept while it runs."""


def read_previous(fs: AbstractFileSystem, path: str) -> tuple[dict[str, Any] | None, bool]:
    """Return the manifest an append into ``path`` extends and whether an append run was
    interrupted there: the ``_SUCCESS`` of a finished job, else the ``previous.json`` an
    unfinished append run kept, else ``(None, False)``."""
    root = path.rstrip("/") or "/"
    success = posixpath.join(root, SUCCESS)
    if retry_call(lambda: fs.exists(success), f"to look for {success!r}"):
        return read_manifest(fs, root), False
    kept = posixpath.join(root, STATE_DIR, PREVIOUS)
    if retry_call(lambda: fs.exists(kept), f"to look for {kept!r}"):
        return dict(read_json(fs, kept)), True
    return None, False


def append_in_progress(fs: AbstractFileSystem, path: str) -> bool:
    """True if an append run into ``path`` stopped before its ``_SUCCESS`` (two stats).

    >>> from blockproc.storage import filesystem
    >>> append_in_progress(filesystem("memory"), "/doc/appending/none")
    False
    """
    root = path.rstrip("/") or "/"
    success, kept = posixpath.join(root, SUCCESS), posixpath.join(root, STATE_DIR, PREVIOUS)
    return not retry_call(lambda: fs.exists(success), f"to look for {success!r}") and \
        bool(retry_call(lambda: fs.exists(kept), f"to look for {kept!r}"))


def part_index(part: str) -> int:
    """Return the number of a part-file name.

    >>> part_index("part-00042.csv")
    42
    """
    return int(posixpath.basename(part).split(".")[0].split("-")[1])


@dataclasses.dataclass(frozen=True, slots=True)
class AppendRun:
    """What an append run does to the output, as planned: the manifest it extends, the
    full plan of the inputs now, the parts it supersedes and the first new part's number."""

    previous: Mapping[str, Any]
    full_plan: Plan
    superseded: tuple[str, ...]
    base: int
    touched: tuple[Mapping[str, Any], ...]
    """The files this run reads: ``path``, ``from`` (bytes processed before) and ``to``."""


class AppendingOutputDir(OutputDir):
    """An :class:`OutputDir` whose ``prepare`` and ``finish`` extend the earlier runs'
    output instead of replacing it (see the module's docstring for the steps)."""

    def __init__(self, fs: AbstractFileSystem, path: str, job_id: str, run: AppendRun) -> None:
        super().__init__(fs, path, job_id)
        self.run = run

    def prepare(self, plan: Plan, if_exists: IfExists,
                inputs: Sequence[str]) -> dict[int, BlockResult]:
        """Take the lock, hide the previous ``_SUCCESS`` (kept as ``previous.json``) and
        return the blocks an interrupted append run of this same plan committed."""
        check_not_input(self.path, self.url, inputs)
        with self._storage("to open the output", setup=True):
            refuse_foreign(self.url, self._entries(), "resume")
            self.lock.acquire()
        with self._storage("to prepare the output"):
            committed = self._begin(plan)
            self.lock.guard()
            self.write_state(plan)
        return committed

    def _begin(self, plan: Plan) -> dict[int, BlockResult]:
        success, kept = self._join(SUCCESS), self._join(STATE_DIR, PREVIOUS)
        interrupted = not self._call(lambda: self.fs.exists(success), "to look")
        source = kept if interrupted else success
        try:
            data = self._call(lambda: self.fs.cat_file(source), f"to read {source!r}")
        except FileNotFoundError:
            data = b"{}"
        header = Manifest(data)  # its header only: the rows were read when planning
        planned = self.run.previous
        if header.get("job_id") != planned.get("job_id") or \
                header.get("finished") != planned.get("finished"):
            raise OutputExistsError(
                f"output {self.url!r} changed while this append run was planned (another "
                f"job wrote it); run the same command again to append to what it holds now")
        if not interrupted:
            self.lock.guard()
            write_bytes_atomic(self.fs, self._join(STATE_DIR, PREVIOUS), data)
            self._clear_state()  # the earlier job's ledger: its manifest says it all
            self.lock.guard()
            self._remove(success)  # readers now see an unfinished output
            return {}
        state = self._join(STATE_DIR, PLAN)
        if self._call(lambda: self.fs.exists(state), "to look") and \
                read_json(self.fs, state).get("plan", {}).get("fingerprint") == plan.fingerprint:
            return self._load_committed(plan)  # the same delta: keep what it committed
        # the inputs grew further: remove what the interrupted run committed (never a part
        # the earlier runs' manifest lists) and plan the new bytes again
        live = {str(b["part"]) for b in planned["blocks"]}
        for entry in read_ledger(self.fs, self.path).values():
            part = str(entry["part"])
            if part not in live and part_index(part) >= self.run.base:
                self.lock.guard()
                self._remove_part(part)
        self._clear_state()
        return {}

    def _clear_state(self) -> None:
        """Remove the ledger, the attempts and the staging of the run(s) before."""
        for name in (posixpath.join(STATE_DIR, LEDGER), posixpath.join(STATE_DIR, ATTEMPTS),
                     TEMPORARY):
            target = self._join(name)
            if self._call(lambda t=target: self.fs.exists(t), "to look"):
                self.lock.guard()
                self._remove(target)

    def _remove_part(self, part: str) -> None:
        """Remove a part-file and what was kept with it (``_errors/``, ``_logs/``)."""
        for target in (self._join(part), kept_path(self.path, ERRORS_DIR, part, ".jsonl"),
                       kept_path(self.path, LOGS_DIR, part, ".stderr")):
            with contextlib.suppress(FileNotFoundError):
                self._call(lambda t=target: self.fs.rm_file(t), f"to remove {target!r}")

    def finish(self, plan: Plan, results: Sequence[BlockResult], job: Mapping[str, Any]) -> None:
        """Remove the superseded parts, then write the merged ``_SUCCESS``: every live block
        of all runs (this run's numbered after the earlier parts) and the ``runs``."""
        run = self.run
        superseded = set(run.superseded)
        kept = [e for e in run.previous["blocks"] if e["part"] not in superseded]
        new = [dataclasses.replace(r, block=dataclasses.replace(r.block, id=run.base + r.block.id))
               for r in results]
        manifest = build_manifest(self.job_id, run.full_plan, new, job)
        # the earlier blocks stay the dicts they were read as (a million of them take
        # seconds to turn into results and back): their totals are added from the dicts
        manifest["totals"] = merged_totals(manifest["totals"], kept)
        manifest["attempt_totals"]["committed_attempts"] += sum(
            int(e.get("attempt", 1)) for e in kept)
        manifest["blocks"] = [*kept, *new]
        manifest["runs"] = [*runs_of(run.previous), {
            "job_id": self.job_id, "finished": manifest["finished"],
            "first_part": part_name(run.base, "") if results else None,
            "num_blocks": len(results), "superseded": sorted(superseded),
            "inputs": list(run.touched)}]
        with self._storage("to write _SUCCESS"):
            self.lock.renew()  # a fresh check right before the writes readers trust
            remove_tree(self.fs, self._join(TEMPORARY))
            for part in sorted(superseded):
                self.lock.guard()
                self._remove_part(part)
            write_manifest(self.fs, self._join(SUCCESS), manifest)
        with contextlib.suppress(Exception):  # stale once _SUCCESS exists: never read then
            self.fs.rm_file(self._join(STATE_DIR, PREVIOUS))


def merged_totals(totals: Mapping[str, Any],
                  entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return a manifest's ``totals`` with those of more block entries (dicts) added.

    Examples
    --------
    >>> merged_totals({"num_blocks": 1, "records_in": 2, "blocks_with_stderr": 0},
    ...               [{"records_in": 3, "stderr_bytes": 5, "counters": {"x": 1}}])
    {'num_blocks': 2, 'records_in': 5, 'blocks_with_stderr': 1, 'counters': {'x': 1}}
    """
    merged = dict(totals)
    merged["num_blocks"] = int(totals.get("num_blocks", 0)) + len(entries)
    for key in ("records_in", "records_out", "bytes_read", "bytes_written", "bad_records"):
        if key in merged:
            merged[key] = int(merged[key]) + sum(int(e.get(key, 0)) for e in entries)
    merged["blocks_with_stderr"] = int(totals.get("blocks_with_stderr", 0)) + sum(
        1 for e in entries if e.get("stderr_bytes"))
    counters = sum_counters([totals.get("counters", {}),
                             *(e["counters"] for e in entries if e.get("counters"))])
    if counters:
        merged["counters"] = counters
    return merged


def runs_of(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return the ``runs`` of a manifest: its own list, or for the manifest of a plain
    job, that job as the first run.

    Examples
    --------
    >>> runs_of({"job_id": "j1", "finished": "2026-01-01T00:00:00Z",
    ...          "blocks": [{"part": "part-00000.txt"}], "inputs": [{"size": 5}]})
    [{'job_id': 'j1', 'finished': '2026-01-01T00:00:00Z', 'first_part': 'part-00000', \
'num_blocks': 1, 'superseded': [], 'inputs': 1, 'bytes': 5}]
    """
    if manifest.get("runs"):
        return [dict(r) for r in manifest["runs"]]
    blocks = manifest.get("blocks") or []
    inputs = manifest.get("inputs") or []
    return [{"job_id": manifest.get("job_id"), "finished": manifest.get("finished"),
             "first_part": part_name(0, "") if blocks else None, "num_blocks": len(blocks),
             "superseded": [], "inputs": len(inputs),
             "bytes": sum(int(f.get("size", 0)) for f in inputs)}]
