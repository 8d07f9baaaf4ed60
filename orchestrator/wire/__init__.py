"""The wire: what crosses a process boundary, shared by clients, the coordinator and the hosts.

Frames and signing (:mod:`.protocol`), error codes (:mod:`.errors`), audio payload formats
(:mod:`.formats`) and the supervisor/host contract (:mod:`.contract`). Standard library only:
host envs import all of it.
"""
