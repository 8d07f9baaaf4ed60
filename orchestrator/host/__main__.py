"""``python -m orchestrator.host``: how the supervisor starts a host inside its env, or how a
host on another machine dials in (``--connect`` or ``--config``: ``orchestrator.host.dialin``)."""

import sys

from orchestrator.host import dialin, runtime

sys.exit(dialin.main() if dialin.is_dial_in(sys.argv[1:]) else runtime.main())
