"""What one attempt of one block is: the :class:`BlockTask` the master sends, the
:class:`Mapper` that runs on it, and the :class:`AttemptHook` tests strike attempts with.
Small, frozen and picklable, so any executor can ship them to any process."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from blockproc._frozen import FrozenSlots, field_names
from blockproc.formats import RecordFormat
from blockproc.formats.base import DEFAULT_MAX_RECORD_SIZE
from blockproc.model import Block, InputFile
from blockproc.output.layout import errors_path, stderr_path
from blockproc.output_formats import OutputFormat, TextOutput


class Mapper(FrozenSlots):
    """What runs on each block: a function per record, a function per block, or a command.

    ``output`` is the part-file format (``output_format=``); text lines by default.
    """

    _fields = ("kind", "fn", "output")
    __slots__ = _fields
    kind: Literal["record", "block", "command"]
    fn: Any
    output: OutputFormat

    def __init__(self, kind: Literal["record", "block", "command"], fn: Any,
                 output: OutputFormat | None = None) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "output", TextOutput() if output is None else output)


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


class BlockTask(FrozenSlots):
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
    max_record_size: int
    max_bad_records: int | None
    hook: AttemptHook | None
    """A test's fault plan (``JobOptions.hook``), fired at the :data:`HookPoint` s."""
    max_value_size: int
    """The most bytes a block's value for the master may take, pickled."""
    growing: bool
    """The input may grow while the attempt reads it (an ``if_exists="append"`` run over
    logs still being written): the planned bytes are read, whatever follows them, instead
    of failing because the file's size and mtime/ETag are no longer those planned."""
    _fields = ("block", "attempt", "num_blocks", "file", "format", "input_fs", "output_fs",
               "part", "staging_path", "max_record_size", "max_bad_records", "hook",
               "max_value_size", "growing")
    __slots__ = _fields

    def __init__(self, block: Block, attempt: int, num_blocks: int,
                 file: InputFile, format: RecordFormat, input_fs: Any, output_fs: Any,
                 part: str, staging_path: str,
                 max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
                 max_bad_records: int | None = None, hook: AttemptHook | None = None,
                 max_value_size: int = 64 * 2**20, growing: bool = False) -> None:
        self._init(block, attempt, num_blocks, file, format, input_fs, output_fs, part,
                   staging_path, max_record_size, max_bad_records, hook, max_value_size,
                   growing)

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

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the fields' values, the block's flattened in (a task crosses to a
        worker for every attempt; the dataclass default looks each class's fields up for
        every object). Objects the tasks share, such as the file and the filesystems,
        are pickled once per message, as usual.

        Examples
        --------
        >>> import pickle
        >>> from blockproc.formats import Lines
        >>> task = BlockTask(Block(3, "a.log", 0, 5), 1, 8, InputFile("a.log", 9),
        ...                  Lines(), None, None, "part-00003.txt", "s/part-00003.txt.1")
        >>> pickle.loads(pickle.dumps(task)) == task
        True
        """
        block = self.block
        return (_rebuild_task, (*[getattr(block, name) for name in _BLOCK_FIELDS],
                                *[getattr(self, name) for name in _TASK_FIELDS]))


_BLOCK_FIELDS = field_names(Block)
_TASK_FIELDS = field_names(BlockTask)[1:]  # after the block


def _rebuild_task(*values: Any) -> BlockTask:
    """The task :meth:`BlockTask.__reduce__` took apart."""
    cut = len(_BLOCK_FIELDS)
    return BlockTask(Block(*values[:cut]), *values[cut:])
