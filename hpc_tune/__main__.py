"""``python -m hpc_tune`` is the same as ``hpctune`` (used by ``run --local`` to start workers)."""

from hpc_tune.cli import main

if __name__ == "__main__":
    main()
