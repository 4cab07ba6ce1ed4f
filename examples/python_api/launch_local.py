"""Launch a study from Python (a notebook, a Hydra app, a sweep script): two workers on this machine through
submitit, one shared study on the embedded store, then the summary.

    python examples/python_api/launch_local.py
    python examples/python_api/launch_local.py --results /tmp/runs --trials 4

On a cluster the same call with ``executor="slurm"`` submits an sbatch array built from the config's
``slurm:`` section, and the collector after it; more than one task needs PostgreSQL (``--storage`` or
HPCTUNE_STORAGE, the password in PGPASSFILE). docs/python-api.md compares this with ``hpctune submit``.
"""

from __future__ import annotations

import argparse

import hpc_tune


def study_config(results: str, trials: int) -> dict[str, object]:
    """The study as a plain mapping: a Hydra app would pass its DictConfig, a script a YAML path."""
    return {
        "study": "digits-api",
        "task": "hpc_tune.tasks.digits",
        "metric": "val_acc",
        "direction": "maximize",
        "trials": trials,
        "epochs": 3,
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
            "hidden": {"type": "int", "low": 8, "high": 64, "log": True},
            "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        },
        "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 4},
        "train": {"compile": "off"},
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="runs", help="results root (runs/<study>/ below it)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--array", default="0-1", help="worker indices, as sbatch --array (0-7%%4, 1,3,5)")
    parser.add_argument("--executor", default="local", choices=["local", "debug", "slurm"])
    parser.add_argument("--storage", default=None, help="PostgreSQL URL (needed for several SLURM tasks)")
    args = parser.parse_args(argv)

    config = study_config(args.results, args.trials)
    launched = hpc_tune.launch(config, array=args.array, executor=args.executor, storage=args.storage)
    print(f"launched {len(launched.jobs)} worker job(s) of {launched.study}; files in {launched.folder}")
    collected = launched.result()  # waits for the workers, then collects the study
    best = collected.summary.best
    budget = collected.summary.budget
    print(f"{budget.finished}/{budget.trials} trials finished")
    if best is not None:
        print(f"best trial {best.trial}: val_acc {best.value:.4f} with {best.params}")
    print(f"summary: {collected.summary_path}")


if __name__ == "__main__":
    main()
