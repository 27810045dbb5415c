"""The names of an output directory: where each file of a job lives.

::

    out/part-00042.txt                   one part-file per block, named by block id
    out/_SUCCESS                         written last: the JSON manifest
    out/_blockproc/plan.json             the plan of the job, for resume
    out/_blockproc/committed/            the ledger of committed blocks
    out/_blockproc/attempts/<job>.json   the attempts of each run that ended
    out/_blockproc/lock/                 the lock (see :mod:`blockproc.output.lock`)
    out/_temporary/<job>/                attempts in flight; removed at job commit
    out/_errors/part-00042.jsonl         records skipped by ``max_bad_records``
    out/_logs/part-00042.stderr          what a ``--cmd`` wrote to stderr

Pure names only: nothing here touches storage.
"""

from __future__ import annotations

import posixpath
import re

SUCCESS = "_SUCCESS"
STATE_DIR = "_blockproc"
TEMPORARY = "_temporary"
ERRORS_DIR = "_errors"
LOGS_DIR = "_logs"
LEDGER = "committed"
ATTEMPTS = "attempts"
"""``_blockproc/attempts/<job>.json``: the attempts of each run that ended, for the
manifest of a resumed job (a run whose master was killed leaves none)."""
PLAN = "plan.json"
"""``_blockproc/plan.json``: the job id and plan of the run that last prepared the output."""
BLOCKPROC_ENTRY = re.compile(r"^(part-\d{5,}(\..*)?|_SUCCESS|_blockproc|_temporary|_errors|_logs"
                             r"|\.part-\d{5,}.*\.tmp|\._SUCCESS\..*\.tmp)$")
"""Names blockproc writes at the top of an output directory; ``overwrite`` removes only
these, and refuses a directory holding anything else.

>>> bool(BLOCKPROC_ENTRY.match("part-00042.csv")), bool(BLOCKPROC_ENTRY.match("notes.txt"))
(True, False)
"""


def part_name(block_id: int, extension: str = ".txt") -> str:
    """Return the part-file name of a block.

    Examples
    --------
    >>> part_name(42)
    'part-00042.txt'
    """
    return f"part-{block_id:05d}{extension}"


def staging_path(root: str, job_id: str, part: str, attempt: int) -> str:
    """Where attempt ``attempt`` of a block writes its part-file: one flat file per attempt
    under the job's staging directory (no directory to make and remove per block).

    Examples
    --------
    >>> staging_path("out", "j", "part-00042.txt", 2)
    'out/_temporary/j/part-00042.txt.attempt-2'
    """
    return posixpath.join(root, TEMPORARY, job_id, f"{part}.attempt-{attempt}")


def stderr_path(staging_path: str) -> str:
    """Where an attempt stages what its command wrote to stderr: next to its part-file.

    Examples
    --------
    >>> stderr_path("out/_temporary/j/part-00042.txt.attempt-1")
    'out/_temporary/j/part-00042.txt.attempt-1.stderr'
    """
    return f"{staging_path}.stderr"


def errors_path(staging_path: str) -> str:
    """Where an attempt logs the records it skipped (``max_bad_records``).

    Examples
    --------
    >>> errors_path("out/_temporary/j/part-00042.txt.attempt-1")
    'out/_temporary/j/part-00042.txt.attempt-1.errors.jsonl'
    """
    return f"{staging_path}.errors.jsonl"


def kept_path(root: str, folder: str, part: str, suffix: str) -> str:
    """Where a committed block's side file is kept: ``_errors/`` or ``_logs/``, named by
    its part-file's stem.

    Examples
    --------
    >>> kept_path("out", ERRORS_DIR, "part-00042.csv", ".jsonl")
    'out/_errors/part-00042.jsonl'
    """
    return posixpath.join(root, folder, posixpath.splitext(part)[0] + suffix)


def names(entries: list[str]) -> list[str]:
    """Return the base names of listed entries (a trailing ``/`` ignored).

    Examples
    --------
    >>> names(["out/_blockproc/", "out/part-00000.txt"])
    ['_blockproc', 'part-00000.txt']
    """
    return [posixpath.basename(e.rstrip("/")) for e in entries]
