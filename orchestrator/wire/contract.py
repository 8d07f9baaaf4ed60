"""The supervisor/host contract: what the coordinator tells a host at start and how a host ends.

Both sides read this one module: the supervisor writes the boot document and branches on exit
codes, the host runtime reads the boot document and exits with these codes. Standard library
only (host side).
"""

from __future__ import annotations

#: Exit codes the supervisor branches on.
EXIT_OK = 0
EXIT_ENGINE_FAILED = 3  # the engine could not start at all: restarting will not help
EXIT_ORPHANED = 4
