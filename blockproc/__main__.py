"""``python -m blockproc`` runs the CLI."""

from blockproc.cli import main

raise SystemExit(main())
