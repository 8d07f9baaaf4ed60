"""Host envs, seen from the developer's machine: where they are and whether they are current
(:mod:`.checks`), building them from their locks (:mod:`.build`) and the isolation probe run by
each env's interpreter (:mod:`.probe`). Standard library only: ``noxfile.py`` imports it from
nox's own interpreter."""
