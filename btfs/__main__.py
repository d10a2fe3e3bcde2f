"""`python -m btfs` is the `btfs` command."""

from btfs.cli import main

raise SystemExit(main())
