"""The output of a job that keeps nothing on storage: ``map_blocks`` or
``reduce_blocks`` without ``output=``, whose values go back to the master only.

It has :class:`~blockproc.output.OutputDir`'s methods, each doing nothing: no lock (no
other job can collide with one that writes nothing), no ledger, no ``_SUCCESS``. A job
killed mid-way starts over when run again; pass ``output=`` to make it resumable.

Examples
--------
>>> out = NoOutput("job-1")
>>> out.url, out.fs, out.staging_path(3, 1, "part-00003.pickle")
('', None, '')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from blockproc._frozen import FrozenSlots
from blockproc._types import IfExists
from blockproc.model import BlockResult, Plan


class _NoLock(FrozenSlots):
    _fields = ("renew_every",)
    __slots__ = _fields
    renew_every: float

    def __init__(self, renew_every: float = math.inf) -> None:
        object.__setattr__(self, "renew_every", renew_every)


class NoOutput:
    """The output of a job whose values only go back to the master."""

    fs: None = None
    url = ""
    lock = _NoLock()

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def staging_path(self, block_id: int, attempt: int, part: str) -> str:
        """No file is staged: the worker keeps the value in memory only."""
        return ""

    def prepare(self, plan: Plan, if_exists: IfExists,
                inputs: Sequence[str]) -> dict[int, BlockResult]:
        """Nothing is committed before the job starts: every block runs."""
        return {}

    def earlier_attempts(self) -> list[dict[str, Any]]:
        """No earlier run can be resumed."""
        return []

    def heartbeat(self) -> None:
        """No lock to renew."""

    def commit(self, result: BlockResult, staging_path: str) -> None:
        """Nothing to publish: the master keeps the value."""

    def flush(self) -> None:
        """No ledger to write."""

    def discard(self, staging_path: str) -> None:
        """Nothing was staged."""

    def save_attempts(self, records: Sequence[Mapping[str, Any]]) -> None:
        """The attempts are in the job's result only."""

    def cleanup(self, *, lost_lock: bool = False) -> None:
        """Nothing to clean up."""

    def finish(self, plan: Plan, results: Sequence[BlockResult],
               job: Mapping[str, Any]) -> None:
        """No ``_SUCCESS``: the job's result is the manifest."""

    def release(self) -> None:
        """No lock to release."""
