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

from blockproc import formats, output_formats, testing
from blockproc.api import DEFAULT_BLOCK_SIZE, map_blocks, map_command, map_lines, plan, submit
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
)
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
    "formats",
    "map_blocks",
    "map_command",
    "map_lines",
    "output_formats",
    "plan",
    "submit",
    "testing",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = "blockproc"
del _name, _obj, contextlib
