"""Audio helpers used on both sides of the wire: PCM conversion (:mod:`.pcm`), resampling
(:mod:`.resample`) and WAV files (:mod:`.wav`). Standard library + numpy only (host side too)."""
