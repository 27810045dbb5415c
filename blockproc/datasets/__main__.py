"""``python -m blockproc.datasets NAME --size 256MiB -o PATH``."""

from __future__ import annotations

from blockproc.datasets import main

if __name__ == "__main__":
    raise SystemExit(main())
