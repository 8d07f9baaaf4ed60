"""Model host engine over mlx-audio (MLX Qwen3-ASR, Whisper, Parakeet, Voxtral, GLM-ASR; hub 1.x).

The host runtime loads :class:`mlx_host.engine.MlxAudioEngine` by entry point inside
``envs/mlx_host``.
"""
