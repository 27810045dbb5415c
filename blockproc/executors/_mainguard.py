"""Start ``spawn`` children without making them re-run the parent's ``__main__``.

A ``spawn`` child normally imports the parent's main module again (as ``__mp_main__``).
For ``python -m blockproc worker ...`` that module is ``blockproc/__main__.py``, which
would start the command again in every child; a user's script without an
``if __name__ == "__main__":`` guard would do the same. Workers do not need the main
module: cloudpickle ships functions defined there by value.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

_LOCK = threading.Lock()
_depth = [0]  # how many callers are inside
_saved: dict[str, Any] = {}


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """Hide ``__main__``'s file and spec from ``multiprocessing`` while the block runs.

    Nested and concurrent uses share one hiding: the first to enter hides, the last to
    leave restores.
    """
    main = sys.modules["__main__"]
    with _LOCK:
        if _depth[0] == 0:
            _saved.clear()
            _saved.update({name: main.__dict__[name] for name in ("__spec__", "__file__")
                           if name in main.__dict__})
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        _depth[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _depth[0] -= 1
            if _depth[0] == 0:
                main.__dict__.pop("__spec__", None)
                main.__dict__.update(_saved)
