"""The public functions: :func:`plan`, :func:`submit`, :func:`map_lines`,
:func:`map_blocks`, :func:`reduce_blocks` and :func:`map_command`. They check their
arguments, normalise them once, and hand canonical values to the planner and the job."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from blockproc._types import IfExists, InputsLike, SizeLike, URLLike
from blockproc._units import format_size
from blockproc.errors import ConfigError
from blockproc.formats import RecordFormat, get_format
from blockproc.formats.base import DEFAULT_MAX_RECORD_SIZE
from blockproc.job import Job, run_job, start_job
from blockproc.job_setup import ensure_positive_size, make_job, user_stacklevel
from blockproc.model import Plan
from blockproc.output_formats import OutputFormat
from blockproc.planning import make_plan
from blockproc.result import JobResult
from blockproc.values import NOTHING
from blockproc.worker import Batch, BatchFunction

DEFAULT_BLOCK_SIZE = 64 * 2**20
"""64 MiB: large enough to amortise start-up, small enough to balance load."""

READ_AMPLIFICATION = 4
"""A job of at least 1 MiB whose blocks read more than this many times its input (records
far longer than the block size: each block scans on to the end of its record) is warned
about once it finishes."""


def _ensure_urls(urlpath: InputsLike) -> list[str]:
    if isinstance(urlpath, (str, os.PathLike)):
        return [os.fspath(urlpath)]
    if isinstance(urlpath, Sequence):
        urls = [os.fspath(u) for u in urlpath]
        if not urls:
            raise ConfigError("no input given; pass a path, a glob, a directory or a list of them")
        return urls
    raise TypeError(f"inputs must be a path, a URL or a list of them, got {urlpath!r}")


def plan(
    urlpath: InputsLike,
    *,
    block_size: SizeLike = DEFAULT_BLOCK_SIZE,
    format: str | RecordFormat = "lines",
    storage_options: Mapping[str, Any] | None = None,
) -> Plan:
    """List the inputs and cut them into blocks, without running anything.

    Parameters
    ----------
    urlpath : str, PathLike or list of them
        Files, globs (``"data/*.log"``) or directories (read recursively; names starting
        with ``_`` or ``.`` are skipped, and so are subdirectories that are blockproc
        outputs: ``Plan.skipped`` lists them), on any fsspec filesystem. FIFOs, devices
        and sockets are refused (:class:`~blockproc.InputError`).
    block_size : int or str, default "64MiB"
        Nominal bytes per block: ``"64MiB"`` is 64·2**20, ``"64MB"`` 64·10**6.
    format : str or format instance, default "lines"
        ``"lines"``, ``"delimited"``, ``"raw"`` or an instance from :mod:`blockproc.formats`.
    storage_options : mapping, optional
        Passed to fsspec (credentials, endpoint...).

    Returns
    -------
    Plan
        Blocks with dense ids in plan order: files sorted, ranges in file order.

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/p", {"a.log": b"x\\n" * 10, "b.log": b"y\\n" * 10})
    ['memory://doc/p/a.log', 'memory://doc/p/b.log']
    >>> p = bp.plan("memory://doc/p/*.log", block_size=8)
    >>> len(p.blocks), p.blocks[3]
    (6, Block(id=3, path='/doc/p/b.log', start=0, end=8))
    """
    urls = _ensure_urls(urlpath)
    size = ensure_positive_size(block_size, "block_size")
    fmt = get_format(format)
    return make_plan(urls, block_size=size, format=fmt, storage_options=storage_options)


def submit(
    plan: Plan,
    fn: Callable[[Any], Any] | str,
    *,
    output: URLLike | None = None,
    output_format: str | OutputFormat | None = None,
    per: Literal["record", "block"] = "record",
    executor: str = "processes",
    workers: int | None = None,
    executor_options: Mapping[str, Any] | None = None,
    if_exists: IfExists = "error",
    max_attempts: int = 4,
    speculation: bool | None = None,
    max_bad_records: int | None = None,
    max_record_size: SizeLike = DEFAULT_MAX_RECORD_SIZE,
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Job:
    """Start running ``fn`` over every block of ``plan``; return a :class:`Job` at once.

    Parameters
    ----------
    plan : Plan
        From :func:`plan`.
    fn : callable or str
        ``fn(record)`` (``per="record"``), ``fn(batch)`` (``per="block"``), or a shell
        command string that reads a block on stdin and writes the part-file on stdout.
    output : str or PathLike, optional
        The result directory: ``part-NNNNN.txt`` files and ``_SUCCESS`` when done.
        Without it nothing is written: each block's value (what a per-block function
        returns; a per-record function's non-None results, as a list) goes back to the
        master, into ``JobResult.values``; a job killed mid-way then starts over.
    output_format : str or output spec, default "text" ("pickle" without ``output``)
        The part-files' format: ``"text"`` (``.txt``), ``"csv"``, ``"jsonl"``,
        ``"parquet"``, ``"npy"`` or ``"pickle"`` (values back to the master too), or a
        spec from :mod:`blockproc.output_formats` such as ``CSVOutput(header=False)``
        (see there for what ``fn`` may return).
    per : {"record", "block"}, default "record"
        Call ``fn`` once per record or once per block.
    executor : {"processes", "threads", "inline", "cluster", "dask"}, default "processes"
        Where workers run.
    workers : int, optional
        Parallel workers; default one per CPU. For ``"cluster"``: worker processes to
        start on this machine (default none: workers join with ``blockproc worker``).
        For ``"dask"``: the LocalCluster's workers, or at most this many attempts at
        once on a given cluster.
    executor_options : mapping, optional
        Settings of the ``cluster`` executor: ``listen`` (``"HOST:PORT"``, default
        ``"127.0.0.1:0"``), ``authkey`` or ``authkey_file`` (default
        ``$BLOCKPROC_AUTHKEY``, else a random key that is printed); of the ``dask``
        executor: ``client`` (a ``distributed.Client``) or ``address``
        (``"tcp://host:8786"``); neither starts a LocalCluster for the job.
    if_exists : {"error", "overwrite", "resume", "append"}, default "error"
        What to do when ``output`` is not empty. ``"append"`` processes only what is new
        in the inputs since the output's last run: bytes appended to its files and new
        files (README: "Incremental runs").
    max_attempts : int, default 4
        Attempts per block before the job fails.
    speculation : bool, optional
        Start a second attempt of a straggling block once nothing else is pending (the
        first to finish is committed). Default: on for ``processes`` and ``cluster``.
    max_bad_records : int, optional
        Skip up to this many records (over the job) whose function call raises, logging
        each to ``_errors/`` in the output; default None fails on the first.
    max_record_size : int or str, default "256MiB"
        A record longer than this fails the job (RecordTooLargeError) instead of
        exhausting memory.
    progress : bool, optional
        Show a progress bar; default only when stderr is a terminal.
    storage_options : mapping, optional
        fsspec options for the output filesystem (the input's are in the plan).

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/s", {"in.log": b"a\\nb\\n"})
    ['memory://doc/s/in.log']
    >>> job = bp.submit(bp.plan("memory://doc/s/in.log"), str.upper,
    ...                 output="memory://doc/s-out", executor="threads")
    >>> job.result().num_records_out
    2
    """
    job = make_job(plan, fn, output=output, per=per, executor=executor, workers=workers,
                    output_format=output_format,
                    executor_options=executor_options, if_exists=if_exists,
                    max_attempts=max_attempts, speculation=speculation,
                    max_bad_records=max_bad_records, max_record_size=max_record_size,
                    progress=progress, storage_options=storage_options)
    return start_job(job)


def _run(urlpath: InputsLike, fn: Any, per: Literal["record", "block"], *,
         output: URLLike | None, block_size: SizeLike, format: str | RecordFormat,
         storage_options: Mapping[str, Any] | None, **options: Any) -> JobResult:
    job_plan = plan(urlpath, block_size=block_size, format=format,
                    storage_options=storage_options)
    job = make_job(job_plan, fn, output=output, per=per, storage_options=storage_options,
                    **options)
    run_job(job)  # in this thread, so pdb and Ctrl-C work as usual
    result = job.result()
    check_read_amplification(job_plan, result)
    return result


def check_read_amplification(plan: Plan, result: JobResult) -> None:
    """Warn when the blocks of a finished job read several times its input: records much
    longer than the block size, which only the workers could see.

    Examples
    --------
    >>> import warnings
    >>> import blockproc as bp
    >>> _ = bp.testing.write_files("memory://doc/amp", {"in.log": b"x" * 2**21 + b"\\n"})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     res = bp.map_lines(lambda s: str(len(s)), "memory://doc/amp", executor="inline",
    ...                        output="memory://doc/amp-out", block_size="64KiB")
    >>> print(caught[0].message)
    the blocks read ...x the input (... MiB for 2.0 MiB): records are much longer than ...
    """
    read = sum(b.bytes_read for b in result.blocks)
    if plan.num_bytes < 2**20 or read <= READ_AMPLIFICATION * plan.num_bytes:
        return
    warnings.warn(
        f"the blocks read {read / plan.num_bytes:.0f}x the input ({format_size(read)} for "
        f"{format_size(plan.num_bytes)}): records are much longer than "
        f"block_size={format_size(plan.block_size)}, and each block reads on to the end of "
        f"its record; pass a block size larger than the longest record (CLI: --block-size)",
        UserWarning, stacklevel=user_stacklevel())


def _block_executor(executor: str | None, format: str | RecordFormat) -> str:
    """Return ``executor``, or the default for per-block functions over ``format``:
    ``"threads"`` when the format says it prefers them (``prefers_threads``, as ``csv``
    does), else ``"processes"``."""
    if executor is not None:
        return executor
    return "threads" if getattr(get_format(format), "prefers_threads", False) is True \
        else "processes"


def map_lines(
    fn: Callable[[Any], Any],
    urlpath: InputsLike,
    *,
    output: URLLike | None = None,
    output_format: str | OutputFormat | None = None,
    block_size: SizeLike = DEFAULT_BLOCK_SIZE,
    format: str | RecordFormat = "lines",
    executor: str = "processes",
    workers: int | None = None,
    executor_options: Mapping[str, Any] | None = None,
    if_exists: IfExists = "error",
    max_attempts: int = 4,
    speculation: bool | None = None,
    max_bad_records: int | None = None,
    max_record_size: SizeLike = DEFAULT_MAX_RECORD_SIZE,
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> JobResult:
    """Call ``fn`` on every record of the inputs and write what it returns, one line each.

    ``fn(record)`` returns a str or bytes (one output line), None (drop the record) or
    an iterable of them; with ``output_format="csv"``, ``"jsonl"`` or ``"parquet"`` it
    returns dicts (see :mod:`blockproc.output_formats`). A record is a ``str`` for ``lines``, a
    ``dict`` for ``csv``, ``jsonl`` and ``parquet`` rows, a numpy scalar for ``Fixed``.
    Lambdas and notebook functions work (cloudpickle). Without ``output``,
    ``JobResult.values`` holds each block's non-None results as a list.
    Equivalent to ``submit(plan(urlpath, ...), fn, output=output, ...).result()``.

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/m", {"in.log": b"a 500\\nb 200\\nc 503\\n"})
    ['memory://doc/m/in.log']
    >>> res = bp.map_lines(lambda s: s.upper() if " 5" in s else None, "memory://doc/m",
    ...                    output="memory://doc/m-out", executor="inline", block_size=4)
    >>> bp.testing.read_parts("memory://doc/m-out")
    b'A 500\\nC 503\\n'
    """
    return _run(urlpath, fn, "record", output=output, block_size=block_size, format=format,
                storage_options=storage_options, executor=executor, workers=workers,
                output_format=output_format,
                executor_options=executor_options, if_exists=if_exists,
                max_attempts=max_attempts, speculation=speculation,
                max_bad_records=max_bad_records, max_record_size=max_record_size,
                progress=progress)


def map_batches(
    fn: Callable[[list[Any]], Any],
    urlpath: InputsLike,
    *,
    output: URLLike | None = None,
    batch_size: SizeLike = "1MiB",
    output_format: str | OutputFormat | None = None,
    block_size: SizeLike = DEFAULT_BLOCK_SIZE,
    format: str | RecordFormat = "lines",
    executor: str = "processes",
    workers: int | None = None,
    executor_options: Mapping[str, Any] | None = None,
    if_exists: IfExists = "error",
    max_attempts: int = 4,
    speculation: bool | None = None,
    max_record_size: SizeLike = DEFAULT_MAX_RECORD_SIZE,
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> JobResult:
    """Call ``fn`` on batches of records: a list of ~``batch_size`` bytes of consecutive
    records of a block at a time, and write what it returns, one line per result.

    One call per batch instead of one per record, as Ray Data's ``map_batches`` and
    pyarrow's ``iter_batches`` hand out batches: ``fn(records)`` gets a ``list`` of the
    records :func:`map_lines` would get one by one (``str`` lines by default) and
    returns a list or any iterable of results, each what a :func:`map_lines` function
    returns for one record (a str or bytes line, None for nothing, a list for several;
    dicts with ``output_format="csv"``, ``"jsonl"`` or ``"parquet"``). A batch never
    spans two blocks, and the last one of a block may be smaller. Without ``output``,
    ``JobResult.values`` holds each block's non-None results as a list.
    Like :func:`map_lines` otherwise, without ``max_bad_records`` (a batch fails as a
    whole).

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/mb", {"in.log": b"a 500\\nb 200\\nc 503\\n"})
    ['memory://doc/mb/in.log']
    >>> res = bp.map_batches(lambda lines: [s.upper() for s in lines if " 5" in s],
    ...                      "memory://doc/mb", output="memory://doc/mb-out",
    ...                      batch_size="1MiB", executor="inline")
    >>> bp.testing.read_parts("memory://doc/mb-out"), res.num_records
    (b'A 500\\nC 503\\n', 3)
    """
    size = ensure_positive_size(batch_size, "batch_size")
    return _run(urlpath, BatchFunction(fn, size), "record", output=output,
                block_size=block_size, format=format, storage_options=storage_options,
                executor=executor, workers=workers, output_format=output_format,
                executor_options=executor_options, if_exists=if_exists,
                max_attempts=max_attempts, speculation=speculation, max_bad_records=None,
                max_record_size=max_record_size, progress=progress)


def map_blocks(
    fn: Callable[[Batch], Any] | Callable[[Any], Any],
    urlpath: InputsLike,
    *,
    output: URLLike | None = None,
    output_format: str | OutputFormat | None = None,
    block_size: SizeLike = DEFAULT_BLOCK_SIZE,
    format: str | RecordFormat = "lines",
    executor: str | None = None,
    workers: int | None = None,
    executor_options: Mapping[str, Any] | None = None,
    if_exists: IfExists = "error",
    max_attempts: int = 4,
    speculation: bool | None = None,
    max_bad_records: int | None = None,
    max_record_size: SizeLike = DEFAULT_MAX_RECORD_SIZE,
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> JobResult:
    """Call ``fn`` once per block with all of its records.

    For text formats ``fn`` gets a :class:`Batch`: ``batch.records`` the records (a
    sequence that a loop streams ~1 MiB at a time; ``len``, an index or a slice makes
    it a list first), ``batch.data`` the block's record-aligned bytes, ``batch.block``
    the :class:`Block`. For ``csv``, ``jsonl`` and ``parquet`` it gets a ``pyarrow.Table``,
    for ``Fixed`` a read-only numpy array over the block's bytes (no copy). ``fn``
    returns an iterable of lines (str or bytes), a single str or bytes written as is, or
    None; or, with ``output_format``, a Table, dicts or an array (see
    :mod:`blockproc.output_formats`). Without ``output``, ``fn`` may return any
    picklable value, and ``JobResult.values`` holds one per block, in block order
    (like ``dask.bag.map_partitions(fn).compute()``); only the attempt that commits a
    block hands its value over, so retries and speculative copies never count twice.
    Equivalent to ``submit(plan(urlpath, ...), fn, per="block", ...).result()``.

    ``executor`` defaults to ``"threads"`` when the format prefers threads for per-block
    functions (``csv``: its work is pyarrow's parse and compute, which release the GIL,
    and threads keep one copy of the libraries: see ``CSV.prefers_threads``), else to
    ``"processes"``. An ``executor=`` you pass always wins; a function that loops over
    rows in Python should pass ``executor="processes"``.

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/b", {"in.log": b"a\\nbb\\nccc\\n"})
    ['memory://doc/b/in.log']
    >>> res = bp.map_blocks(lambda batch: [str(len(batch.records))], "memory://doc/b",
    ...                     output="memory://doc/b-out", executor="inline")
    >>> bp.testing.read_parts("memory://doc/b-out")
    b'3\\n'
    >>> bp.map_blocks(lambda batch: len(batch.records), "memory://doc/b", block_size=4,
    ...               executor="inline").values
    (2, 1, 0)
    """
    return _run(urlpath, fn, "block", output=output, block_size=block_size, format=format,
                storage_options=storage_options, workers=workers,
                executor=_block_executor(executor, format),
                output_format=output_format,
                executor_options=executor_options, if_exists=if_exists,
                max_attempts=max_attempts, speculation=speculation,
                max_bad_records=max_bad_records, max_record_size=max_record_size,
                progress=progress)


def map_command(
    command: str,
    urlpath: InputsLike,
    *,
    output: URLLike,
    output_format: str | OutputFormat = "text",
    block_size: SizeLike = DEFAULT_BLOCK_SIZE,
    format: str | RecordFormat = "lines",
    executor: str = "processes",
    workers: int | None = None,
    executor_options: Mapping[str, Any] | None = None,
    if_exists: IfExists = "error",
    max_attempts: int = 4,
    speculation: bool | None = None,
    max_bad_records: int | None = None,
    max_record_size: SizeLike = DEFAULT_MAX_RECORD_SIZE,
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> JobResult:
    """Pipe each block's record-aligned bytes through a shell command.

    The command reads the block on stdin; its stdout becomes the part-file (Hadoop
    Streaming and ``parallel --pipepart`` semantics). A non-zero exit fails the attempt
    with the tail of its stderr.

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/c", {"in.log": b"ok\\nERROR x\\nok\\n"})
    ['memory://doc/c/in.log']
    >>> res = bp.map_command("grep ERROR", "memory://doc/c", output="memory://doc/c-out",
    ...                      executor="threads")
    >>> bp.testing.read_parts("memory://doc/c-out")
    b'ERROR x\\n'
    """
    return _run(urlpath, command, "record", output=output, block_size=block_size,
                format=format, storage_options=storage_options, executor=executor,
                output_format=output_format,
                workers=workers, executor_options=executor_options, if_exists=if_exists,
                max_attempts=max_attempts,
                speculation=speculation, max_bad_records=max_bad_records,
                max_record_size=max_record_size, progress=progress)


def reduce_blocks(
    fn: Callable[[Batch], Any] | Callable[[Any], Any],
    combine: Callable[[Any, Any], Any],
    urlpath: InputsLike,
    *,
    initial: Any = NOTHING,
    output: URLLike | None = None,
    block_size: SizeLike = DEFAULT_BLOCK_SIZE,
    format: str | RecordFormat = "lines",
    executor: str | None = None,
    workers: int | None = None,
    executor_options: Mapping[str, Any] | None = None,
    if_exists: IfExists = "error",
    max_attempts: int = 4,
    speculation: bool | None = None,
    max_bad_records: int | None = None,
    max_record_size: SizeLike = DEFAULT_MAX_RECORD_SIZE,
    progress: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> JobResult:
    """Map each block to a partial result with ``fn`` and fold the partials with
    ``combine``; ``JobResult.value`` is the answer.

    ``fn`` gets what :func:`map_blocks` gives it and returns a picklable partial, such
    as a dict of counts. The master folds partials as their blocks commit,
    ``acc = combine(acc, partial)``, starting from ``initial`` (or from the first
    partial when ``initial`` is not given, as :func:`functools.reduce`), so its memory
    holds one accumulator however many blocks there are. Blocks commit in whatever
    order they finish, so ``combine`` must be associative and commutative (sum, max,
    merging counts or sets) for the answer not to depend on that order, as Spark's
    ``aggregate`` and Dask's ``fold`` require; an order-sensitive ``combine`` (list
    concatenation) gives the partials in completion order. ``combine`` may update
    ``acc`` in place and return it. Only the attempt that commits a block contributes,
    so retries and speculative copies never count twice.

    ``executor`` defaults as in :func:`map_blocks` (``"threads"`` for ``csv``, else
    ``"processes"``); an ``executor=`` you pass always wins.

    With ``output``, each block's partial is committed as ``part-NNNNN.pickle``, and a
    job resumed with ``if_exists="resume"`` folds those without running their blocks
    again. Without ``output`` nothing is written, and a killed job starts over.

    Examples
    --------
    >>> import collections, operator
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/r", {"a.log": b"GET 200\\nPOST 500\\nGET 503\\n"})
    ['memory://doc/r/a.log']
    >>> def statuses(batch):
    ...     return collections.Counter(line.split()[1][0] + "xx" for line in batch.records)
    >>> bp.reduce_blocks(statuses, operator.add, "memory://doc/r", block_size=8,
    ...                  executor="inline").value
    Counter({'5xx': 2, '2xx': 1})
    >>> bp.reduce_blocks(lambda b: len(b.records), max, "memory://doc/r", initial=0,
    ...                  block_size=8, executor="inline").value
    2
    """
    return _run(urlpath, fn, "block", output=output, block_size=block_size, format=format,
                storage_options=storage_options, workers=workers,
                executor=_block_executor(executor, format),
                output_format="pickle" if output is not None else None,
                combine=combine, initial=initial,
                executor_options=executor_options, if_exists=if_exists,
                max_attempts=max_attempts, speculation=speculation,
                max_bad_records=max_bad_records, max_record_size=max_record_size,
                progress=progress)
