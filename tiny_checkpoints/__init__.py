"""Tiny random-weight checkpoints in the hub repos' file layouts, for tests, the demo and benches.

Not part of any host: run with a host env's interpreter from the project root
(``envs/legacy_host/bin/python -m tiny_checkpoints OUT_DIR``), which has numpy, safetensors and
tokenizers. See :mod:`tiny_checkpoints.__main__`.
"""
