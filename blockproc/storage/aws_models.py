"""One parse of botocore's service models per process, shared by every s3fs filesystem.

Each s3fs filesystem makes its own aiobotocore session on first use, and a new session
loads and parses botocore's JSON models afresh (the S3 API, its endpoint rules). A worker
forked from the master makes its filesystems anew (fsspec drops its instance cache in a
child), so each worker paid that again before its first GET, on the cores the job and a
local store share: its first request took 0.15-0.16 s of CPU, 0.06-0.10 s with the
master's models. :func:`share_models` gives a
filesystem that has no session yet one that uses this process's loader, the loader the
master filled before it forked (the loader holds parsed JSON only: nothing tied to an
event loop or a connection). Everything else of the session is made as s3fs makes it
(``AioSession(**fs.kwargs)``); a filesystem given its own ``session`` is left alone.

Examples
--------
>>> from fsspec.implementations.memory import MemoryFileSystem
>>> share_models(MemoryFileSystem())  # anything but an s3fs filesystem: unchanged
False
"""

from __future__ import annotations

from typing import Any

_loaders: dict[Any, Any] = {}
"""botocore data loaders by the ``data_path`` they were made for (None: the default)."""


def is_s3fs(fs: Any) -> bool:
    """Whether ``fs`` is an s3fs filesystem (told without importing s3fs)."""
    return type(fs).__module__.split(".")[0] == "s3fs"


def share_models(fs: Any) -> bool:
    """Give the s3fs filesystem ``fs`` a session whose model loader is this process's
    (made from the first such session); return whether it got one. Filesystems of other
    kinds and s3fs filesystems that have a session already are left as they are."""
    if not is_s3fs(fs) or getattr(fs, "session", True) is not None:
        return False
    from aiobotocore.session import AioSession

    session = AioSession(**getattr(fs, "kwargs", {}))
    try:
        data_path = session.get_config_variable("data_path")
    except Exception:  # e.g. a profile that does not exist: s3fs says so on first use
        return False
    loader = _loaders.get(data_path)
    if loader is None:
        _loaders[data_path] = session.get_component("data_loader")
    else:
        session.register_component("data_loader", loader)
    fs.session = session
    return True
