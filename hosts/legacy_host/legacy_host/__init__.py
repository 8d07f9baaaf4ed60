"""Model host engine over the legacy qwen-asr stack (transformers 4.57.6, torch, hub 0.x).

The host runtime loads :class:`legacy_host.engine.QwenAsrEngine` by entry point inside
``envs/legacy_host``. :mod:`tiny_checkpoints` builds the tiny local checkpoints the
tests and the demo load (Qwen3-ASR for both stacks, Whisper for mlx-audio).
"""
