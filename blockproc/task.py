"""What one attempt of one block is: the :class:`BlockTask` the master sends, the
:class:`Mapper` that runs on it, and the :class:`AttemptHook` tests strike attempts with.
Small, frozen and picklable, so any executor can ship them to any process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from blockproc.formats import RecordFormat
from blockproc.formats.base import DEFAULT_MAX_RECORD_SIZE
from blockproc.model import Block, InputFile
from blockproc.output.layout import errors_path, stderr_path
from blockproc.output_formats import OutputFormat, TextOutput


@dataclass(frozen=True, slots=True)
class Mapper:
    """What runs on each block: a function per record, a function per block, or a command."""

    kind: Literal["record", "block", "command"]
    fn: Any
    output: OutputFormat = field(default_factory=TextOutput)
    """The part-file format (``output_format=``); text lines by default."""


HookPoint = Literal["start", "during_write", "after_write"]
"""Where :func:`run_block` fires a task's hook: before anything is written, after the
first write to the part-file, and once the part-file is complete (its success not yet
reported to the master)."""


class AttemptHook(Protocol):
    """What tests ship with every task to strike an attempt from inside (kill the
    process, raise, stall); picklable, so it travels with the task to any executor.

    Examples
    --------
    >>> class Trace:
    ...     def fire(self, point: HookPoint, task: BlockTask) -> None:
    ...         print(point, task.block.id)
    """

    def fire(self, point: HookPoint, task: BlockTask) -> None:
        """Called at each point of each attempt; may raise or end the process."""


@dataclass(frozen=True, slots=True)
class BlockTask:
    """Everything a worker needs for one attempt; small, frozen and picklable."""

    block: Block
    attempt: int
    num_blocks: int
    file: InputFile
    format: RecordFormat
    input_fs: Any
    output_fs: Any
    part: str
    staging_path: str
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE
    max_bad_records: int | None = None
    hook: AttemptHook | None = None
    """A test's fault plan (``JobOptions.hook``), fired at the :data:`HookPoint` s."""
    max_value_size: int = 64 * 2**20
    """The most bytes a block's value for the master may take, pickled."""
    growing: bool = False
    """The input may grow while the attempt reads it (an ``if_exists="append"`` run over
    logs still being written): the planned bytes are read, whatever follows them, instead
    of failing because the file's size and mtime/ETag are no longer those planned."""

    @property
    def errors_path(self) -> str:
        """Where the attempt logs the records it skipped (``max_bad_records``)."""
        return errors_path(self.staging_path)

    @property
    def stderr_path(self) -> str:
        """Where the attempt stages what a ``--cmd`` wrote to stderr (if anything); it is
        published as ``_logs/part-NNNNN.stderr`` with the committed attempt."""
        return stderr_path(self.staging_path)

    @property
    def key(self) -> tuple[int, int]:
        """``(block id, attempt number)``."""
        return (self.block.id, self.attempt)

    def describe(self) -> str:
        """Return ``block 3 of 8 (path [start, end))``."""
        b = self.block
        return f"block {b.id} of {self.num_blocks} ({b.path} [{b.start}, {b.end}))"
