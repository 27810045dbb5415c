"""The ``blockproc`` command: ``run``, ``plan``, ``status`` and ``demo``.

A thin layer over :mod:`blockproc.api`: it parses options, calls the API, prints the
result and returns an exit code (``ConfigError`` 2, job failures 1, Ctrl-C 130, SIGTERM
143). Any error prints one line, ``error: ...``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from blockproc import api, job_setup, output_formats
from blockproc._units import format_size
from blockproc.cli.options import (
    SIZE,
    _fold_options,
    _format_options,
    _import_function,
    _make_format,
    _make_output,
    _parse_key_values,
    _print_values,
    _summary,
)
from blockproc.cli.status_command import status
from blockproc.errors import (
    BlockFailedError,
    BlockprocError,
    ConfigError,
    JobError,
    UnfinishedOutputError,
)
from blockproc.executors import EXECUTORS
from blockproc.job import Job, run_job
from blockproc.result import JobResult
from blockproc.storage import is_credentials_error

_state = {"debug": False}
"""Set by ``blockproc --debug``: show tracebacks."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it stops a job as Ctrl-C does."""




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


cli.add_command(status)


@cli.command(short_help="Map a function or a command over the blocks of INPUTS.")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", default=None,
              help="Result directory (local path or URL). Without it, --map and --map-blocks "
                   "print their results to stdout as JSON lines (nothing is written).")
@click.option("--map", "map_spec", metavar="MODULE:FUNC",
              help="Call FUNC(line) on every record; it returns a line, None or several lines.")
@click.option("--map-blocks", "map_blocks_spec", metavar="MODULE:FUNC",
              help="Call FUNC(batch) once per block (batch.records, batch.data, batch.block; "
                   "a pyarrow.Table for csv/jsonl/parquet, a numpy array for fixed).")
@click.option("--cmd", "command", metavar="COMMAND",
              help="Pipe each block through a shell command; its stdout is the part-file.")
@click.option("--combine", "combine_spec", metavar="MODULE:FUNC",
              help="Fold what --map-blocks returns per block with FUNC(acc, partial) (it "
                   "must be associative and commutative) and print the result as JSON.")
@click.option("--initial", "initial_json", metavar="JSON", default=None,
              help="--combine: the value the fold starts from, as JSON (so '{}' is a plain "
                   "dict, not a Counter; default: the first partial).")
@_format_options
@click.option("--output-format", type=click.Choice(output_formats.OUTPUT_FORMATS),
              default=None,
              help="Part-file format: text (.txt, the default), csv, jsonl, parquet, npy, "
                   "or pickle (the default with --combine).")
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
@click.option("--if-exists", type=click.Choice(["error", "overwrite", "resume", "append"]),
              default="error", show_default=True,
              help="What to do when the output is not empty; append: process only what is "
                   "new in the inputs since the output's last run (appended bytes, new files).")
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
def run(inputs: tuple[str, ...], output: str | None, map_spec: str | None,
        map_blocks_spec: str | None, command: str | None, combine_spec: str | None,
        initial_json: str | None, format_name: str,
        delimiter: str | None, encoding: str | None, decode_errors: str, block_size: int,
        format_option: tuple[str, ...], output_format: str | None,
        output_option: tuple[str, ...],
        executor: str, workers: int | None, listen: str | None, authkey_file: str | None,
        scheduler: str | None, if_exists: str, resume: bool, max_attempts: int,
        speculation: bool | None, max_bad_records: int | None, max_record_size: int,
        storage_option: tuple[str, ...], progress: bool | None, quiet: bool) -> None:
    """Map a function or a command over every block of INPUTS into OUTPUT.

    INPUTS are files, globs or directories (names starting with _ or . are skipped).
    Exactly one of --map, --map-blocks or --cmd says what runs on each block.
    Without -o, the results go back to this process and are printed as JSON: one line
    per block's value (--map-blocks) or per result (--map), or the one value --combine
    folds; the summary then goes to stderr.
    """
    chosen = [s for s in (map_spec, map_blocks_spec, command) if s is not None]
    if len(chosen) != 1:
        raise ConfigError("give exactly one of --map MODULE:FUNC, --map-blocks MODULE:FUNC "
                          "or --cmd COMMAND")
    combine, initial = _fold_options(combine_spec, initial_json, map_blocks_spec, output)
    if output is None and command is not None:
        raise ConfigError("--cmd writes its stdout as part-files, which need -o OUT; pass "
                          "-o out/, or use --map/--map-blocks to print results")
    fmt = _make_format(format_name, delimiter, encoding, decode_errors, format_option)
    output_spec = None if output_format is None and not output_option else _make_output(
        output_format or "text", output_option)
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
    job = job_setup.make_job(plan, fn, output=output, per=per, executor=executor,
                             workers=workers, executor_options=executor_options,
                             output_format=output_spec, combine=combine, initial=initial,
                             if_exists="resume" if resume else if_exists,  # type: ignore[arg-type]
                             max_attempts=max_attempts, speculation=speculation,
                             max_bad_records=max_bad_records,
                             max_record_size=max_record_size,
                             progress=False if quiet else progress, storage_options=options)
    result = _run_to_end(job, resumable=output is not None)
    api.check_read_amplification(plan, result)
    printed = output is None or combine is not None
    if printed:
        _print_values(result, per=per, combined=combine is not None)
    if not quiet:
        click.echo(_summary(result), err=printed)


def _run_to_end(job: Job, *, resumable: bool) -> JobResult:
    """Run ``job`` in this thread (so Ctrl-C and pdb work as usual) and return its result;
    an error gets the command that resumes it, if the job has an output to resume."""
    try:
        run_job(job)
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        kept = (f"committed blocks are kept. Resume with:\n  {_resume_command()}"
                if resumable else "the job had no -o output, so a rerun starts over")
        click.echo(f"\n{how}: {kept}", err=True)
        raise
    try:
        return job.result()
    except JobError as exc:
        if isinstance(exc, BlockFailedError) and exc.remote_traceback and _state["debug"]:
            click.echo(f"worker traceback:\n{exc.remote_traceback.rstrip()}", err=True)
        if exc.resumable and resumable:
            exc.add_note(f"committed blocks are kept; after fixing the cause, resume with:\n  "
                         f"{_resume_command()}")
        elif isinstance(exc, BlockFailedError) and not exc.resumable:  # the input changed
            exc.add_note("the input changed since the job was planned; start over with "
                         "--if-exists overwrite")
        raise
    except UnfinishedOutputError as exc:  # left by a crash or a Ctrl-C
        exc.add_note(f"to finish it, run:\n  {_resume_command()}")
        raise


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
    from blockproc.limits import MAX_WORKERS_ENV, max_workers

    if slots is not None and slots > (bound := max_workers())[0]:
        raise ConfigError(
            f"--slots {slots} is more worker processes than this machine can run: at most "
            f"{bound[0]} ({bound[1]}); pass --slots {bound[0]} or fewer, or set the "
            f"environment variable {MAX_WORKERS_ENV}={slots} to allow more")
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
