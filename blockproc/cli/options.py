"""The CLI's option types and parsers: sizes, formats, ``KEY=VALUE`` options, the
``MODULE:FUNC`` import, and the one-paragraph summary of a finished job."""

from __future__ import annotations

import codecs
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from blockproc import formats, output_formats
from blockproc._units import format_size, parse_size
from blockproc.errors import (
    ConfigError,
)
from blockproc.formats import Delimited, Lines, Raw, RecordFormat, available_formats
from blockproc.result import JobResult


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
    counters = result.counters
    made = (f"{result.num_records_out:,} out, {format_size(result.num_bytes_written)} "
            f"written" if result.output else
            f"{_plural(result.num_records_out, 'value')} back to this process")
    return "\n".join([
        f"committed {_plural(len(result.blocks), 'block')}: {result.num_records:,} records "
        f"in, {made} in {result.seconds:.2f}s (retries: {result.num_retries})",
        *([f"counters: {_format_counters(counters)}"] if counters else []),
        *kept, f"output: {result.output}" if result.output else "output: none (printed)"])


def _format_counters(counters: Mapping[str, int]) -> str:
    """``blank=1, bad=1,024``: counters as the summary and ``status`` print them."""
    return ", ".join(f"{name}={amount:,}" for name, amount in counters.items())


def _fold_options(combine_spec: str | None, initial_json: str | None,
                  map_blocks_spec: str | None, output: str | None) -> tuple[Any, Any]:
    """Return ``(combine, initial)`` from ``--combine`` and ``--initial``."""
    from blockproc.values import NOTHING

    if combine_spec is None:
        if initial_json is not None:
            raise ConfigError("--initial is the start of a --combine fold; pass --combine "
                              "MODULE:FUNC too, or drop --initial")
        return None, NOTHING
    if map_blocks_spec is None:
        raise ConfigError("--combine folds what --map-blocks returns per block; pass "
                          "--map-blocks MODULE:FUNC instead of --map or --cmd")
    initial = NOTHING
    if initial_json is not None:
        try:
            initial = json.loads(initial_json)
        except ValueError as exc:
            raise ConfigError(f"--initial {initial_json!r} is not JSON ({exc}); pass e.g. "
                              f"--initial 0 or --initial '{{}}'") from None
    return _import_function(combine_spec, "--combine"), initial


def _print_values(result: JobResult, *, per: str, combined: bool) -> None:
    """Print a job's values to stdout as JSON: the folded value, one line per block's
    value, or (per-record functions) one line per result."""
    if combined:
        click.echo(_as_json(result.value, "the combined value"))
        return
    for block_id, value in enumerate(result.values or ()):
        for item in value if per == "record" else [value]:
            click.echo(_as_json(item, f"a value of block {block_id}"))


def _as_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_jsonable, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} cannot be printed as JSON ({exc}); return dicts, lists, "
                          f"str, numbers or None, or pass -o OUT to keep other values") from None


def _jsonable(value: Any) -> Any:
    """Sets as sorted lists, numpy values as Python ones; anything else is refused."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r:.60} is not JSON")
