#!/bin/bash
# hpc_tune worker array for study split-mlp: each task runs one worker on the shared Optuna study.
# Made by hpctune 0.0.0-golden from /TMP/project/hpctune.yaml on 2025-01-02 03:04 UTC.
# Edit the config and run `hpctune render` again rather than editing this file.
# Submit by hand: `sbatch jobs/*.sh` (this file only: the collector is in jobs/collect/), or
#   sbatch /TMP/project/jobs/split-mlp.sh
# Its first task then submits the collector, /TMP/project/jobs/collect/split-mlp.sh.
# Split into 3 arrays at MaxArraySize=1001: that task also submits the other parts
# (--array and HPCTUNE_ARRAY_OFFSET below, one after another to keep the %N limit), the collector after all.
# The worker reads the storage URL from the config or HPCTUNE_STORAGE, never from this file; keep the
# database password in PGPASSFILE (a 0600 file), not in the URL or PGPASSWORD.
#SBATCH --job-name=hpctune-split-mlp
#SBATCH --chdir=/TMP/project
#SBATCH --partition=gpu
#SBATCH --account=proj-42
#SBATCH --qos=normal
#SBATCH --time=02:00:00
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --array=0-1000%4
#SBATCH --output=/TMP/project/runs/split-mlp/logs/array-%A_%a.out
#SBATCH --error=/TMP/project/runs/split-mlp/logs/array-%A_%a.err
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR2@240
#SBATCH --constraint=a100
#SBATCH --mail-type=END

set -euo pipefail

# Submitted by hand, the array's first task submits the collector with afterany (it then runs after every
# task, failed ones too), once: not again when the task is requeued, and not at all when `hpctune submit`
# did (it exports HPCTUNE_COLLECTOR=submitted). A failed sbatch is reported on stderr; the worker runs anyway.
# Before the collector it submits the other parts of the split array, and the collector waits for them all.
if [[ -z ${HPCTUNE_COLLECTOR:-} && ${SLURM_ARRAY_TASK_ID:-} == "${SLURM_ARRAY_TASK_MIN:-none}" \
    && ${SLURM_RESTART_COUNT:-0} == 0 ]]; then
    (
        # sbatch --parsable prints "<jobid>" or "<jobid>;<cluster>", after any warning lines: keep the id.
        hpctune_sbatch() {
            local out
            out=$(sbatch --parsable "$@") || return
            out=${out##*$'\n'}
            out=${out%%;*}
            [[ $out =~ ^[0-9]+$ ]] && echo "$out"
        }
        collector=/TMP/project/jobs/collect/split-mlp.sh
        array_script=/TMP/project/jobs/split-mlp.sh
        after=$SLURM_ARRAY_JOB_ID
        prev=$SLURM_ARRAY_JOB_ID
        # Jobs submitted from here inherit this task's environment: drop its array variables, and mark them
        # so that none of them submits anything again.
        unset "${!SLURM_ARRAY_@}"
        export HPCTUNE_COLLECTOR=submitted
        if id=$(hpctune_sbatch --dependency="afterany:$prev" --array=0-1000%4 \
            --export=ALL,HPCTUNE_ARRAY_OFFSET=1001 "$array_script"); then
            echo "hpctune: submitted array part 0-1000%4 (offset 1001) as job $id"
            after+=":$id"
            prev=$id
        else
            echo "hpctune: could not submit array part 0-1000%4 (offset 1001);" \
                "the study goes on with fewer workers" >&2
        fi
        if id=$(hpctune_sbatch --dependency="afterany:$prev" --array=0-498%4 \
            --export=ALL,HPCTUNE_ARRAY_OFFSET=2002 "$array_script"); then
            echo "hpctune: submitted array part 0-498%4 (offset 2002) as job $id"
            after+=":$id"
            prev=$id
        else
            echo "hpctune: could not submit array part 0-498%4 (offset 2002);" \
                "the study goes on with fewer workers" >&2
        fi
        if id=$(hpctune_sbatch --dependency="afterany:$after" "$collector"); then
            echo "hpctune: submitted the collector as job $id (afterany:$after)"
        else
            echo "hpctune: could not submit the collector; submit it yourself:" \
                "sbatch --dependency=afterany:$after $(printf %q "$collector")" >&2
        fi
    ) || echo "hpctune: submitting the collector failed; the worker runs anyway" >&2
fi

# Setup lines from slurm.setup; `set +u` because module, conda and venv scripts read unset variables.
set +u
module load cuda/12.4
source .venv/bin/activate
set -u

# A part of an array split at MaxArraySize gets its offset from sbatch --export; the worker adds it.
export HPCTUNE_ARRAY_OFFSET="${HPCTUNE_ARRAY_OFFSET:-0}"
# One compile cache for the whole study, so compiled eval is paid once and not per task.
export TORCHINDUCTOR_CACHE_DIR=/TMP/project/runs/split-mlp/inductor-cache

# exec: the worker becomes the batch shell, so SLURM's USR2 (--signal=B:USR2@240) reaches it; it then
# checkpoints and runs: scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
exec hpctune worker -c /TMP/project/hpctune.yaml
