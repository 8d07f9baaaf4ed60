"""Long-form transcription: a recording of any length, cut at pauses, spread over every ready
replica, merged back in order with timestamps.

Small modules with one job each, shared by the command line (``transcribe``), the Python client
(``AsyncClient.transcribe_file`` / ``Client.transcribe_file``) and, later, an HTTP face:

- :mod:`.source`   limits checked from the header, one conversion to 16 kHz PCM16 (reading is
                   ``orchestrator.audio.decode``: every common format, block by block)
- :mod:`.pauses`   where to cut near a target: the quietest stretch outside Silero's speech
- :mod:`.planner`  the pieces, each no longer than the engine's window, in bounded memory
- :mod:`.runner`   keep every serving replica busy with pieces, collect the results
- :mod:`.merge`    the pieces' results as one transcript on the file's time line
- :mod:`.formats`  txt, json, srt and vtt
"""
