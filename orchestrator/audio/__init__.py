"""Audio helpers: PCM conversion (:mod:`.pcm`) and WAV files (:mod:`.wav`), standard library +
numpy, and resampling through soxr (:mod:`.resample`), used on both sides of the wire; decoding of
every common file format (:mod:`.decode`, soundfile and PyAV), on the client side only."""
