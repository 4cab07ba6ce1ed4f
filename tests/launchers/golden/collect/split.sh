#!/bin/bash
# hpc_tune collector for study split-mlp: runs once after the worker array and writes the study's summary.
# Made by hpctune 0.0.0-golden from /TMP/project/hpctune.yaml on 2025-01-02 03:04 UTC.
# Edit the config and run `hpctune render` again rather than editing this file.
# Not for `sbatch jobs/*.sh` (that is why it lives in jobs/collect/): the array's first task submits it
# with afterany on the array, and `hpctune submit` does the same. To submit it again by hand, after the array
# (--dependency=singleton makes it wait for the study's other jobs):
#   sbatch /TMP/project/jobs/collect/split-mlp.sh
# A requeued task escapes singleton, so `--slurm-guard` checks squeue first: if tasks of the study are still
# queued or running, it resubmits this script with afterany on them and exits 0.
#SBATCH --job-name=hpctune-split-mlp
#SBATCH --chdir=/TMP/project
#SBATCH --partition=gpu
#SBATCH --account=proj-42
#SBATCH --qos=normal
#SBATCH --time=02:00:00
#SBATCH --cpus-per-task=1
#SBATCH --mem=32G
#SBATCH --output=/TMP/project/runs/split-mlp/logs/collect-%j.out
#SBATCH --error=/TMP/project/runs/split-mlp/logs/collect-%j.err
#SBATCH --open-mode=append
#SBATCH --dependency=singleton

set -euo pipefail

# Setup lines from slurm.setup; `set +u` because module, conda and venv scripts read unset variables.
set +u
module load cuda/12.4
source .venv/bin/activate
set -u

# The guard resubmits this file (SLURM runs a spooled copy, so it cannot find itself otherwise).
export HPCTUNE_COLLECT_SCRIPT=/TMP/project/jobs/collect/split-mlp.sh
export TORCHINDUCTOR_CACHE_DIR=/TMP/project/runs/split-mlp/inductor-cache

exec hpctune collect --config /TMP/project/hpctune.yaml --slurm-guard
