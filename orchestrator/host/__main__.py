"""``python -m orchestrator.host``: how the supervisor starts a host inside its env."""

import sys

from orchestrator.host.runtime import main

sys.exit(main())
