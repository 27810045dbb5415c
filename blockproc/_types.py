"""Type aliases shared by the public API."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

URLLike = str | os.PathLike[str]
"""A local path or an fsspec URL such as ``s3://bucket/logs/*.log``."""

InputsLike = URLLike | Sequence[URLLike]
"""One input or several: paths, URLs, globs or directories."""

SizeLike = int | str
"""Bytes as an int, or a string like ``"64MiB"``."""

IfExists = Literal["error", "overwrite", "resume", "append"]
"""What to do when the output directory already holds something."""

ExecutorName = Literal["inline", "threads", "processes", "cluster", "dask"]
"""Where workers run."""

RecordFn = Callable[[Any], Any]
"""``fn(record) -> str | bytes | None | iterable``."""
