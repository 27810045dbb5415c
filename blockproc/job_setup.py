"""Build a job from what the user passed: check every option once, before any work, and
refuse a misuse with a :class:`~blockproc.ConfigError` naming the option and the fix.

:func:`make_job` is what :func:`~blockproc.submit`, the ``map_*`` functions and
``blockproc run`` call.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

from blockproc._types import IfExists, SizeLike, URLLike
from blockproc._units import format_size, parse_size
from blockproc.errors import AccessError, ConfigError
from blockproc.executors import EXECUTORS, default_workers, make_executor
from blockproc.executors.base import dumps
from blockproc.job import Job, JobOptions
from blockproc.limits import MAX_WORKERS_ENV, max_workers
from blockproc.model import Plan
from blockproc.output_formats import OutputFormat, get_output_format
from blockproc.storage import (
    AbstractFileSystem,
    access_refused_as_error,
    is_local,
    protocol_of,
    resolve,
    to_url,
)
from blockproc.values import NOTHING, Values, value_limits
from blockproc.worker import Mapper

IF_EXISTS = ("error", "overwrite", "resume", "append")
"""What ``if_exists=`` accepts."""

LARGE_FUNCTION_SIZE = 10 * 2**20
"""A function that pickles to more than this (10 MiB, as Dask) is warned about."""


def ensure_positive_size(value: SizeLike, name: str) -> int:
    size = parse_size(value, name=name)
    if size < 1:
        raise ConfigError(
            f"{name} must be >= 1 byte, got {value!r}; pass an int or a string like '64MiB'"
        )
    return size


def make_job(
    plan: Plan,
    fn: Callable[[Any], Any] | str,
    *,
    output: URLLike | None,
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
    output_format: str | OutputFormat | None = None,
    combine: Callable[[Any, Any], Any] | None = None,
    initial: Any = NOTHING,
) -> Job:
    """Check every option and build the :class:`~blockproc.Job` that :func:`submit` starts
    (and ``blockproc run`` runs in its own thread); nothing runs yet.

    Without ``output`` the job's values go back to the master (``pickle`` output, no
    files); ``combine`` and ``initial`` fold them (:func:`~blockproc.reduce_blocks`).

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
    writer = _output_format(output, output_format, if_exists, combine)
    writer = _values_per(writer, per)
    mapper = _make_mapper(fn, per, writer)
    out_fs, out_path = None, ""
    if output is not None:
        if not isinstance(output, (str, os.PathLike)):
            raise TypeError(f"output must be a path or a URL, got {output!r}")
        if not os.fspath(output).strip():
            raise ConfigError("output is empty; pass the result directory, such as 'out/'")
        out_fs, out_path = resolve(os.fspath(output), storage_options)
        _check_output(plan, out_fs, out_path)
    workers = _ensure_workers(workers, executor, executor_options, len(plan.blocks))
    if executor in ("processes", "cluster", "dask"):
        stores = [(plan.protocol, "input")]
        if out_fs is not None:
            stores.append((protocol_of(out_fs), "output"))
        for name in stores:
            if name[0] == "memory":
                raise ConfigError(
                    f"the {name[1]} is on memory://, which each process has its own copy of; "
                    f"use executor='threads' or 'inline' with memory://, or a shared path"
                )
        _check_picklable(mapper)
    block_limit, job_limit = value_limits()
    options = JobOptions(
        max_attempts=max_attempts,
        speculation=executor in ("processes", "cluster") if speculation is None
        else bool(speculation),
        max_bad_records=max_bad_records,
        max_record_size=ensure_positive_size(max_record_size, "max_record_size"),
        max_value_size=block_limit,
    )
    values = Values(len(plan.blocks), combine=combine, initial=initial,
                    max_total=job_limit) if writer.name == "pickle" else None
    return Job(plan, mapper, output_fs=out_fs, output_path=out_path,
               executor=make_executor(executor, workers, executor_options),
               if_exists=if_exists, options=options, progress=progress, values=values)


def _output_format(output: URLLike | None, output_format: str | OutputFormat | None,
                   if_exists: str, combine: Callable[[Any, Any], Any] | None) -> OutputFormat:
    """Return the output format: ``text`` by default, ``pickle`` (values to the master)
    without an output directory or with ``combine``."""
    if combine is not None and not callable(combine):
        raise TypeError(f"combine must be a function of two partials, got {combine!r}")
    if output is not None:
        writer = get_output_format(output_format or ("pickle" if combine else "text"))
        if combine is not None and writer.name != "pickle":
            raise ConfigError(f"reduce_blocks keeps each block's value as a .pickle part-file "
                              f"to resume from, so output_format must be 'pickle', not "
                              f"{writer.name!r}; leave output_format out")
        return writer
    if output_format is not None and get_output_format(output_format).name != "pickle":
        name = get_output_format(output_format).name
        raise ConfigError(f"output_format={name!r} writes part-files, which need output=...; "
                          f"pass output='out/' (CLI: -o out/), or leave output_format out "
                          f"to get the values back in JobResult.values")
    if if_exists != "error":
        raise ConfigError(f"if_exists={if_exists!r} is about an output directory, and this "
                          f"job has none (its values go back to the master); pass "
                          f"output='out/' to make the job resumable")
    return get_output_format("pickle")


def _check_job_options(per: str, if_exists: str, max_attempts: object,
                       max_bad_records: object, executor: str) -> None:
    if per not in ("record", "block"):
        raise ConfigError(f"per must be 'record' or 'block', got {per!r}")
    if if_exists not in IF_EXISTS:
        raise ConfigError(f"if_exists must be one of {', '.join(IF_EXISTS)}, got {if_exists!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConfigError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if max_bad_records is not None and (isinstance(max_bad_records, bool)
                                        or not isinstance(max_bad_records, int)
                                        or max_bad_records < 0):
        raise ConfigError(f"max_bad_records must be None or an int >= 0, got {max_bad_records!r}")


def _values_per(writer: OutputFormat, per: str) -> OutputFormat:
    """The pickle output with one value per record for ``map_lines`` (a list per block),
    one per block for ``map_blocks``; any other output as it is. The pickle output (a
    dataclass, with ``dataclasses``) loads only if ``writer`` may be one."""
    if getattr(writer, "name", None) != "pickle":
        return writer
    import dataclasses

    from blockproc.output_formats import PickleOutput

    if not isinstance(writer, PickleOutput):
        return writer
    return dataclasses.replace(writer, per_record=per == "record")


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
        payload = dumps(mapper.fn)
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
            UserWarning, stacklevel=user_stacklevel())


def user_stacklevel() -> int:
    """Return the ``stacklevel`` that points a warning at the first caller outside
    blockproc."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level
