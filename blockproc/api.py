"""The public functions: :func:`plan`, :func:`submit`, :func:`map_lines`, :func:`map_blocks`
and :func:`map_command`. They check their arguments, normalise them once, and hand
canonical values to the planner and the job."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import cloudpickle

from blockproc._types import IfExists, InputsLike, SizeLike, URLLike
from blockproc._units import format_size, parse_size
from blockproc.errors import AccessError, ConfigError
from blockproc.executors import EXECUTORS, default_workers, make_executor
from blockproc.formats import RecordFormat, get_format
from blockproc.formats.base import DEFAULT_MAX_RECORD_SIZE
from blockproc.job import Job, JobOptions, run_job, start_job
from blockproc.limits import MAX_WORKERS_ENV, max_workers
from blockproc.model import Plan
from blockproc.output_formats import OutputFormat, get_output_format
from blockproc.planning import make_plan
from blockproc.result import JobResult
from blockproc.storage import (
    AbstractFileSystem,
    access_refused_as_error,
    is_local,
    protocol_of,
    resolve,
    to_url,
)
from blockproc.worker import Batch, Mapper

DEFAULT_BLOCK_SIZE = 64 * 2**20
"""64 MiB: large enough to amortise start-up, small enough to balance load."""

_IF_EXISTS = ("error", "overwrite", "resume")

LARGE_FUNCTION_SIZE = 10 * 2**20
"""A function that pickles to more than this (10 MiB, as Dask) is warned about."""

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


def _ensure_positive_size(value: SizeLike, name: str) -> int:
    size = parse_size(value, name=name)
    if size < 1:
        raise ConfigError(
            f"{name} must be >= 1 byte, got {value!r}; pass an int or a string like '64MiB'"
        )
    return size


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
    size = _ensure_positive_size(block_size, "block_size")
    fmt = get_format(format)
    return make_plan(urls, block_size=size, format=fmt, storage_options=storage_options)


def submit(
    plan: Plan,
    fn: Callable[[Any], Any] | str,
    *,
    output: URLLike,
    output_format: str | OutputFormat = "text",
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
    output : str or PathLike
        The result directory: ``part-NNNNN.txt`` files and ``_SUCCESS`` when done.
    output_format : str or output spec, default "text"
        The part-files' format: ``"text"`` (``.txt``), ``"csv"``, ``"jsonl"``,
        ``"parquet"`` or ``"npy"``, or a spec from :mod:`blockproc.output_formats` such as
        ``CSVOutput(header=False)`` (see there for what ``fn`` may return).
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
    if_exists : {"error", "overwrite", "resume"}, default "error"
        What to do when ``output`` is not empty.
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


def make_job(
    plan: Plan,
    fn: Callable[[Any], Any] | str,
    *,
    output: URLLike,
    per: Literal["record", "block"],
    executor: str,
    workers: int | None,
    if_exists: IfExists,
    max_attempts: int,
    speculation: bool | None,
    max_bad_records: int | None,
    max_record_size: SizeLike,
    progress: bool | None,
    storage_options: Mapping[str, Any] | None,
    executor_options: Mapping[str, Any] | None = None,
    output_format: str | OutputFormat = "text",
) -> Job:
    """Check every option and build the :class:`~blockproc.Job` that :func:`submit` starts
    (and ``blockproc run`` runs in its own thread); nothing runs yet.

    Every misuse is refused here, before any work, with a :class:`~blockproc.ConfigError`
    (or ``TypeError`` for a value of the wrong kind) naming the option and the fix.

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/make-job", {"a.log": b"a\\n"})
    ['memory://doc/make-job/a.log']
    >>> options = dict(output="memory://doc/make-job-out", per="record", workers=None,
    ...                if_exists="error", max_attempts=4, speculation=None,
    ...                max_bad_records=None, max_record_size="256MiB", progress=False,
    ...                storage_options=None)
    >>> make_job(bp.plan("memory://doc/make-job"), str.upper, executor="threads", **options)
    <Job 1 block: 0 committed, 0 failed attempts, pending>
    >>> make_job(bp.plan("memory://doc/make-job"), str.upper, executor="gpu", **options)
    Traceback (most recent call last):
    ...
    blockproc.ConfigError: unknown executor 'gpu'; choose one of ...
    """
    if not isinstance(plan, Plan):
        raise TypeError(f"submit() takes a Plan from bp.plan(...), got {plan!r}")
    _check_job_options(per, if_exists, max_attempts, max_bad_records, executor)
    mapper = _make_mapper(fn, per, get_output_format(output_format))
    if not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"output must be a path or a URL, got {output!r}")
    if not os.fspath(output).strip():
        raise ConfigError("output is empty; pass the result directory, such as 'out/'")
    out_fs, out_path = resolve(os.fspath(output), storage_options)
    workers = _ensure_workers(workers, executor, executor_options, len(plan.blocks))
    if executor in ("processes", "cluster", "dask"):
        for name in ((plan.protocol, "input"), (protocol_of(out_fs), "output")):
            if name[0] == "memory":
                raise ConfigError(
                    f"the {name[1]} is on memory://, which each process has its own copy of; "
                    f"use executor='threads' or 'inline' with memory://, or a shared path"
                )
        _check_picklable(mapper)
    _check_output(plan, out_fs, out_path)
    options = JobOptions(
        max_attempts=max_attempts,
        speculation=executor in ("processes", "cluster") if speculation is None
        else bool(speculation),
        max_bad_records=max_bad_records,
        max_record_size=_ensure_positive_size(max_record_size, "max_record_size"),
    )
    return Job(plan, mapper, output_fs=out_fs, output_path=out_path,
               executor=make_executor(executor, workers, executor_options),
               if_exists=if_exists,
               options=options, progress=progress)


def _check_job_options(per: str, if_exists: str, max_attempts: object,
                       max_bad_records: object, executor: str) -> None:
    if per not in ("record", "block"):
        raise ConfigError(f"per must be 'record' or 'block', got {per!r}")
    if if_exists not in _IF_EXISTS:
        raise ConfigError(f"if_exists must be one of {', '.join(_IF_EXISTS)}, got {if_exists!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConfigError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if max_bad_records is not None and (isinstance(max_bad_records, bool)
                                        or not isinstance(max_bad_records, int)
                                        or max_bad_records < 0):
        raise ConfigError(f"max_bad_records must be None or an int >= 0, got {max_bad_records!r}")


def _make_mapper(fn: Callable[[Any], Any] | str, per: Literal["record", "block"],
                 writer: OutputFormat) -> Mapper:
    if isinstance(fn, str):
        if not fn.strip():
            raise ConfigError("the command is empty; pass a shell command such as 'grep ERROR'")
        if not writer.is_streaming_text:
            raise ConfigError(
                f"a command writes its stdout as the part-file, so output_format must be "
                f"text, csv or jsonl, not {writer.name!r}; write {writer.name} files from a "
                f"Python function with map_blocks instead")
        return Mapper("command", fn, writer)
    if callable(fn):
        return Mapper(per, fn, writer)
    raise TypeError(f"fn must be a callable or a command string, got {fn!r}")


def _ensure_workers(workers: int | None, executor: str,
                    options: Mapping[str, Any] | None, num_blocks: int) -> int | None:
    """Check ``workers`` against the machine and never start more than ``num_blocks``."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ConfigError(f"workers must be a positive int, got {workers!r}")
    remote = executor == "dask" and bool(options) and (
        "client" in options or "address" in options)  # type: ignore[operator]
    if workers is not None and executor in ("processes", "cluster", "dask") and not remote:
        bound, why = max_workers()
        if workers > bound:
            raise ConfigError(
                f"workers={workers} is more worker processes than this machine can run: at "
                f"most {bound} ({why}); pass workers={bound} or fewer (CLI: --workers "
                f"{bound}), or set the environment variable {MAX_WORKERS_ENV}={workers} "
                f"to allow more"
            )
    if workers is None and executor in ("processes", "threads"):
        workers = default_workers()
    if workers is not None:  # a worker without a block would only cost a process
        workers = min(workers, max(1, num_blocks))
    return workers


def _check_output(plan: Plan, fs: AbstractFileSystem, path: str) -> None:
    """Refuse, before any work, an output inside an input directory of ``plan``, and one
    this process cannot write (permission denied, no credentials)."""
    url = to_url(fs, path)
    target = path.rstrip("/")
    if protocol_of(fs) == plan.protocol:
        for directory in plan.directories:
            if target == directory or target.startswith(directory.rstrip("/") + "/"):
                raise ConfigError(
                    f"output {url!r} is inside the input directory {to_url(fs, directory)!r}, "
                    f"which is read recursively; choose an output directory outside it"
                )
    if is_local(fs):
        existing = target or "/"
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if existing != target and not os.path.isdir(existing):
            raise ConfigError(f"output {url!r} is below {existing!r}, which is a file, not a "
                              f"directory; choose another output path")
        if os.path.isdir(existing) and not os.access(existing, os.W_OK | os.X_OK):
            raise AccessError(
                f"cannot write the output {url!r}: permission denied on {existing!r}; choose "
                f"an output directory you can write to, or change its permissions"
            )
        return
    if protocol_of(fs) == "memory":
        return
    with access_refused_as_error(url, "reach the output",
                                 "check the credentials and the bucket's policy"), \
            contextlib.suppress(FileNotFoundError):
        fs.info(path)


def _check_picklable(mapper: Mapper) -> None:
    try:
        payload = cloudpickle.dumps(mapper.fn)
    except Exception as exc:
        raise ConfigError(
            f"cannot send {mapper.fn!r} to worker processes: {type(exc).__name__}: {exc}; "
            f"make it a module-level function or drop what it captures that cannot be "
            f"pickled (open files, locks, clients), or use executor='threads'"
        ) from exc
    if len(payload) > LARGE_FUNCTION_SIZE:
        inner = getattr(mapper.fn, "func", mapper.fn)  # functools.partial: name its function
        name = getattr(inner, "__qualname__", None) or type(mapper.fn).__name__
        warnings.warn(
            f"the function {name} pickles to {format_size(len(payload))} (more than "
            f"{format_size(LARGE_FUNCTION_SIZE)}), which is copied to every worker process; "
            f"keep large data out of it: load it inside the function from a file (cached "
            f"with functools.cache, once per worker), or use executor='threads'",
            UserWarning, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """Return the ``stacklevel`` that points a warning at the first caller outside
    blockproc."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def _run(urlpath: InputsLike, fn: Any, per: Literal["record", "block"], *,
         output: URLLike, block_size: SizeLike, format: str | RecordFormat,
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
        UserWarning, stacklevel=_user_stacklevel())


def map_lines(
    fn: Callable[[Any], Any],
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
    """Call ``fn`` on every record of the inputs and write what it returns, one line each.

    ``fn(record)`` returns a str or bytes (one output line), None (drop the record) or
    an iterable of them; with ``output_format="csv"``, ``"jsonl"`` or ``"parquet"`` it
    returns dicts (see :mod:`blockproc.output_formats`). A record is a ``str`` for ``lines``, a
    ``dict`` for ``csv``, ``jsonl`` and ``parquet`` rows, a numpy scalar for ``Fixed``.
    Lambdas and notebook functions work (cloudpickle).
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


def map_blocks(
    fn: Callable[[Batch], Any] | Callable[[Any], Any],
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
    """Call ``fn`` once per block with all of its records.

    For text formats ``fn`` gets a :class:`Batch`: ``batch.records`` is the list of
    records, ``batch.data`` the block's record-aligned bytes, ``batch.block`` the
    :class:`Block`. For ``csv``, ``jsonl`` and ``parquet`` it gets a ``pyarrow.Table``,
    for ``Fixed`` a read-only numpy array over the block's bytes (no copy). ``fn``
    returns an iterable of lines (str or bytes), a single str or bytes written as is, or
    None; or, with ``output_format``, a Table, dicts or an array (see
    :mod:`blockproc.output_formats`).
    Equivalent to ``submit(plan(urlpath, ...), fn, per="block", ...).result()``.

    Examples
    --------
    >>> import blockproc as bp
    >>> bp.testing.write_files("memory://doc/b", {"in.log": b"a\\nbb\\nccc\\n"})
    ['memory://doc/b/in.log']
    >>> res = bp.map_blocks(lambda batch: [str(len(batch.records))], "memory://doc/b",
    ...                     output="memory://doc/b-out", executor="inline")
    >>> bp.testing.read_parts("memory://doc/b-out")
    b'3\\n'
    """
    return _run(urlpath, fn, "block", output=output, block_size=block_size, format=format,
                storage_options=storage_options, executor=executor, workers=workers,
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
