"""`python -m tracker` is the `btfs-tracker` command."""

from tracker.cli import main

raise SystemExit(main())
