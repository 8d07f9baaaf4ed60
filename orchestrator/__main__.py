"""``python -m orchestrator``: see ``orchestrator.cli.main``."""

from orchestrator.cli.main import main

raise SystemExit(main())
