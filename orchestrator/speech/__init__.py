"""Real speech for judging transcripts: the committed espeak-ng fixture set (:mod:`.fixtures`) and
word error rate (:mod:`.wer`). Used by the demo, the benchmarks and the tests; runs in the
coordinator's (or a developer's) process, never inside a host env."""
