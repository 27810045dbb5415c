"""The ``blockproc`` command: ``run``, ``plan``, ``status`` and ``demo``.

A thin layer over :mod:`blockproc.api`: it parses options, calls the API, prints the
result and returns an exit code (``ConfigError`` 2, job failures 1, Ctrl-C 130, SIGTERM
143). Any error prints one line, ``error: ...``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import codecs
import functools
import importlib
import inspect
import json
import os
import shlex
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from blockproc import api, formats, output_formats
from blockproc._units import format_size, parse_size
from blockproc.errors import (
    BlockFailedError,
    BlockprocError,
    ConfigError,
    JobError,
    UnfinishedOutputError,
)
from blockproc.executors import EXECUTORS
from blockproc.formats import Delimited, Lines, Raw, RecordFormat, available_formats
from blockproc.job import run_job
from blockproc.output import SUCCESS, OutputStatus
from blockproc.output import status as output_status
from blockproc.output import verify as verify_output
from blockproc.result import JobResult
from blockproc.storage import is_credentials_error

_state = {"debug": False}
"""Set by ``blockproc --debug``: show tracebacks."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it stops a job as Ctrl-C does."""


class SizeParam(click.ParamType):  # type: ignore[type-arg]
    """A byte size such as ``64MiB``, checked with :func:`parse_size`."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            size = parse_size(str(value), name=param.name if param and param.name else "size")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        if size < 1:
            self.fail(f"must be >= 1 byte, got {value!r}", param, ctx)
        return size


SIZE = SizeParam()


def _format_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--format", "format_name", type=click.Choice(available_formats()),
                     default="lines", show_default=True, help="How bytes become records."),
        click.option("--delimiter", default=None,
                     help=r"Record delimiter for --format delimited/raw; escapes like '\0', "
                          r"'\n\n' or '|+|' work. Default: newline."),
        click.option("--encoding", default=None,
                     help="Text encoding of records (lines: utf-8 by default; delimited: "
                          "bytes unless given)."),
        click.option("--errors", "decode_errors", default="strict", show_default=True,
                     help="What to do with undecodable bytes: strict, replace, ignore, "
                          "surrogateescape."),
        click.option("--block-size", type=SIZE, default="64MiB", show_default=True,
                     help="Nominal bytes per block: 64MiB = 64*2**20, 64MB = 64*10**6."),
        click.option("--format-option", "format_option", multiple=True, metavar="KEY=VALUE",
                     help="An option of csv, jsonl, parquet or fixed (repeatable; JSON "
                          "values): sep=';', header=false, column_types='{\"n\": "
                          "\"int64\"}', columns=a,b, dtype='<f8', record_size=16."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _make_format(format_name: str, delimiter: str | None, encoding: str | None,
                 decode_errors: str, format_option: Sequence[str] = ()) -> RecordFormat:
    extra = _parse_key_values(format_option, "--format-option")
    if format_name in ("csv", "jsonl", "parquet", "fixed"):
        if delimiter is not None:
            raise ConfigError("--delimiter is for --format delimited/raw; the csv field "
                              "separator is --format-option sep=';'")
        if encoding is not None:
            extra.setdefault("encoding", encoding)
        for key in ("columns", "column_names"):
            if isinstance(extra.get(key), str):
                extra[key] = extra[key].split(",")
        try:
            return formats.from_dict({"name": format_name, **extra})
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"--format-option for --format {format_name}: {exc}"
                              f"{_options_of(format_name, formats.get_format)}") from None
    if extra:
        raise ConfigError(f"--format-option is for csv, jsonl, parquet and fixed, not "
                          f"--format {format_name}")
    delim = b"\n" if delimiter is None else _unescape(delimiter)
    if format_name == "lines":
        if delimiter is not None:
            raise ConfigError("--delimiter needs --format delimited or --format raw")
        return Lines(encoding or "utf-8", decode_errors)
    if format_name == "delimited":
        return Delimited(delim, encoding, decode_errors)
    return Raw(delim)


def _unescape(text: str) -> bytes:
    try:
        return codecs.decode(text.encode("utf-8"), "unicode_escape").encode("latin-1")
    except (UnicodeError, ValueError) as exc:
        raise ConfigError(f"--delimiter {text!r} is not a valid escaped string: {exc}") from None


def _import_function(spec: str, option: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{option} {spec!r} must look like 'module:function', e.g. 'mymod:parse'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{option} {spec!r}: cannot import module {module_name!r} ({exc}); run blockproc "
            f"from the directory that holds {module_name.replace('.', '/')}.py, or install it"
        ) from None
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else module_name
        raise ConfigError(
            f"{option} {spec!r}: module {module_name!r} has a syntax error ({exc.msg}, "
            f"{where}); fix it, then check with `python -c 'import {module_name}'`"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"{option} {spec!r}: importing module {module_name!r} raised "
            f"{type(exc).__name__}: {exc}; fix the module (check with `python -c 'import "
            f"{module_name}'`)"
        ) from None
    module = obj
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{option} {spec!r}: module {module_name!r} has no {attr!r}; "
                f"{_callables_of(module)}") from None
    if not callable(obj):
        raise ConfigError(f"{option} {spec!r} is not callable ({type(obj).__name__}); name "
                          f"a function: {_callables_of(module)}")
    return obj  # type: ignore[no-any-return]


def _callables_of(module: Any) -> str:
    """Return ``"it has: f, g"``: the public functions defined in ``module``."""
    names = sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
                   and getattr(v, "__module__", None) == module.__name__)
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return f"it has: {shown}" if names else "it defines no public function"


def _parse_key_values(values: Sequence[str], option: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {item!r} must look like key=value")
        try:
            options[key] = json.loads(value)
        except ValueError as exc:
            if value.lstrip().startswith(("{", "[")):  # meant as JSON: say where it breaks
                raise ConfigError(
                    f"{option} {item!r}: the value is not valid JSON ({exc}); quote it for "
                    f"the shell, e.g. {key}='{{\"n\": \"int64\"}}'") from None
            options[key] = value
    return options


def _make_output(output_format: str, output_option: Sequence[str]) -> output_formats.OutputFormat:
    spec = output_formats.get_output_format(output_format)
    extra = _parse_key_values(output_option, "--output-option")
    if not extra:
        return spec
    try:
        return type(spec)(**extra)
    except TypeError as exc:
        raise ConfigError(f"--output-option for --output-format {output_format}: {exc}"
                          f"{_options_of(output_format, output_formats.get_output_format)}"
                          ) from None


def _options_of(name: str, make: Callable[[str], Any]) -> str:
    """Return ``"; options of NAME: a, b"`` listing what the format ``name`` takes."""
    try:
        params = inspect.signature(type(make(name))).parameters
    except (ConfigError, TypeError, ValueError):  # fixed cannot be made without options
        return ""
    names = [p for p in params if p != "name" and not p.startswith("_")]
    return f"; options of {name}: {', '.join(names)}" if names else ""


def _plural(count: int, noun: str) -> str:
    """Return ``"1 block"``, ``"2 blocks"``.

    Examples
    --------
    >>> _plural(1, "block"), _plural(0, "block"), _plural(3, "file")
    ('1 block', '0 blocks', '3 files')
    """
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _summary(result: JobResult) -> str:
    from blockproc import report

    kept = report.what_was_kept(
        result.output, sum(b.bad_records for b in result.blocks),
        sum(1 for b in result.blocks if b.stderr_bytes), len(result.blocks))
    return "\n".join([
        f"committed {_plural(len(result.blocks), 'block')}: {result.num_records:,} records "
        f"in, {result.num_records_out:,} out, {format_size(result.num_bytes_written)} "
        f"written in {result.seconds:.2f}s (retries: {result.num_retries})",
        *kept, f"output: {result.output}"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="blockproc")
@click.option("--debug", is_flag=True, envvar="BLOCKPROC_DEBUG",
              help="Show the traceback of an error (and workers' tracebacks).")
def cli(debug: bool) -> None:
    """Split big files into record-aligned blocks and map a function or a command over
    them in parallel, writing one part-file per block and a _SUCCESS manifest last.

    \b
    Examples:
      blockproc demo
      blockproc run data/access.log -o out/ --map mymod:parse --workers 2
      blockproc run data/*.log -o out/ --cmd "grep ' 500 '"
      blockproc plan data/access.log --block-size 32MiB
      blockproc status out/ --verify
      blockproc COMMAND --help      (the options of a command)

    \b
    Exit codes: 0 success; 1 the job failed (or status found it unfinished or
    changed); 2 refused before any work (usage, options, inputs, output,
    permissions, credentials); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
    An error prints one line; --debug adds the traceback.
    """
    _state["debug"] = debug


@cli.command(short_help="Map a function or a command over the blocks of INPUTS.")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Result directory (local path or URL).")
@click.option("--map", "map_spec", metavar="MODULE:FUNC",
              help="Call FUNC(line) on every record; it returns a line, None or several lines.")
@click.option("--map-blocks", "map_blocks_spec", metavar="MODULE:FUNC",
              help="Call FUNC(batch) once per block (batch.records, batch.data, batch.block; "
                   "a pyarrow.Table for csv/jsonl/parquet, a numpy array for fixed).")
@click.option("--cmd", "command", metavar="COMMAND",
              help="Pipe each block through a shell command; its stdout is the part-file.")
@_format_options
@click.option("--output-format", type=click.Choice(output_formats.OUTPUT_FORMATS),
              default="text",
              show_default=True,
              help="Part-file format: text (.txt), csv, jsonl, parquet or npy.")
@click.option("--output-option", "output_option", multiple=True, metavar="KEY=VALUE",
              help="An option of the output format (repeatable; JSON values): "
                   "header=false, sep=';', columns='[\"a\"]', compression=zstd, dtype='<f8'.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="processes",
              show_default=True, envvar="BLOCKPROC_EXECUTOR", help="Where workers run.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Parallel workers (default: one per CPU; never more than blocks; at "
                   "most 8 per CPU and one per 256 MiB of memory unless "
                   "$BLOCKPROC_MAX_WORKERS allows more). With --executor cluster: "
                   "worker processes to start on this machine (default: none).")
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="--executor cluster: where the master listens for workers (default "
                   "127.0.0.1:0, a free port; 0.0.0.0:7077 accepts other machines).")
@click.option("--authkey-file", type=click.Path(dir_okay=False), default=None,
              help="--executor cluster: file holding the workers' shared key (default: "
                   "$BLOCKPROC_AUTHKEY, else a new random key, printed).")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="--executor dask: the dask scheduler, e.g. tcp://host:8786 (default: a "
                   "LocalCluster started for the job).")
@click.option("--if-exists", type=click.Choice(["error", "overwrite", "resume"]),
              default="error", show_default=True, help="What to do when the output is not empty.")
@click.option("--resume", is_flag=True,
              help="Same as --if-exists resume: run only the blocks not yet committed.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=4, show_default=True,
              help="Attempts per block before the job fails.")
@click.option("--speculation/--no-speculation", default=None,
              help="Run a second attempt of straggling blocks (default: on with processes "
                   "and cluster).")
@click.option("--max-bad-records", type=click.IntRange(min=0), default=None,
              help="Skip up to N records whose function call raises (logged to _errors/); "
                   "default: the first such record fails the block.")
@click.option("--max-record-size", type=SIZE, default="256MiB", show_default=True,
              help="Fail instead of reading a record longer than this.")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
              help="fsspec storage option for inputs and output (repeatable).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def run(inputs: tuple[str, ...], output: str, map_spec: str | None,
        map_blocks_spec: str | None, command: str | None, format_name: str,
        delimiter: str | None, encoding: str | None, decode_errors: str, block_size: int,
        format_option: tuple[str, ...], output_format: str, output_option: tuple[str, ...],
        executor: str, workers: int | None, listen: str | None, authkey_file: str | None,
        scheduler: str | None, if_exists: str, resume: bool, max_attempts: int,
        speculation: bool | None, max_bad_records: int | None, max_record_size: int,
        storage_option: tuple[str, ...], progress: bool | None, quiet: bool) -> None:
    """Map a function or a command over every block of INPUTS into OUTPUT.

    INPUTS are files, globs or directories (names starting with _ or . are skipped).
    Exactly one of --map, --map-blocks or --cmd says what runs on each block.
    """
    chosen = [s for s in (map_spec, map_blocks_spec, command) if s is not None]
    if len(chosen) != 1:
        raise ConfigError("give exactly one of --map MODULE:FUNC, --map-blocks MODULE:FUNC "
                          "or --cmd COMMAND")
    fmt = _make_format(format_name, delimiter, encoding, decode_errors, format_option)
    output_spec = _make_output(output_format, output_option)
    options = _parse_key_values(storage_option, "--storage-option")
    fn: Any
    per: Any = "record"
    if map_spec:
        fn = _import_function(map_spec, "--map")
    elif map_blocks_spec:
        fn, per = _import_function(map_blocks_spec, "--map-blocks"), "block"
    else:
        fn = command
    executor_options = _executor_options(executor, listen, authkey_file, scheduler)
    plan = api.plan(list(inputs), block_size=block_size, format=fmt, storage_options=options)
    if not quiet:
        for note in _plan_notes(plan):
            click.echo(f"note: {note}", err=True)
    job = api.make_job(plan, fn, output=output, per=per, executor=executor, workers=workers,
                        executor_options=executor_options, output_format=output_spec,
                        if_exists="resume" if resume else if_exists,  # type: ignore[arg-type]
                        max_attempts=max_attempts, speculation=speculation,
                        max_bad_records=max_bad_records, max_record_size=max_record_size,
                        progress=False if quiet else progress,
                        storage_options=options)
    try:
        run_job(job)  # in this thread, so Ctrl-C and pdb work as usual
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        click.echo(f"\n{how}: committed blocks are kept. Resume with:\n  "
                   f"{_resume_command()}", err=True)
        raise
    try:
        result = job.result()
    except JobError as exc:
        if isinstance(exc, BlockFailedError) and exc.remote_traceback and _state["debug"]:
            click.echo(f"worker traceback:\n{exc.remote_traceback.rstrip()}", err=True)
        if exc.resumable:
            exc.add_note(f"committed blocks are kept; after fixing the cause, resume with:\n  "
                         f"{_resume_command()}")
        elif isinstance(exc, BlockFailedError):  # the input changed: a resume is refused
            exc.add_note("the input changed since the job was planned; start over with "
                         "--if-exists overwrite")
        raise
    except UnfinishedOutputError as exc:  # left by a crash or a Ctrl-C
        exc.add_note(f"to finish it, run:\n  {_resume_command()}")
        raise
    api.check_read_amplification(plan, result)
    if not quiet:
        click.echo(_summary(result))


def _executor_options(executor: str, listen: str | None, authkey_file: str | None,
                      scheduler: str | None) -> dict[str, Any]:
    cluster = {key: value for key, value in (("listen", listen), ("authkey_file", authkey_file))
               if value is not None}
    if cluster and executor != "cluster":
        raise ConfigError(f"--listen and --authkey-file need --executor cluster, not "
                          f"{executor!r}")
    if scheduler is not None and executor != "dask":
        raise ConfigError(f"--scheduler needs --executor dask, not {executor!r}")
    if executor == "dask" and scheduler is not None:
        return {"address": scheduler}
    return cluster


assert run.callback is not None
master = click.Command(
    "master", callback=functools.partial(run.callback, executor="cluster"),
    params=[p for p in run.params if p.name != "executor"],
    help="Run a job as the master of workers that join over TCP: the same as `blockproc "
         "run --executor cluster`, with the same options.\n\nINPUTS are files, globs or "
         "directories on storage that every worker sees at the same path or URL.\n\nIt "
         "prints how a worker joins (blockproc worker --connect HOST:PORT) and hands blocks "
         "to workers as they come.",
    short_help="Run a job for workers that join over TCP (run --executor cluster).",
)
cli.add_command(master)


@cli.command()
@click.option("--connect", "address", required=True, metavar="HOST:PORT",
              help="The master's address, as the master printed it.")
@click.option("--slots", type=click.IntRange(min=1), default=None,
              help="Attempts to run at once, each in its own process (default: one per CPU).")
@click.option("--authkey-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the master's key (default: $BLOCKPROC_AUTHKEY).")
@click.option("--once", is_flag=True,
              help="Exit after the first job instead of waiting for the next master.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option("--exit-with", type=int, default=None, hidden=True,
              help="Stop waiting for the master once this process is gone (local workers).")
def worker(address: str, slots: int | None, authkey_file: str | None, once: bool,
           quiet: bool, exit_with: int | None) -> None:
    """Join the master at HOST:PORT and run blocks for it, until Ctrl-C.

    The worker reads its blocks and writes its part-files itself, so it must see the same
    storage as the master (a shared disk at the same path, or URLs such as s3://). The
    connection is authenticated with the shared key but not encrypted.
    """
    from blockproc.executors import default_workers
    from blockproc.executors.cluster import load_authkey, run_worker

    if slots is not None and slots > (bound := api.max_workers())[0]:
        raise ConfigError(
            f"--slots {slots} is more worker processes than this machine can run: at most "
            f"{bound[0]} ({bound[1]}); pass --slots {bound[0]} or fewer, or set the "
            f"environment variable {api.MAX_WORKERS_ENV}={slots} to allow more")
    key = load_authkey(authkey_file)
    if os.getcwd() not in sys.path:  # import the job's modules from here, as `run` does
        sys.path.insert(0, os.getcwd())

    def log(line: str) -> None:
        if not quiet or line.startswith("error"):
            click.echo(f"blockproc worker: {line}", err=True)

    raise SystemExit(run_worker(address, authkey=key, slots=slots or default_workers(),
                                once=once, log=log, exit_with=exit_with))


def _resume_command() -> str:
    args = [a for a in sys.argv[1:] if a != "--resume"]
    cleaned: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--if-exists":
            skip = True
            continue
        if arg.startswith("--if-exists="):
            continue
        cleaned.append(arg)
    return shlex.join(["blockproc", *cleaned, "--resume"])


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@_format_options
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
              help="fsspec storage option (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(inputs: tuple[str, ...], format_name: str, delimiter: str | None,
         encoding: str | None, decode_errors: str, block_size: int,
         format_option: tuple[str, ...], storage_option: tuple[str, ...],
         as_json: bool) -> None:
    """Print the block table of INPUTS without running anything."""
    fmt = _make_format(format_name, delimiter, encoding, decode_errors, format_option)
    p = api.plan(list(inputs), block_size=block_size, format=fmt,
                 storage_options=_parse_key_values(storage_option, "--storage-option"))
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=1))
        return
    click.echo(f"{p!r}  fingerprint {p.fingerprint}")
    for note in _plan_notes(p):
        click.echo(f"note: {note}")
    width = max((len(f.path) + 2 for f in p.files), default=4)
    click.echo(f"{'id':>6}  {'path':<{width}}  {'start':>14}  {'end':>14}  {'size':>10}")
    for b in p.blocks:
        if b.files:  # small files packed whole into one block: one row per file
            click.echo(f"{b.id:>6}  {f'({len(b.files)} files packed)':<{width}}  {'':>14}  "
                       f"{'':>14}  {format_size(b.end - b.start):>10}")
            for f in b.files:
                click.echo(f"{'':>6}  {'  ' + f.path:<{width}}  {0:>14}  {f.size:>14}  "
                           f"{format_size(f.size):>10}")
            continue
        note = "  (compressed: one block)" if p.file(b.path).compression else ""
        click.echo(f"{b.id:>6}  {b.path:<{width}}  {b.start:>14}  {b.end:>14}  "
                   f"{format_size(b.end - b.start):>10}{note}")


def _plan_notes(p: Any) -> list[str]:
    """Return what the plan left out, for the user to see."""
    return [f"skipped {path!r}: a blockproc output (it holds _SUCCESS or _blockproc/) "
            f"inside an input directory" for path in p.skipped]


@cli.command(short_help="Show a finished job's manifest; verify it or chart it.")
@click.argument("output")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--verify", is_flag=True, help="Check every part-file's size and CRC-32.")
@click.option("--timeline", "timeline", metavar="PATH", default=None,
              help="Draw every attempt per worker over time into the local file PATH (a PNG "
                   "chart; needs matplotlib: pip install \"blockproc[plot]\").")
@click.option("--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
              help="fsspec storage option for OUTPUT (repeatable).")
def status(output: str, as_json: bool, verify: bool, timeline: str | None,
           storage_option: tuple[str, ...]) -> None:
    """Show what the manifest of OUTPUT says (exit 1 if the job is unfinished)."""
    options = _parse_key_values(storage_option, "--storage-option")
    st = output_status(output, options)
    if not st.is_finished:
        _echo_unfinished(output, st)
        raise SystemExit(1)
    assert st.manifest is not None
    if as_json:
        click.echo(json.dumps(st.manifest, indent=1))
    else:
        _echo_finished(output, st)
    if timeline is not None:
        _draw_timeline(output, st, timeline, quiet=as_json)
    if verify:
        bad = verify_output(output, options)
        if bad:
            click.echo(f"verify: {len(bad)} part-files missing or changed: {', '.join(bad)}")
            raise SystemExit(1)
        click.echo(f"verify: all {len(st.manifest['blocks'])} part-files match the manifest")


def _echo_unfinished(output: str, st: OutputStatus) -> None:
    from blockproc import report

    click.echo(f"unfinished: {st.num_committed} of {st.num_blocks} blocks committed, no "
               f"{SUCCESS}; rerun the same `blockproc run ... -o {output}` command with "
               f"--resume to finish it")
    if st.num_committed:
        click.echo(f"attempts: the committed blocks took "
                   f"{_plural(st.committed_attempts, 'attempt')}")
    for line in report.what_was_kept(output, st.bad_records, st.blocks_with_stderr,
                                     st.num_committed):
        click.echo(line)
    if st.lock_holder:
        click.echo(f"lock: held by job {st.lock_holder.get('job_id')} (pid "
                   f"{st.lock_holder.get('pid')} on {st.lock_holder.get('host')})")


def _echo_finished(output: str, st: OutputStatus) -> None:
    from blockproc import report

    manifest = st.manifest or {}
    totals = manifest["totals"]
    click.echo(f"job {manifest['job_id']} finished {manifest['finished']} in "
               f"{manifest['seconds']:.2f}s on {manifest['executor']} "
               f"({manifest['workers']} workers)")
    click.echo(f"inputs: {len(manifest['inputs'])} files, "
               f"{format_size(sum(f['size'] for f in manifest['inputs']))}; "
               f"format {manifest['format']['name']}")
    click.echo(f"blocks: {totals['num_blocks']}; records {totals['records_in']:,} in, "
               f"{totals['records_out']:,} out; {format_size(totals['bytes_read'])} read, "
               f"{format_size(totals['bytes_written'])} written")
    for line in report.what_was_kept(output, st.bad_records, st.blocks_with_stderr,
                                     st.num_blocks):
        click.echo(line)
    if not st.attempts:
        return
    counts = ", ".join(f"{n} {s}" for s in report.STATUSES
                       if (n := sum(a.status == s for a in st.attempts)))
    click.echo(f"attempts: {len(st.attempts)} ({counts}); "
               f"{sum(map(report.is_speculative, st.attempts))} speculative")
    if st.earlier_blocks:
        in_all = _plural(st.num_attempts, "attempt")
        click.echo(f"resumed: earlier runs made {_plural(st.earlier_attempts, 'attempt')} and "
                   f"committed {_plural(st.earlier_blocks, 'block')}; {in_all} in all runs")


def _draw_timeline(output: str, st: OutputStatus, timeline: str, *, quiet: bool) -> None:
    from blockproc import report

    manifest, attempts = st.manifest or {}, st.attempts
    if not attempts:
        raise click.ClickException(
            f"the manifest of {output!r} records no attempts (an older blockproc wrote "
            f"it); rerun the job to draw its timeline")
    try:
        report.draw_timeline(attempts, timeline, title=f"blockproc job "
                             f"{manifest['job_id']}: {len(attempts)} attempts, "
                             f"{manifest['seconds']:.2f}s")
    except (ImportError, OSError) as exc:
        raise click.ClickException(f"cannot draw the timeline: {exc}") from None
    if not quiet:
        click.echo(f"timeline: {len(attempts)} attempts on "
                   f"{len({a.worker for a in attempts})} workers, drawn to {timeline}")


@cli.command(short_help="Make a sample access log and extract its server errors.")
@click.option("--size", type=SIZE, default="256MiB", show_default=True,
              help="Size of the sample access log.")
@click.option("-o", "--output", default=None,
              help="Result directory (default: under the cache directory).")
@click.option("--executor", type=click.Choice(EXECUTORS), default="processes",
              show_default=True, help="Where workers run.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Parallel workers (default: one per CPU).")
@click.option("--block-size", type=SIZE, default="32MiB", show_default=True,
              help="Nominal bytes per block.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo(size: int, output: str | None, executor: str, workers: int | None, block_size: int,
         quiet: bool) -> None:
    """Make a sample web access log (cached) and extract its server errors in parallel."""
    from blockproc import _demo

    source, generated = _demo.demo_input_status(size)
    how = "generated now, cached for the next run" if generated else "cached"
    click.echo(f"input:  {source} ({format_size(source.stat().st_size)}, {how})")
    click.echo("job:    map_lines(parse_access_line) -> 'ip,status,bytes' of every 5xx line")
    result = _demo.run_demo(size, output=output, executor=executor, workers=workers,
                            progress=None if not quiet else False, block_size=block_size)
    click.echo(_summary(result))
    click.echo(f"next:   head {result.parts[0] if result.parts else result.output}; "
               f"blockproc status {result.output}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code.

    Every error prints one line, ``error: ...`` (and notes such as a resume command),
    never a traceback unless ``--debug``. SIGTERM stops a job as Ctrl-C does (exit 143).

    Examples
    --------
    >>> main(["run", "in.txt", "-o", "out"])
    2
    """
    _state["debug"] = False
    with _sigterm_as_interrupt(), _warnings_as_lines():
        try:
            cli.main(args=list(argv) if argv is not None else None, prog_name="blockproc",
                     standalone_mode=False)
        except click.exceptions.Exit as exc:
            return int(exc.exit_code)
        except click.ClickException as exc:  # one line, as every other error
            message = exc.format_message()
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                message = f"{message.rstrip('.')}; see '{exc.ctx.command_path} --help'"
            click.echo(f"error: {message}", err=True)
            return int(exc.exit_code)
        except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt into Abort
            if isinstance(exc.__cause__, Terminated):
                return 143
            if not isinstance(exc.__cause__, KeyboardInterrupt):
                click.echo("aborted", err=True)
            return 130
        except Terminated:
            return 143
        except KeyboardInterrupt:
            return 130
        except SystemExit as exc:
            return int(exc.code or 0)
        except Exception as exc:
            return _report(exc)
    return 0


def _report(exc: Exception) -> int:
    """Print ``exc`` as one line (with its traceback under --debug); return the exit code."""
    if _state["debug"]:
        traceback.print_exception(exc)
    code, message = 1, str(exc)
    if isinstance(exc, BlockprocError):
        code = exc.exit_code
    elif isinstance(exc, PermissionError):  # the output or an input, before any work
        code = 2
        message = f"permission denied: {exc}; check the permissions of the paths named"
    elif is_credentials_error(exc):
        code = 2
        message = (f"no credentials ({type(exc).__name__}: {exc}); pass them with "
                   f"--storage-option or the store's environment variables")
    else:
        message = (f"{type(exc).__name__}: {exc} (this is a bug in blockproc: please report "
                   f"it; rerun with --debug for the traceback)")
    lines = message.strip().splitlines() or [type(exc).__name__]
    click.echo(f"error: {lines[0]}", err=True)
    for line in lines[1:]:  # such as a command's stderr: indented under the error
        click.echo(f"  {line}", err=True)
    for note in getattr(exc, "__notes__", []):
        click.echo(note, err=True)
    return code


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Raise :class:`Terminated` in the main thread on SIGTERM, for the time of the CLI."""
    if sys.platform == "win32" or not _in_main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Print each warning as one line, ``warning: ...``, on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")

        def show(message: Warning | str, category: type[Warning], filename: str,
                 lineno: int, file: Any = None, line: str | None = None) -> None:
            click.echo(f"warning: {message}", err=True)

        warnings.showwarning = show
        yield


if __name__ == "__main__":
    raise SystemExit(main())
