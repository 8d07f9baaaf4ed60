"""The model host: the only code a host env runs (``python -m orchestrator.host``).

The runtime (:mod:`.runtime`) speaks the wire to the coordinator and drives an
:class:`~orchestrator.host.engine.Engine`; :mod:`.streams` and :mod:`.segmenter` turn any engine
into a streaming one. Imports only the standard library, numpy, pyzmq, soxr (resampling) and
``orchestrator.wire`` / ``orchestrator.audio``; the VAD package (:mod:`.vad`) only lazily, so a
host whose env lacks it still starts.
"""
