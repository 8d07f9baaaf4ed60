"""Model host engine over faster-whisper (CTranslate2 Whisper models; int8 on CPU, hub 1.x).

The host runtime loads :class:`ct2_host.engine.FasterWhisperEngine` by entry point inside
``envs/ct2_host``.
"""
