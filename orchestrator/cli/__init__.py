"""The command line, ``python -m orchestrator COMMAND`` (:mod:`.main`), one module per command,
and the demo (``python -m orchestrator.cli.demo``). Runs in the user's process."""
