"""Optional dependencies: import them late, and say how to install the missing ones.

CLI start-up time matters, so formats, output formats and executors import pyarrow,
numpy, zstandard or dask.distributed only when a block is decoded or written or an
executor starts, never at module import. :data:`INSTALL_HINTS` is the one place that
says which ``pip install`` brings each of them.
"""

from __future__ import annotations

import importlib
from typing import Any

from blockproc.errors import ConfigError

INSTALL_HINTS: dict[str, str] = {
    "distributed": 'pip install "blockproc[dask]"',
    "dask": 'pip install "blockproc[dask]"',
    "matplotlib": 'pip install "blockproc[plot]"',
    "s3fs": 'pip install "blockproc[s3]"',
    "zstandard": 'pip install "blockproc[zstd]"',
}
"""The command that installs an optional top-level package, where it is an extra of
blockproc's; any other package is installed under its own name."""


def install_hint(module: str) -> str:
    """Return the ``pip install`` command that brings ``module``.

    Examples
    --------
    >>> install_hint("distributed")
    'pip install "blockproc[dask]"'
    >>> install_hint("pyarrow.parquet")
    'pip install pyarrow'
    """
    package = module.split(".")[0]
    return INSTALL_HINTS.get(package, f"pip install {package}")


def require(module: str, feature: str) -> Any:
    """Import and return ``module``, or raise ConfigError naming the package to install.

    Examples
    --------
    >>> require("json", "jsonl").__name__
    'json'
    >>> require("zstandard_absent.sub", "reading .zst inputs")
    Traceback (most recent call last):
    ...
    blockproc.ConfigError: reading .zst inputs needs the 'zstandard_absent' package, ...
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise ConfigError(
            f"{feature} needs the {package!r} package, which cannot be imported ({exc}); "
            f"run `{install_hint(module)}`"
        ) from None


def pyarrow(feature: str) -> Any:
    """Return the ``pyarrow`` module."""
    return require("pyarrow", feature)


def numpy(feature: str) -> Any:
    """Return the ``numpy`` module."""
    return require("numpy", feature)
