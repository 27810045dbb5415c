"""blockproc: split huge files on shared storage into record-aligned blocks and map a
function or a command over them in parallel, with exactly-once part-files.

>>> import blockproc as bp
>>> bp.testing.write_files("memory://doc/init", {"a.log": b"hello\\nworld\\n"})
['memory://doc/init/a.log']
>>> bp.map_lines(str.upper, "memory://doc/init", output="memory://doc/init-out",
...              executor="inline").num_records_out
2
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any

from blockproc.errors import (
    AccessError,
    BlockFailedError,
    BlockprocError,
    CommandError,
    CommandNotFoundError,
    ConfigError,
    InputChangedError,
    InputError,
    JobCancelledError,
    JobError,
    LockLostError,
    NoInputFilesError,
    OutputExistsError,
    OutputLockedError,
    RecordTooLargeError,
    ReturnTypeError,
    StorageError,
    TextDecodeError,
    TooManyBadRecordsError,
    UnfinishedOutputError,
    ValueTooLargeError,
)

if TYPE_CHECKING:
    from blockproc import formats, output_formats, testing
    from blockproc.api import (
        DEFAULT_BLOCK_SIZE,
        map_batches,
        map_blocks,
        map_command,
        map_lines,
        plan,
        reduce_blocks,
        submit,
    )
    from blockproc.counters import counter
    from blockproc.job import Job
    from blockproc.model import Block, BlockResult, Plan
    from blockproc.result import JobResult
    from blockproc.worker import Batch

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "AccessError",
    "Batch",
    "Block",
    "BlockFailedError",
    "BlockResult",
    "BlockprocError",
    "CommandError",
    "CommandNotFoundError",
    "ConfigError",
    "InputChangedError",
    "InputError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobResult",
    "LockLostError",
    "NoInputFilesError",
    "OutputExistsError",
    "OutputLockedError",
    "Plan",
    "RecordTooLargeError",
    "ReturnTypeError",
    "StorageError",
    "TextDecodeError",
    "TooManyBadRecordsError",
    "UnfinishedOutputError",
    "ValueTooLargeError",
    "counter",
    "formats",
    "map_batches",
    "map_blocks",
    "map_command",
    "map_lines",
    "output_formats",
    "plan",
    "reduce_blocks",
    "submit",
    "testing",
]

_LAZY = {
    "DEFAULT_BLOCK_SIZE": "blockproc.api", "map_batches": "blockproc.api",
    "map_blocks": "blockproc.api",
    "map_command": "blockproc.api", "map_lines": "blockproc.api", "plan": "blockproc.api",
    "submit": "blockproc.api",
    "Job": "blockproc.job", "Block": "blockproc.model", "BlockResult": "blockproc.model",
    "Plan": "blockproc.model", "JobResult": "blockproc.result", "Batch": "blockproc.worker",
    "formats": "blockproc.formats", "output_formats": "blockproc.output_formats",
    "testing": "blockproc.testing", "reduce_blocks": "blockproc.api",
    "counter": "blockproc.counters",
}
"""Where each public name lives. The API, the engine and fsspec load on first use, so
``import blockproc`` stays cheap (a CLI call, a worker process, a notebook's import)."""


def _public(name: str, value: Any) -> Any:
    """Report ``value`` as ``blockproc.<name>`` (reprs, pickles, docs show the public path)."""
    if (isinstance(value, type) or callable(value)) and not hasattr(value, "__path__"):
        with contextlib.suppress(AttributeError, TypeError):
            value.__module__ = "blockproc"
    return value


def __getattr__(name: str) -> Any:
    """Load a public name of the package on first use (PEP 562)."""
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module 'blockproc' has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"blockproc.{name}" else getattr(module, name)
    globals()[name] = _public(name, value)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


for _name in __all__:
    if _name not in _LAZY:
        _public(_name, globals()[_name])
del _name
