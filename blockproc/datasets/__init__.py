"""Deterministic, seeded, fast generators of sample input files.

=============  =====================  ==============================================
name           function               what
=============  =====================  ==============================================
access-log     :func:`access_log`     Apache combined-format web server log (text)
csv            :func:`reviews_csv`    product reviews; quoted fields with commas,
                                      doubled quotes and newlines (RFC 4180)
jsonl          :func:`events_jsonl`   clickstream events, one JSON object a line
sensors        :func:`sensor_records` fixed-width binary records, :data:`SENSOR_DTYPE`
parquet        :func:`orders_parquet` orders table in several row groups (pyarrow)
=============  =====================  ==============================================

The same seed gives the same bytes (for given numpy and pyarrow versions), and for the
four streamed formats a smaller file is a prefix of a larger one with the same seed.
Rows are built a chunk at a time as numpy byte matrices, with no Python code per row, so
a GiB takes a few seconds. Files are written under a temporary name and renamed into
place: a failed run never leaves a partial file. Command line::

    python -m blockproc.datasets NAME --size 256MiB -o PATH [--seed N]

``datasets/README.md`` in the repository describes every field.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from blockproc._units import format_size, parse_size
from blockproc.datasets._binary import (
    DEFAULT_ROW_GROUP_SIZE,
    SENSOR_DTYPE,
    orders_parquet,
    sensor_records,
)
from blockproc.datasets._text import access_log, events_jsonl, reviews_csv

__all__ = ["DATASETS", "SENSOR_DTYPE", "access_log", "events_jsonl", "main", "orders_parquet",
           "reviews_csv", "sensor_records"]

DATASETS: Mapping[str, Callable[..., int]] = {
    "access-log": access_log,
    "csv": reviews_csv,
    "jsonl": events_jsonl,
    "sensors": sensor_records,
    "parquet": orders_parquet,
}
"""The generators by command-line name; each is ``fn(path, size, *, seed=0) -> int``."""

_HELP = {
    "access-log": "Apache combined-format web access log",
    "csv": "product reviews CSV with quoted commas, quotes and newlines",
    "jsonl": "clickstream events, JSON lines",
    "sensors": "fixed-width binary sensor records (numpy SENSOR_DTYPE)",
    "parquet": "orders table in several row groups (needs pyarrow)",
}
_ALIASES = {"sensors": ["fixed"]}


def _size_arg(text: str) -> int:
    """Parse a ``--size`` value such as ``256MiB``, with argparse's error type."""
    try:
        return parse_size(text)
    except ValueError as exc:  # ConfigError is a ValueError
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dataset generator command line and return its exit status.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "access.log"
    >>> main(["access-log", "--size", "1KiB", "-o", str(out)])  # doctest: +ELLIPSIS
    wrote ... bytes ... to ...access.log in ...s
    0
    """
    parser = argparse.ArgumentParser(prog="python -m blockproc.datasets",
                                     description="Write a deterministic sample input file.")
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name, text in _HELP.items():
        cmd = sub.add_parser(name, help=text, description=text, aliases=_ALIASES.get(name, []))
        cmd.set_defaults(dataset=name)
        cmd.add_argument("--size", type=_size_arg, required=True,
                         help="approximate size: 123, 100KB (10**3), 64MB (10**6), 256MiB, "
                              "1GiB")
        cmd.add_argument("-o", "--output", required=True, help="file to write")
        cmd.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        if name == "parquet":
            cmd.add_argument("--row-group-size", type=_positive_int,
                             default=DEFAULT_ROW_GROUP_SIZE,
                             help=f"rows per row group (default {DEFAULT_ROW_GROUP_SIZE})")
    args = parser.parse_args(argv)
    options = {"row_group_size": args.row_group_size} if args.dataset == "parquet" else {}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    written = DATASETS[args.dataset](args.output, args.size, seed=args.seed, **options)
    seconds = time.perf_counter() - started
    rate = f", {written / seconds / 1e6:.0f} MB/s" if seconds > 0.5 else ""
    print(f"wrote {written} bytes ({format_size(written)}) to {args.output} in "
          f"{seconds:.1f}s{rate}")
    return 0
