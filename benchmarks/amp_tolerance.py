"""Mixed precision against fp32 on the same seeds: how far the learning curves move, and what it buys.

For each task (the built-in digits MLP and shapes CNN, and the ResNet-style CNN of benchmarks/resnet_task.py),
every seed trains twice with ``fit()``: ``amp: off`` (fp32) and the reduced precision
this device would use (bf16 where supported: a GPU with bf16, or a CPU, where bf16 autocast is opt-in; fp16
with GradScaler on a GPU without bf16). Both runs see the same data order and initial weights (the seed), so
every difference in the curves comes from the precision. Printed per task: the gap in validation accuracy at
the last epoch (mean and worst over the seeds) and the largest gap over the second half of the epochs, against
the stated tolerance; the largest gap at any epoch beside the largest gap between two fp32 seeds at the same
epoch, for scale; and the time of a whole training, fp32 over reduced (the two interleaved seed by seed).

Usage: python benchmarks/amp_tolerance.py [--seeds 3] [--device auto|cpu|cuda] [--json out.json]
Exit 1 when a task's curves leave the tolerance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hpc_tune.config import TrainConfig
from hpc_tune.tasks import digits, shapes_cnn
from hpc_tune.train.device import resolve_device
from hpc_tune.train.engine import fit
from hpc_tune.train.precision import device_caps, resolve_precision

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # resnet_task.py lives beside this script, not in hpctune's built-in tasks
    sys.path.insert(0, str(HERE))
import resnet_task  # noqa: E402

# The tolerance we state: reduced precision may move a trial's final validation accuracy by at most 1 point
# on average over seeds (2 points for any single seed), and its curve by at most 2 points at any epoch of the
# second half, where trials are told apart. The first epochs are chaotic: a rounding difference there moves
# the curve as much as another seed does (both are printed), and it is not what a trial is ranked by.
FINAL_MEAN_POINTS = 1.0
FINAL_WORST_POINTS = 2.0
LATE_CURVE_POINTS = 2.0

TASKS: dict[str, tuple[Any, dict[str, Any], int]] = {
    "digits-mlp": (digits, {"hidden": 64, "lr": 0.01}, 15),
    "shapes-cnn": (shapes_cnn, {"channels": 16, "lr": 0.003}, 8),
    "shapes-resnet": (resnet_task, {"width": 32, "lr": 0.003}, 6),
}


def train(task: str, seed: int, amp: str, device: str) -> tuple[list[float], float]:
    module, params, epochs = TASKS[task]
    options = TrainConfig(batch_size=64, amp=amp, seed=seed, device=device, compile="off")  # type: ignore[arg-type]
    parts = module.build(params, None, seed, options)
    start = time.perf_counter()
    result = fit(parts, epochs=epochs, options=options, on_epoch=lambda record: None)
    seconds = time.perf_counter() - start
    return [float(r["val_acc"]) for r in result.records], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", help="also write every curve to this file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    caps = device_caps(device)
    policy = resolve_precision("auto" if device.type == "cuda" else "bf16", caps)
    reduced = policy.name  # bf16 on CPU and on a bf16 GPU, fp16 (+ GradScaler) on an older GPU
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, {torch.get_num_threads()} threads: fp32 vs {reduced}")
    figures: dict[str, Any] = {"device": name, "reduced": reduced}
    failed = False
    for task in TASKS:
        curves: dict[str, list[list[float]]] = {"fp32": [], reduced: []}
        seconds: dict[str, list[float]] = {"fp32": [], reduced: []}
        for seed in range(args.seeds):
            for label, amp in (("fp32", "off"), (reduced, reduced)):
                curve, took = train(task, seed, amp, args.device)
                curves[label].append(curve)
                seconds[label].append(took)
        gaps = [
            [100 * abs(a - b) for a, b in zip(full, low, strict=True)]
            for full, low in zip(curves["fp32"], curves[reduced], strict=True)
        ]
        final = [gap[-1] for gap in gaps]
        widest = max(max(gap) for gap in gaps)
        late = max(max(gap[len(gap) // 2 :]) for gap in gaps)
        fp32 = curves["fp32"]
        seed_gap = max(
            100 * abs(a[e] - b[e]) for i, a in enumerate(fp32) for b in fp32[i + 1 :] for e in range(len(a))
        )
        speed = statistics.median(f / r for f, r in zip(seconds["fp32"], seconds[reduced], strict=True))
        within = (
            statistics.mean(final) <= FINAL_MEAN_POINTS
            and max(final) <= FINAL_WORST_POINTS
            and late <= LATE_CURVE_POINTS
        )
        failed |= not within
        fp32_final = statistics.mean(c[-1] for c in curves["fp32"])
        print(
            f"{task}: final val_acc fp32 {100 * fp32_final:.2f} %; |{reduced} - fp32| at the last epoch: "
            f"mean {statistics.mean(final):.2f}, worst {max(final):.2f} points (tolerance "
            f"{FINAL_MEAN_POINTS:g} / {FINAL_WORST_POINTS:g}); second half of the epochs: {late:.2f} "
            f"(tolerance {LATE_CURVE_POINTS:g}); any epoch: {widest:.2f} (two fp32 seeds: up to "
            f"{seed_gap:.2f}); whole training {speed:.2f}x fp32's speed; "
            f"{'within' if within else 'OUTSIDE'} the tolerance"
        )
        figures[task] = {"curves": curves, "seconds": seconds}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
