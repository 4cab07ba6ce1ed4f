"""How workers are started: the sbatch options every path shares (options.py), the rendered scripts and
their submission (scripts.py, submit.py, templates/), ``hpc_tune.launch`` through submitit's slurm, local and
debug executors (python_api.py), and N local workers for ``run --local`` (local.py, environment.py)."""
