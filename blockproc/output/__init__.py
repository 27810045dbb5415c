"""The output directory of a job, in one package (Hadoop-compatible)::

    out/part-00042.txt     one part-file per block, named by block id
    out/_SUCCESS           written last: the JSON manifest; trust the directory only then
    out/_blockproc/        job state: plan, ledger of committed blocks, attempts, lock
    out/_temporary/        attempts in flight; removed before _SUCCESS is written

One module per concern: :mod:`~blockproc.output.layout` (names),
:mod:`~blockproc.output.lock` (one job per output), :mod:`~blockproc.output.ledger`
(committed blocks, attempts of each run), :mod:`~blockproc.output.manifest`
(``_SUCCESS``), :mod:`~blockproc.output.checks` (what is refused before any write),
:mod:`~blockproc.output.directory` (:class:`OutputDir`, the commit protocol that puts
them in order), :mod:`~blockproc.output.nowhere` (:class:`NoOutput`, for a job whose
values only go back to the master) and :mod:`~blockproc.output.status` (:func:`status`
and :func:`verify`, what ``blockproc status`` prints).

Examples
--------
>>> part_name(7, ".csv")
'part-00007.csv'
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from blockproc._registry import lazy_attribute
from blockproc.output.directory import OutputDir
from blockproc.output.layout import (
    BLOCKPROC_ENTRY,
    STATE_DIR,
    SUCCESS,
    TEMPORARY,
    errors_path,
    part_name,
    stderr_path,
)
from blockproc.output.ledger import read_ledger
from blockproc.output.lock import OutputLock
from blockproc.output.manifest import dumps_rows, read_manifest, verify_output
from blockproc.output.nowhere import NoOutput

if TYPE_CHECKING:
    from blockproc.output.status import OutputStatus, status, verify

_LAZY = {"OutputStatus": "status", "status": "status", "verify": "status"}
"""What a job never uses, loaded on first use (PEP 562): what ``blockproc status``
prints."""

__all__ = [
    "BLOCKPROC_ENTRY", "STATE_DIR", "SUCCESS", "TEMPORARY", "NoOutput", "OutputDir", "OutputLock",
    "OutputStatus", "dumps_rows", "errors_path", "part_name", "read_ledger", "read_manifest",
    "status", "stderr_path", "verify", "verify_output",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _LAZY, name)


class _Package(types.ModuleType):
    """This package, where ``status`` stays the function whenever the submodule of that
    name loads (an import sets the package's attribute to the submodule), as when the
    function was imported eagerly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "status" and isinstance(value, types.ModuleType):
            value = value.status
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
