"""``python -m harness`` is the ``harness`` command."""

from harness.commands.cli import main

raise SystemExit(main())
