"""``python -m blockproc`` runs the CLI."""

from blockproc.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
