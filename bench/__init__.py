"""Benchmarks of the orchestrator: every figure beside a baseline measured in the same run.

``python -m bench`` (or ``nox -s bench``) runs the quick profile and ``--full`` the long one; it
prints a table and writes JSON (machine, versions, each figure with its baseline and ratio).
One module per figure group (``routing``, ``failover``, ``coldstart``, ``realhosts``, ``envs``,
``scale``); the bare-pyzmq baselines live in ``bare`` and the measuring loops, shared by ours and
the baselines so both are timed the same way, in ``loops``. Nothing here imports from ``tests/``.
"""
