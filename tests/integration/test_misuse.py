"""The misuse contract: every case of README's "What blockproc refuses, and why", run as a
user runs it.

Each case runs the real command (``python -m blockproc ...``) in a fresh directory of tiny
inputs and asserts:

- the exit code: 2 for anything refused before work starts (usage, options, inputs, the
  output, permissions, credentials), 1 for a job that fails, 130 for Ctrl-C, 143 for
  SIGTERM (0 for the cases that only warn or note);
- one line on stderr that names the problem (``message``) and the fix (``fix``), beyond
  notes such as a resume command, and no traceback (``--debug`` adds one);
- that nothing outside the output directory changed (for a refusal: nothing at all),
  by checksums of the whole directory tree, foreign files included.

Cases with ``api`` run the same misuse through the Python API, which must raise ``error``
(a blockproc exception class) with a message matching ``api_message``.

To add a case: append a :class:`Case` to ``CASES`` and a row with the same id to the
README table; ``test_readme_table_lists_every_case`` keeps the two in step.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import blockproc as bp
from blockproc.formats import Lines

ROOT = Path(__file__).resolve().parents[2]

LINES = [f"{i} {'GET' if i % 3 else 'POST'} {500 if i % 7 == 0 else 200}" for i in range(40)]
DATA = ("\n".join(LINES) + "\n").encode()

MYMOD = '''
import functools
import threading
import time

NOT_CALLABLE = 1


def upper(line):
    return line.upper()


def fail(line):
    if line.startswith("7 "):
        raise ValueError(f"bad record {line!r}")
    return line


def slow(line):
    time.sleep(0.02)
    return line


def returns_int(line):
    return 7


def returns_dict(line):
    return {"line": line}


def records(batch):
    return batch.records


def merge(a, b):
    return a + b


def _echo(lock, line):
    return line


holds_lock = functools.partial(_echo, threading.Lock())


def _with_table(table, line):
    return line


big = functools.partial(_with_table, b"x" * (12 * 2**20))
'''

NOTE = re.compile(r"^(note: |  |committed blocks are kept|to finish it, run:|the input changed "
                  r"since)")
"""Lines a case may print beyond its one message line: notes, and indented lines under it
(a resume command, a command's stderr)."""


def _offline_env() -> dict[str, str]:
    """An environment with no cloud credentials and no metadata service to ask."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "BLOCKPROC_", "GOOGLE_", "AZURE_"))}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, PYTHONDONTWRITEBYTECODE="1")
    return env


# -- set-ups: each gets the case's fresh directory -------------------------------------------


def _no_setup(ws: Path) -> None:
    pass


def _fifo(ws: Path, path: str = "pipe") -> None:
    os.mkfifo(ws / path)


def _socket(ws: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:  # the socket file stays after close
        s.bind(str(ws / "sock"))


def _empty_dir(ws: Path) -> None:
    (ws / "empty").mkdir()
    (ws / "empty" / ".hidden").write_text("not an input\n")


def _big_log(ws: Path) -> None:  # 12.4 MB: 124,320 blocks of 100 B
    (ws / "big").mkdir()
    (ws / "big" / "big.log").write_bytes(DATA * 28000)


def _huge_sparse(ws: Path) -> None:  # 70 GB of holes: planning reads nothing but its size
    (ws / "huge").mkdir()
    with open(ws / "huge" / "huge.log", "wb") as f:
        f.truncate(70 * 10**9)


def _foreign_subdir(ws: Path) -> None:
    (ws / "mine" / "photos").mkdir()
    (ws / "mine" / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")


def _finished_output(ws: Path) -> None:
    bp.map_lines(str.upper, str(ws / "data" / "access.log"), output=str(ws / "out"),
                 executor="inline")


def _truncated_after_run(ws: Path) -> None:
    _finished_output(ws)
    log = ws / "data" / "access.log"
    log.write_bytes(log.read_bytes()[:100])


def _rotated_after_run(ws: Path) -> None:
    bp.map_lines(str.upper, str(ws / "data"), output=str(ws / "out"), executor="inline")
    log = ws / "data" / "access.log"
    log.rename(ws / "data" / "access.log.1")
    log.write_bytes(b"1 GET 200\n")


def _old_output_in_data(ws: Path) -> None:
    bp.map_lines(str.upper, str(ws / "data" / "access.log"), output=str(ws / "data" / "old"),
                 executor="inline")


def _locked_output(ws: Path) -> None:
    from blockproc.output.lock import OutputLock
    from blockproc.storage import filesystem

    OutputLock(filesystem("file"), str(ws / "out" / "_blockproc"), "job-another",
               url=str(ws / "out")).acquire()


def _read_only_parent(ws: Path) -> None:
    (ws / "ro").mkdir()
    (ws / "ro" / "keep.txt").write_text("mine\n")
    os.chmod(ws / "ro", 0o555)
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: make it immutable
        done = subprocess.run(["chattr", "+i", str(ws / "ro")], capture_output=True,
                              check=False)
        if done.returncode != 0:
            pytest.skip("running as root and chattr +i is not available here")


def _undo_read_only(ws: Path) -> None:
    if (ws / "ro").exists():
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(ws / "ro")], capture_output=True, check=False)
        os.chmod(ws / "ro", 0o755)


def _long_record(ws: Path) -> None:  # one 1.1 MiB record: every 64 KiB block reads to its end
    (ws / "long").mkdir()
    (ws / "long" / "one.log").write_bytes(b"a\n" + b"x" * (1100 * 2**10) + b"\nb\n")


def _hadoop_output(ws: Path) -> None:  # Hadoop and Spark mark success with an empty file
    (ws / "spark-out").mkdir()
    (ws / "spark-out" / "_SUCCESS").write_bytes(b"")
    (ws / "spark-out" / "part-00000").write_text("a\n")


def _latin1(ws: Path) -> None:
    (ws / "latin").mkdir()
    (ws / "latin" / "names.txt").write_bytes("José\nZoë\n".encode("latin-1"))


def _truncated_gz(ws: Path) -> None:
    import gzip

    (ws / "gz").mkdir()
    (ws / "gz" / "access.log.gz").write_bytes(gzip.compress(DATA * 50)[:-40])


def _parquet_without_footer(ws: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (ws / "pq").mkdir()
    pq.write_table(pa.table({"line": LINES}), ws / "pq" / "whole.parquet")
    data = (ws / "pq" / "whole.parquet").read_bytes()
    (ws / "pq" / "whole.parquet").unlink()
    (ws / "pq" / "cut.parquet").write_bytes(data[:-30])


def _csv_unclosed_quote(ws: Path) -> None:
    (ws / "csvq").mkdir()
    (ws / "csvq" / "bad.csv").write_bytes(b'id,text\n1,"ok"\n2,"never closed\n3,x\n')


def _csv_malformed_row(ws: Path) -> None:
    (ws / "csvm").mkdir()
    (ws / "csvm" / "bad.csv").write_bytes(b"id,text\n1,a\n2,b,extra\n")


# -- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One misuse: the CLI arguments and what must come of them."""

    id: str
    args: tuple[str, ...]
    exit_code: int
    message: str
    """A regex the one stderr line must match: it names the problem."""
    fix: str
    """A regex that stderr must match: it names the fix."""
    setup: Callable[[Path], None] = _no_setup
    env: Mapping[str, str] = field(default_factory=dict)
    api: Callable[[Path], Any] | None = None
    """The same misuse through the Python API (cwd is the case's directory)."""
    error: type[Exception] | None = None
    """What ``api`` raises (or warns, for a Warning class)."""
    api_message: str | None = None
    """A regex the API's message must match; default ``message``."""
    signal: int | None = None
    """Send this signal once the job has committed a block."""
    output: str = "out"
    """The output directory, the only place that may change (when exit code is not 2)."""


MAP = ("--map", "mymod:upper")
RUN = ("run", "data/access.log", "-o", "out")


def run_upper(ws: Path, **kw: Any) -> bp.JobResult:
    """``map_lines(str.upper)`` of the standard input into ``out``, inline unless told."""
    options: dict[str, Any] = {"output": "out", "executor": "inline"}
    options.update(kw)
    src = options.pop("src", "data/access.log")
    return bp.map_lines(str.upper, src, **options)


def _unpicklable(ws: Path) -> Any:
    lock = threading.Lock()
    return bp.map_lines(lambda line: (lock, line)[1], "data/access.log", output="out",
                        executor="processes")


def _large_function(ws: Path) -> Any:
    table = b"x" * (12 * 2**20)
    return bp.map_lines(lambda line: line if table else None, "data/access.log",
                        output="out", executor="processes", workers=1)


CASES: list[Case] = [
    # usage: what click checks
    Case("unknown-command", ("frob",), 2, r"No such command 'frob'", r"blockproc --help"),
    Case("cmd-without-output", ("run", "data/access.log", "--cmd", "cat"), 2,
         r"--cmd writes its stdout as part-files, which need -o OUT", r"pass -o out/"),
    Case("combine-without-map-blocks", ("run", "data/access.log", *MAP, "--combine",
                                        "mymod:merge"), 2,
         r"--combine folds what --map-blocks returns per block", r"--map-blocks MODULE:FUNC"),
    Case("initial-not-json", ("run", "data/access.log", "--map-blocks", "mymod:records",
                              "--combine", "mymod:merge", "--initial", "{nope"), 2,
         r"--initial '\{nope' is not JSON", r"--initial 0"),
    Case("initial-without-combine", ("run", "data/access.log", "--map-blocks",
                                     "mymod:records", "--initial", "0"), 2,
         r"--initial is the start of a --combine fold", r"drop --initial"),
    Case("output-format-without-output", ("run", "data/access.log", "--map-blocks",
                                          "mymod:records", "--output-format", "csv"), 2,
         r"output_format='csv' writes part-files, which need output=", r"-o out/",
         api=lambda ws: bp.map_blocks(len, "data/access.log", output_format="csv"),
         error=bp.ConfigError),
    Case("resume-without-output", ("run", "data/access.log", "--map-blocks", "mymod:records",
                                   "--resume"), 2,
         r"if_exists='resume' is about an output directory, and this job has none",
         r"pass output='out/'",
         api=lambda ws: bp.map_blocks(len, "data/access.log", if_exists="resume"),
         error=bp.ConfigError),
    Case("value-over-the-block-limit", ("run", "data/access.log", "--map-blocks",
                                        "mymod:records"), 1,
         r"block 0 of 1 .* returned a value of .* over the limit of 100 B per block "
         r"\(BLOCKPROC_MAX_BLOCK_VALUE\)", r"output=.*reduce_blocks",
         env={"BLOCKPROC_MAX_BLOCK_VALUE": "100B"},
         api=lambda ws: bp.map_blocks(lambda b: b.records, "data/access.log",
                                      executor="inline"),
         error=bp.BlockFailedError),
    Case("unknown-option", (*RUN, *MAP, "--frobnicate"), 2, r"No such option '--frobnicate'",
         r"blockproc run --help"),
    Case("block-size-zero", (*RUN, *MAP, "--block-size", "0"), 2,
         r"--block-size.*must be >= 1 byte", r"--help",
         api=lambda ws: bp.plan("data/access.log", block_size=0), error=bp.ConfigError,
         api_message=r"block_size must be >= 1 byte.*'64MiB'"),
    Case("block-size-not-a-size", (*RUN, *MAP, "--block-size", "lots"), 2,
         r"--block-size.*'lots'", r"64MiB",
         api=lambda ws: bp.plan("data/access.log", block_size="lots"), error=bp.ConfigError,
         api_message=r"'lots'.*64MiB"),
    Case("workers-zero", (*RUN, *MAP, "--workers", "0"), 2, r"--workers.*0", r"--help",
         api=lambda ws: run_upper(ws, workers=0, executor="processes"), error=bp.ConfigError,
         api_message=r"workers must be a positive int, got 0"),
    Case("unknown-format", (*RUN, *MAP, "--format", "xml"), 2,
         r"--format.*'xml' is not one of", r"'csv', 'delimited'.*'lines'",
         api=lambda ws: bp.plan("data/access.log", format="xml"), error=bp.ConfigError,
         api_message=r"'xml'.*lines"),
    Case("unknown-executor", (*RUN, *MAP, "--executor", "gpu"), 2, r"--executor.*'gpu'",
         r"'processes'",
         api=lambda ws: run_upper(ws, executor="gpu"), error=bp.ConfigError,
         api_message=r"unknown executor 'gpu'; choose one of inline, threads, processes"),
    Case("max-attempts-zero", (*RUN, *MAP, "--max-attempts", "0"), 2,
         r"--max-attempts.*0", r"--help",
         api=lambda ws: run_upper(ws, max_attempts=0), error=bp.ConfigError,
         api_message=r"max_attempts must be an int >= 1, got 0"),
    Case("unknown-output-format", (*RUN, *MAP, "--output-format", "xml"), 2,
         r"--output-format.*'xml'", r"'text'",
         api=lambda ws: run_upper(ws, output_format="xml"), error=bp.ConfigError,
         api_message=r"'xml'.*text"),
    # options blockproc checks
    Case("no-mapper", RUN, 2, r"give exactly one of",
         r"--map MODULE:FUNC, --map-blocks MODULE:FUNC or --cmd COMMAND"),
    Case("two-mappers", (*RUN, *MAP, "--cmd", "cat"), 2, r"give exactly one of",
         r"--map MODULE:FUNC"),
    Case("map-not-module-colon-function", (*RUN, "--map", "mymod"), 2,
         r"--map 'mymod' must look like 'module:function'", r"'mymod:parse'"),
    Case("map-module-not-found", (*RUN, "--map", "nosuchmod:f"), 2,
         r"cannot import module 'nosuchmod'", r"run blockproc from the directory that holds"),
    Case("map-function-not-found", (*RUN, "--map", "mymod:nosuch"), 2,
         r"module 'mymod' has no 'nosuch'", r"it has: .*upper"),
    Case("map-not-callable", (*RUN, "--map", "mymod:NOT_CALLABLE"), 2,
         r"'mymod:NOT_CALLABLE' is not callable", r"name a function"),
    Case("map-syntax-error", (*RUN, "--map", "broken:f"), 2,
         r"module 'broken' has a syntax error .*broken\.py, line 1", r"python -c 'import broken'"),
    Case("map-import-raises", (*RUN, "--map", "raising:f"), 2,
         r"importing module 'raising' raised RuntimeError: no config", r"fix the module"),
    Case("delimiter-without-delimited", (*RUN, *MAP, "--delimiter", ";"), 2,
         r"--delimiter needs --format delimited", r"--format delimited or --format raw"),
    Case("format-option-for-lines", (*RUN, *MAP, "--format-option", "sep=;"), 2,
         r"--format-option is for csv, jsonl, parquet and fixed", r"not --format lines"),
    Case("format-option-not-key-value", (*RUN, *MAP, "--format", "csv", "--format-option",
                                         "sep"), 2,
         r"--format-option 'sep' must look like key=value", r"key=value"),
    Case("format-option-bad-json", (*RUN, *MAP, "--format", "csv", "--format-option",
                                    "column_types={bad"), 2,
         r"--format-option 'column_types=\{bad': the value is not valid JSON",
         r"""column_types='\{"n": "int64"\}'"""),
    Case("format-option-unknown", (*RUN, *MAP, "--format", "csv", "--format-option",
                                   "frob=1"), 2,
         r"--format-option for --format csv: .*'frob'", r"options of csv: .*sep"),
    Case("fixed-without-layout", (*RUN, *MAP, "--format", "fixed"), 2,
         r"format 'fixed' needs a record layout",
         r"--format-option dtype='<f8' or --format-option record_size=16",
         api=lambda ws: bp.plan("data/access.log", format="fixed"), error=bp.ConfigError,
         api_message=r"needs a record layout.*Fixed\(record_size=N\)"),
    Case("unknown-encoding", (*RUN, *MAP, "--encoding", "klingon"), 2,
         r"unknown encoding: klingon", r"'utf-8', 'latin-1'",
         api=lambda ws: bp.plan("data/access.log", format=Lines("klingon")),
         error=bp.ConfigError, api_message=r"unknown encoding: klingon"),
    Case("unknown-errors-handler", (*RUN, *MAP, "--errors", "frob"), 2,
         r"unknown error handler name 'frob'", r"'strict', 'replace'",
         api=lambda ws: bp.plan("data/access.log", format=Lines("utf-8", "frob")),
         error=bp.ConfigError, api_message=r"'frob'"),
    Case("output-option-unknown", (*RUN, *MAP, "--output-format", "csv", "--output-option",
                                   "frob=1"), 2,
         r"--output-option for --output-format csv: .*'frob'", r"options of csv: .*header"),
    Case("cmd-empty", (*RUN, "--cmd", " "), 2, r"the command is empty", r"'grep ERROR'",
         api=lambda ws: bp.map_command(" ", "data/access.log", output="out"),
         error=bp.ConfigError),
    Case("cmd-with-parquet-output", (*RUN, "--cmd", "cat", "--output-format", "parquet"), 2,
         r"output_format must be text, csv or jsonl, not 'parquet'", r"map_blocks",
         api=lambda ws: bp.map_command("cat", "data/access.log", output="out",
                                       output_format="parquet"),
         error=bp.ConfigError),
    Case("storage-option-not-key-value", (*RUN, *MAP, "--storage-option", "anon"), 2,
         r"--storage-option 'anon' must look like key=value", r"key=value"),
    Case("listen-without-cluster", (*RUN, *MAP, "--listen", "127.0.0.1:0"), 2,
         r"--listen and --authkey-file need --executor cluster", r"--executor cluster"),
    Case("scheduler-without-dask", (*RUN, *MAP, "--scheduler", "tcp://127.0.0.1:1"), 2,
         r"--scheduler needs --executor dask", r"--executor dask"),
    Case("unpicklable-function", (*RUN, "--map", "mymod:holds_lock"), 2,
         r"cannot send .* to worker processes: TypeError: cannot pickle '_thread.lock'",
         r"module-level function.*executor='threads'",
         api=_unpicklable, error=bp.ConfigError),
    Case("memory-output-with-processes", (*RUN[:3], "memory://elsewhere/out", *MAP), 2,
         r"the output is on memory://, which each process has its own copy of",
         r"executor='threads' or 'inline'",
         api=lambda ws: run_upper(ws, output="memory://elsewhere/out", executor="processes"),
         error=bp.ConfigError, output="memory://elsewhere/out"),
    Case("workers-over-machine-bound", (*RUN, *MAP, "--workers", "100000"), 2,
         r"workers=100000 is more worker processes than this machine can run: at most \d+ "
         r"\(8 per CPU", r"--workers \d+\), or set the environment variable "
                        r"BLOCKPROC_MAX_WORKERS=100000",
         api=lambda ws: run_upper(ws, workers=100000, executor="processes"),
         error=bp.ConfigError, api_message=r"at most \d+ .*BLOCKPROC_MAX_WORKERS=100000"),
    Case("worker-slots-over-machine-bound", ("worker", "--connect", "127.0.0.1:9", "--slots",
                                             "100000"), 2,
         r"--slots 100000 is more worker processes than this machine can run: at most \d+",
         r"--slots \d+ or fewer, or set the environment variable BLOCKPROC_MAX_WORKERS=100000"),
    Case("max-workers-env-not-a-number", (*RUN, *MAP, "--workers", "2"), 2,
         r"BLOCKPROC_MAX_WORKERS='lots' must be a whole number >= 1", r"whole number",
         env={"BLOCKPROC_MAX_WORKERS": "lots"},
         api=lambda ws: run_upper(ws, workers=2, executor="processes"), error=bp.ConfigError),
    Case("block-size-far-too-small", ("run", "big", "-o", "out", *MAP, "--block-size", "100"),
         2, r"block_size=100 B cuts 11\.9 MiB of input into 124,320 blocks; blocks under "
            r"64\.0 KiB", r"--block-size 64KiB",
         setup=_big_log, api=lambda ws: bp.plan("big", block_size=100), error=bp.ConfigError,
         api_message=r"124,320 blocks.*block_size='64KiB'"),
    Case("more-than-a-million-blocks", ("run", "huge", "-o", "out", *MAP, "--block-size",
                                        "64KiB"), 2,
         r"cuts 65\.2 GiB of input into 1,068,116 blocks; more than the limit of 1,000,000",
         r"--block-size 1MiB", setup=_huge_sparse,
         api=lambda ws: bp.plan("huge", block_size="64KiB"), error=bp.ConfigError,
         api_message=r"1,068,116 blocks"),
    Case("unknown-protocol", ("run", "nosuch://bucket/in.log", "-o", "out", *MAP), 2,
         r"cannot open 'nosuch://bucket/in.log': unknown protocol 'nosuch'",
         r"check the URL \(fsspec knows file, s3",
         api=lambda ws: bp.plan("nosuch://bucket/in.log"), error=bp.ConfigError),
    Case("protocol-package-missing", ("run", "gs://bucket/in.log", "-o", "out", *MAP), 2,
         r"the gs:// protocol needs the gcsfs package", r"pip install gcsfs",
         api=lambda ws: bp.plan("gs://bucket/in.log"), error=bp.ConfigError),
    # inputs
    Case("input-not-found", ("run", "data/nosuch.log", "-o", "out", *MAP), 2,
         r"input 'data/nosuch.log' does not exist", r"check the path",
         api=lambda ws: bp.plan("data/nosuch.log"), error=bp.NoInputFilesError),
    Case("glob-matches-nothing", ("run", "data/*.csv", "-o", "out", *MAP), 2,
         r"the glob 'data/\*\.csv' matched no files", r"check the pattern",
         api=lambda ws: bp.plan("data/*.csv"), error=bp.NoInputFilesError),
    Case("directory-without-inputs", ("run", "empty", "-o", "out", *MAP), 2,
         r"the directory 'empty' holds no input files", r"names starting with '_' or '\.'",
         setup=_empty_dir, api=lambda ws: bp.plan("empty"), error=bp.NoInputFilesError),
    Case("input-is-a-fifo", ("run", "pipe", "-o", "out", *MAP), 2,
         r"input '.*/pipe' is a FIFO \(named pipe\), not a regular file",
         r"write the data to a file", setup=_fifo,
         api=lambda ws: bp.plan("pipe"), error=bp.InputError),
    Case("input-is-dev-null", ("run", "/dev/null", "-o", "out", *MAP), 2,
         r"input '/dev/null' is a character device", r"write the data to a file",
         api=lambda ws: bp.plan("/dev/null"), error=bp.InputError),
    Case("input-is-dev-zero", ("run", "/dev/zero", "-o", "out", *MAP), 2,
         r"input '/dev/zero' is a character device", r"write the data to a file",
         api=lambda ws: bp.plan("/dev/zero"), error=bp.InputError),
    Case("input-is-a-socket", ("run", "sock", "-o", "out", *MAP), 2,
         r"input '.*/sock' is a socket", r"write the data to a file", setup=_socket,
         api=lambda ws: bp.plan("sock"), error=bp.InputError),
    Case("fifo-inside-input-directory", ("run", "data", "-o", "out", *MAP), 2,
         r"input '.*/data/pipe' is a FIFO", r"write the data to a file",
         setup=functools.partial(_fifo, path="data/pipe"),
         api=lambda ws: bp.plan("data"), error=bp.InputError),
    Case("output-is-the-input-directory", ("run", "data", "-o", "data", *MAP), 2,
         r"output '.*/data' is inside the input directory '.*/data'",
         r"choose an output directory outside it",
         api=lambda ws: run_upper(ws, src="data", output="data"), error=bp.ConfigError),
    Case("output-inside-input-directory", ("run", "data", "-o", "data/out", *MAP), 2,
         r"output '.*/data/out' is inside the input directory '.*/data', which is read "
         r"recursively", r"choose an output directory outside it",
         api=lambda ws: run_upper(ws, src="data", output="data/out"), error=bp.ConfigError),
    Case("output-contains-the-input", ("run", "data/access.log", "-o", "data", *MAP), 2,
         r"output '.*/data' contains the input", r"choose an output directory outside them",
         api=lambda ws: run_upper(ws, output="data"), error=bp.ConfigError),
    Case("output-empty", (*RUN[:3], "", *MAP), 2, r"output is empty",
         r"pass the result directory, such as 'out/'",
         api=lambda ws: run_upper(ws, output=""), error=bp.ConfigError),
    Case("output-is-a-file", (*RUN[:3], "notes.txt", *MAP), 2,
         r"output '.*notes.txt' is a file, not a directory", r"choose another output path",
         api=lambda ws: run_upper(ws, output="notes.txt"), error=bp.OutputExistsError),
    # the output directory
    Case("output-below-a-file", (*RUN[:3], "notes.txt/out", *MAP), 2,
         r"output '.*/notes\.txt/out' is below '.*/notes\.txt', which is a file",
         r"choose another output path",
         api=lambda ws: run_upper(ws, output="notes.txt/out"), error=bp.ConfigError),
    Case("output-holds-foreign-files", (*RUN[:3], "mine", *MAP), 2,
         r"output '.*/mine' holds files blockproc did not write \(notes\.txt, photo\.jpg\)",
         r"choose a new or empty output directory",
         api=lambda ws: run_upper(ws, output="mine"), error=bp.OutputExistsError),
    Case("overwrite-foreign-files", (*RUN[:3], "mine", *MAP, "--if-exists", "overwrite"), 2,
         r"output '.*/mine' .*notes\.txt", r"choose another output|empty",
         api=lambda ws: run_upper(ws, output="mine", if_exists="overwrite"),
         error=bp.OutputExistsError),
    Case("overwrite-foreign-subdirectory", (*RUN[:3], "mine", *MAP, "--if-exists",
                                            "overwrite"), 2,
         r"output '.*/mine' .*photos", r"choose another output|empty", setup=_foreign_subdir,
         api=lambda ws: run_upper(ws, output="mine", if_exists="overwrite"),
         error=bp.OutputExistsError),
    Case("resume-foreign-directory", (*RUN[:3], "mine", *MAP, "--resume"), 2,
         r"output '.*/mine'", r"notes\.txt",
         api=lambda ws: run_upper(ws, output="mine", if_exists="resume"),
         error=bp.OutputExistsError),
    Case("output-holds-finished-job", (*RUN, *MAP), 2,
         r"output '.*/out' already exists and holds a finished blockproc job",
         r"--if-exists overwrite", setup=_finished_output,
         api=run_upper, error=bp.OutputExistsError),
    Case("resume-with-another-plan", (*RUN, *MAP, "--resume", "--block-size", "64"), 2,
         r"cannot resume into '.*/out': it was written by a job with a different plan",
         r"overwrite", setup=_finished_output,
         api=lambda ws: run_upper(ws, if_exists="resume", block_size=64),
         error=bp.OutputExistsError),
    Case("resume-with-another-output-format", (*RUN, *MAP, "--resume", "--output-format",
                                                "jsonl"), 2,
         r"cannot resume into '.*/out': it holds part-files such as part-00000\.txt, and this "
         r"job writes \.jsonl files", r"same output_format.*overwrite", setup=_finished_output,
         api=lambda ws: run_upper(ws, if_exists="resume", output_format="jsonl"),
         error=bp.ConfigError),
    Case("append-after-truncation", (*RUN, *MAP, "--if-exists", "append"), 2,
         r"'.*access.log' has 100 bytes, fewer than the \d+ an earlier run processed: it was "
         r"truncated, rewritten or rotated", r"--if-exists overwrite",
         setup=_truncated_after_run,
         api=lambda ws: run_upper(ws, if_exists="append"), error=bp.InputChangedError),
    Case("append-after-rotation", ("run", "data", "-o", "out", *MAP, "--if-exists", "append"),
         2, r"'.*access.log' has 10 bytes, fewer than .* access.log.1 is a new file to "
         r"blockproc and access.log a changed one", r"--if-exists overwrite",
         setup=_rotated_after_run,
         api=lambda ws: run_upper(ws, src="data", if_exists="append"),
         error=bp.InputChangedError),
    Case("append-with-another-block-size",
         (*RUN, *MAP, "--if-exists", "append", "--block-size", "64"), 2,
         r"the earlier runs into this output used block_size=67108864, and an append run must "
         r"cut the same blocks", r"--block-size 67108864",
         setup=_finished_output,
         api=lambda ws: run_upper(ws, if_exists="append", block_size=64), error=bp.ConfigError),
    Case("output-locked-by-live-job", (*RUN, *MAP), 2,
         r"output '.*/out' is being written by job job-another", r"wait|another output",
         setup=_locked_output,
         api=run_upper, error=bp.OutputLockedError),
    Case("output-not-writable", (*RUN[:3], "ro/out", *MAP), 2,
         r"cannot write the output '.*/ro/out': permission denied on '.*/ro'",
         r"choose an output directory you can write to", setup=_read_only_parent,
         api=lambda ws: run_upper(ws, output="ro/out"), error=bp.AccessError),
    Case("s3-input-without-credentials",
         ("run", "s3://blockproc-misuse/in.log", "-o", "out", *MAP, "--storage-option",
          "client_kwargs={\"region_name\": \"us-east-1\"}"), 2,
         r"no credentials to reach 's3://blockproc-misuse/in.log' \(NoCredentialsError",
         r"AWS_ACCESS_KEY_ID .* anon=true",
         api=lambda ws: bp.plan("s3://blockproc-misuse/in.log",
                                storage_options={"client_kwargs": {"region_name": "us-east-1"}}),
         error=bp.AccessError),
    Case("s3-output-without-credentials", (*RUN[:3], "s3://blockproc-misuse/out", *MAP), 2,
         r"no credentials to reach 's3://blockproc-misuse/out' \(NoCredentialsError",
         r"AWS_ACCESS_KEY_ID .* anon=true",
         api=lambda ws: run_upper(ws, output="s3://blockproc-misuse/out"),
         error=bp.AccessError, output="s3://blockproc-misuse/out"),
    # warnings and notes: the job runs
    Case("large-function", (*RUN, "--map", "mymod:big", "--workers", "1"), 0,
         r"warning: the function _with_table pickles to 12\.0 MiB \(more than 10\.0 MiB\), "
         r"which is copied to every worker process", r"load it inside the function from a file",
         api=_large_function, error=UserWarning, api_message=r"pickles to 12\.0 MiB"),
    Case("blockproc-output-inside-input-directory", ("run", "data", "-o", "out", *MAP), 0,
         r"note: skipped '.*/data/old': a blockproc output", r"inside an input directory",
         setup=_old_output_in_data),
    Case("records-longer-than-blocks", ("run", "long", "-o", "out", "--cmd", "cat",
                                        "--block-size", "64KiB"), 0,
         r"warning: the blocks read \d+x the input \(.* for 1\.1 MiB\): records are much "
         r"longer than block_size=64\.0 KiB", r"pass a block size larger than the longest "
                                                r"record \(CLI: --block-size\)",
         setup=_long_record,
         api=lambda ws: run_upper(ws, src="long", block_size="64KiB"), error=UserWarning,
         api_message=r"the blocks read \d+x the input"),
    # jobs that fail
    Case("function-raises", (*RUN, "--map", "mymod:fail", "--max-attempts", "1"), 1,
         r"block 0 of 1 \(.*access\.log \[0, \d+\)\) failed.*ValueError: bad record '7 ",
         r"resume with:"),
    Case("cmd-not-found", (*RUN, "--cmd", "no-such-command-xyz"), 1,
         r"block 0 of 1 .*failed.*no-such-command-xyz", r"resume with:"),
    Case("cmd-exits-non-zero", (*RUN, "--cmd", "echo broken >&2; exit 3", "--max-attempts",
                                "1"), 1,
         r"block 0 of 1 .*failed on all 1 attempts.*'echo broken >&2; exit 3' exited with "
         r"code 3", r"  broken"),
    Case("undecodable-input", ("run", "latin", "-o", "out", *MAP, "--max-attempts", "1"), 1,
         r"block 0 of 1 .*names\.txt.*failed and was not retried.*cannot decode the input "
         r"as 'utf-8' at byte 3", r"--errors replace", setup=_latin1),
    Case("too-many-bad-records", (*RUN, "--map", "mymod:fail", "--max-bad-records", "0",
                                  "--max-attempts", "1"), 1,
         r"failed.*ValueError: bad record '7 ", r"resume with:"),
    # jobs that fail at once: the same error would happen on every attempt
    Case("return-int-for-text", (*RUN, "--map", "mymod:returns_int"), 1,
         r"block 0 of 1 .*failed and was not retried.*ReturnTypeError: for record 0 of block "
         r"0 of 1 \(.*access\.log \[0, \d+\)\) at byte offset 0 \('0 POST 500'\): the "
         r"function returned int 7", r"output_format='text' accepts str or bytes \(one line\)",
         api=lambda ws: bp.map_lines(lambda line: 7, "data/access.log", output="out",
                                     executor="inline"),
         error=bp.BlockFailedError, api_message=r"not retried.*returned int 7"),
    Case("return-dict-for-text", (*RUN, "--map", "mymod:returns_dict"), 1,
         r"failed and was not retried.*at byte offset 0 .*returned dict \{'line': '0 POST 500'\}",
         r"output_format='text' accepts str or bytes",
         api=lambda ws: bp.map_lines(lambda line: {"line": line}, "data/access.log",
                                     output="out", executor="inline"),
         error=bp.BlockFailedError, api_message=r"not retried.*returned dict"),
    Case("return-int-per-block", (*RUN, "--map-blocks", "mymod:returns_int"), 1,
         r"failed and was not retried.*for block 0 of 1 \(.*access\.log \[0, \d+\)\): the "
         r"function returned int 7", r"accepts str or bytes \(written as is\)",
         api=lambda ws: bp.map_blocks(lambda batch: 7, "data/access.log", output="out",
                                      executor="inline"),
         error=bp.BlockFailedError, api_message=r"not retried.*returned int 7"),
    Case("cmd-not-executable", (*RUN, "--cmd", "./notes.txt"), 1,
         r"failed and was not retried.*command './notes.txt' cannot be run \(not executable\)",
         r"on the PATH of every worker",
         api=lambda ws: bp.map_command("./notes.txt", "data/access.log", output="out",
                                       executor="inline"),
         error=bp.BlockFailedError, api_message=r"not retried.*exited with code 126"),
    Case("truncated-gz", ("run", "gz/access.log.gz", "-o", "out", *MAP), 1,
         r"failed and was not retried.*'.*access\.log\.gz' is not a complete gzip stream",
         r"truncated or corrupt.*re-create or re-download it", setup=_truncated_gz,
         api=lambda ws: run_upper(ws, src="gz/access.log.gz"), error=bp.BlockFailedError,
         api_message=r"not retried.*not a complete gzip stream"),
    Case("parquet-without-footer", ("run", "pq/cut.parquet", "-o", "out", *MAP,
                                    "--format", "parquet"), 1,
         r"failed and was not retried.*does not end with a Parquet footer",
         r"truncated or not Parquet: re-create it", setup=_parquet_without_footer,
         api=lambda ws: bp.map_lines(str, "pq/cut.parquet", output="out", executor="inline",
                                     format="parquet"),
         error=bp.BlockFailedError, api_message=r"not retried.*Parquet footer"),
    Case("csv-malformed-row", ("run", "csvm/bad.csv", "-o", "out", *MAP, "--format", "csv"),
         1, r"failed and was not retried.*cannot parse the rows as CSV.*Expected 2 columns",
         r"fix the input, or check the format options", setup=_csv_malformed_row,
         api=lambda ws: bp.map_lines(str, "csvm/bad.csv", output="out", executor="inline",
                                     format="csv"),
         error=bp.BlockFailedError, api_message=r"not retried.*cannot parse the rows as CSV"),
    # refused at plan time
    Case("csv-unclosed-quote", ("run", "csvq/bad.csv", "-o", "out", *MAP, "--format", "csv"),
         2, r"'.*bad\.csv': the quote at byte offset 17 is never closed, so the rest of the "
            r"file \(18 bytes\) would be read as one field",
         r"--format-option allow_unclosed_quote=true", setup=_csv_unclosed_quote,
         api=lambda ws: bp.plan("csvq/bad.csv", format="csv"), error=bp.InputError),
    # interrupted
    Case("ctrl-c", (*RUN, "--map", "mymod:slow", "--block-size", "64", "--workers", "1"),
         130, r"interrupted: committed blocks are kept\. Resume with:",
         r"  blockproc run data/access\.log -o out --map mymod:slow .*--resume",
         signal=signal.SIGINT),
    Case("sigterm", (*RUN, "--map", "mymod:slow", "--block-size", "64", "--workers", "1"),
         143, r"terminated \(SIGTERM\): committed blocks are kept\. Resume with:",
         r"  blockproc run data/access\.log -o out --map mymod:slow .*--resume",
         signal=signal.SIGTERM),
    # status
    Case("status-of-a-foreign-directory", ("status", "mine"), 2,
         r"'mine' holds no blockproc output", r"check the path"),
    Case("status-of-a-hadoop-output", ("status", "spark-out"), 2,
         r"'spark-out' holds a _SUCCESS that is not a blockproc manifest", r"check the path",
         setup=_hadoop_output),
]


# -- the workspace and its checksums -------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory with the inputs, modules and foreign files every case starts from."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "access.log").write_bytes(DATA)
    (tmp_path / "mymod.py").write_text(MYMOD)
    (tmp_path / "broken.py").write_text("def f(line)\n    return line\n")
    (tmp_path / "raising.py").write_text("raise RuntimeError('no config')\n")
    (tmp_path / "notes.txt").write_text("a file of mine\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes\n")
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"\xff\xd8 not really a photo")
    yield tmp_path
    _undo_read_only(tmp_path)


def refusal_skip(ws: Path, case: Case) -> Path | None:
    """What a case may change: its output for a job that ran; for a refusal nothing, but
    the job state (``_blockproc/``, say a lock generation) of an output that held one."""
    if "://" in case.output:
        return None
    output = ws / case.output
    if case.exit_code != 2:
        return output
    return output / "_blockproc" if (output / "_blockproc").is_dir() else None


def tree_state(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Return a checksum per entry under ``root`` (not below ``skip``): file contents (size
    and mtime for files over 1 MiB, such as a sparse one), modes, special files' kinds."""
    state: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        st = path.lstat()
        kind = stat.S_IFMT(st.st_mode)
        key = str(path.relative_to(root))
        if stat.S_ISREG(st.st_mode):
            if st.st_size > 2**20:
                digest = f"{st.st_size}:{st.st_mtime_ns}"
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[key] = f"file {oct(st.st_mode)} {digest}"
        else:
            state[key] = f"{kind} {oct(st.st_mode)}"
    return state


def run_cli(case: Case, ws: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m blockproc *case.args`` in ``ws``; send ``case.signal`` once the job
    has committed its first block."""
    env = {**_offline_env(), **case.env}
    command = [sys.executable, "-m", "blockproc", *case.args]
    if case.signal is None:
        return subprocess.run(command, cwd=ws, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
    proc = subprocess.Popen(command, cwd=ws, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((ws / case.output).glob("part-*")) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(case.signal)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def main_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not blank and not notes."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not NOTE.match(ln)]


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cli(case: Case, ws: Path) -> None:
    case.setup(ws)
    skip = refusal_skip(ws, case)
    before = tree_state(ws, skip)
    proc = run_cli(case, ws)
    assert proc.returncode == case.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = main_lines(proc.stderr)
    if case.exit_code == 0:  # a warning is the one line; a note may be all there is
        assert any(re.search(case.message, ln) for ln in proc.stderr.splitlines()), proc.stderr
        assert len(lines) <= 1, proc.stderr
        assert all(re.search(case.message, ln) for ln in lines), proc.stderr
    else:
        assert len(lines) == 1, proc.stderr
        assert re.search(case.message, lines[0]), lines[0]
        assert lines[0].startswith(("error: ", "interrupted: ", "terminated ")), lines[0]
    assert re.search(case.fix, proc.stderr), proc.stderr
    # a refusal changes nothing at all; anything else changes only its output directory
    assert tree_state(ws, skip) == before


API_CASES = [c for c in CASES if c.api is not None]


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
def test_api(case: Case, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert case.api is not None and case.error is not None
    for key in [k for k in os.environ if k.startswith(("AWS_", "BLOCKPROC_"))]:
        monkeypatch.delenv(key)
    for key, value in {**_offline_env(), **case.env}.items():
        if key.startswith(("AWS_", "BLOCKPROC_")):
            monkeypatch.setenv(key, value)
    case.setup(ws)
    monkeypatch.chdir(ws)
    skip = refusal_skip(ws, case)
    before = tree_state(ws, skip)
    pattern = case.api_message or re.sub(r"^(error|warning): ", "", case.message)
    try:
        if issubclass(case.error, Warning):
            with pytest.warns(case.error, match=pattern):
                case.api(ws)
        else:
            with pytest.raises(case.error, match=pattern):
                case.api(ws)
    finally:  # fsspec caches filesystems: one made without credentials must not outlive us
        for cls in {type(fs) for fs in _cached_filesystems()}:
            cls.clear_instance_cache()
    assert tree_state(ws, skip) == before


def _cached_filesystems() -> list[Any]:
    """The filesystems fsspec keeps in its instance caches, except the local and memory
    ones every test shares."""
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem
    from fsspec.spec import AbstractFileSystem

    found: list[Any] = []
    pending: list[type[AbstractFileSystem]] = [AbstractFileSystem]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not issubclass(cls, (LocalFileSystem, MemoryFileSystem)):
            found.extend(vars(cls).get("_cache", {}).values())
    return found


def test_debug_shows_the_traceback(ws: Path) -> None:
    proc = run_cli(Case("debug", ("--debug", *RUN, "--map", "broken:f"), 2, "", ""), ws)
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error: --map 'broken:f'")


def test_an_unexpected_error_is_one_line_naming_a_bug(
        ws: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from blockproc import api, cli

    def broken_plan(*args: Any, **kwargs: Any) -> None:
        raise KeyError("boom")

    monkeypatch.chdir(ws)
    monkeypatch.setattr(api, "plan", broken_plan)
    assert cli.main(["plan", "data/access.log"]) == 1
    err = capsys.readouterr().err
    assert err == ("error: KeyError: 'boom' (this is a bug in blockproc: please report it; "
                   "rerun with --debug for the traceback)\n")
    assert cli.main(["--debug", "plan", "data/access.log"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'boom'" in err


def test_readme_table_lists_every_case() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## What blockproc refuses, and why", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|.*\| (\d+) \|$", section, flags=re.MULTILINE)
    assert rows, "no table rows found"
    documented = {name: int(code) for name, code in rows}
    assert len(documented) == len(rows), "an id appears twice in the README table"
    assert documented == {c.id: c.exit_code for c in CASES}


def test_case_ids_are_unique_and_many() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 50
