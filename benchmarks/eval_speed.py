"""Eval speed of the train engine vs a naive loop, side by side in one run.

For each task (the built-in digits MLP and shapes CNN, and a ResNet-style CNN of ~1.2 M parameters on the
shapes data, benchmarks/resnet_task.py: the larger kind of model the field notes tune):
  1. per-sample eval throughput: naive loop (eager, no_grad, DataLoader, eval batch = train batch) vs the
     engine's evaluator (inference_mode, 2x batch, pre-collated tensors, channels_last for convs, the eval
     graph with BatchNorm folded and ReLU after max-pooling), eager
     and compiled, plus ablations and bf16 autocast on CPU;
  2. compile time, cold (empty cache dir) and warm (the same cache dir again), each in a fresh process, plus
     a second model of the same shape in the same process (what the next trial of a worker pays);
  3. end-to-end trial time: a naive train+eval loop vs fit() with compile off and on.
Configurations are interleaved round by round (one call of each per round, in turn), so that a neighbour
slowing the machine slows every side of a round alike; each figure is the median over the rounds with its
spread (min-max), and each ratio is the median of the per-round ratios. Threads are pinned (``--threads``,
default: every core, also as the process's CPU affinity). The machine is sampled for other runnable processes
during the rounds; when it was busy, or the rounds of a figure the verdicts rest on (naive and default) spread
too wide (interquartile range over a fifth of the median), the run says so and exits 3
(``--allow-busy`` to print anyway). Usage: python benchmarks/eval_speed.py [--rounds 9] [--skip-compile]
[--tasks digits-mlp,shapes-cnn,shapes-resnet] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hpc_tune.config import TrainConfig
from hpc_tune.errors import ConfigError
from hpc_tune.tasks import digits, shapes_cnn
from hpc_tune.tasks.base import TaskParts
from hpc_tune.train.device import resolve_device
from hpc_tune.train.engine import fit
from hpc_tune.train.evaluate import Evaluator, naive_evaluate
from hpc_tune.train.precision import PrecisionPolicy, device_caps, resolve_precision

DEVICE = torch.device("cpu")  # --device: set once in main() (and in the compile probes' processes)
TRAIN_BATCH = 64
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # resnet_task.py lives beside this script, not in hpctune's built-in tasks
    sys.path.insert(0, str(HERE))
import resnet_task  # noqa: E402

TASKS: dict[str, tuple[Any, dict[str, Any]]] = {
    "digits-mlp": (digits, {"hidden": 128}),
    "shapes-cnn": (shapes_cnn, {"channels": 16}),
    "shapes-resnet": (resnet_task, {"width": 32}),
}
CONV_TASKS = ("shapes-cnn", "shapes-resnet")


def build(task: str) -> TaskParts:
    module, params = TASKS[task]
    return module.build(params, None, 0, TrainConfig(batch_size=TRAIN_BATCH))


@dataclass
class Timing:
    """Seconds per call of one configuration, one value per round."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """Interquartile range / median: how much the rounds disagree, not moved by one odd round."""
        q1, _, q3 = statistics.quantiles(self.seconds, n=4) if len(self.seconds) > 1 else (0.0, 0.0, 0.0)
        return (q3 - q1) / self.median

    def per_second(self, n: int) -> tuple[float, float, float]:
        """(median, low, high) of ``n`` items per second."""
        return n / self.median, n / max(self.seconds), n / min(self.seconds)

    def speedup_over(self, base: Timing) -> tuple[float, float]:
        """Median and lowest per-round ratio base/self: the same round's naive time over this one's."""
        ratios = [b / s for b, s in zip(base.seconds, self.seconds, strict=True)]
        return statistics.median(ratios), min(ratios)


class Contention:
    """Samples how many threads of other processes were runnable at every round (``/proc/loadavg``'s running
    count minus this process's running threads: torch's own threads spin between calls), so that a run on a
    busy machine says so instead of printing figures that look real."""

    def __init__(self) -> None:
        self.samples: list[int] = []

    def sample(self) -> None:
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
            own = sum(
                1
                for stat in Path("/proc/self/task").glob("*/stat")
                if stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
            )
        except (OSError, IndexError, ValueError):
            return
        self.samples.append(max(0, running - own))

    def busy_share(self) -> float:
        return sum(1 for s in self.samples if s > 0) / len(self.samples) if self.samples else 0.0


CONTENTION = Contention()
BUSY_SHARE = 0.25  # more than a quarter of the samples saw another runnable process
BUSY_SPREAD = 0.2  # the middle half of one configuration's rounds spans more than a fifth of their median


def interleaved(
    configs: dict[str, Callable[[], Any]], rounds: int, min_seconds: float = 0.05
) -> dict[str, Timing]:
    """Per-round seconds per call of each config. Short calls are repeated within a round (``min_seconds``)
    so that timer resolution does not matter."""
    reps = {}
    for name, fn in configs.items():
        fn()  # warm-up (lazy init, first-touch allocations)
        start = time.perf_counter()
        fn()
        reps[name] = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        CONTENTION.sample()
        for name, fn in configs.items():
            start = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / reps[name])
    return {name: Timing(v) for name, v in samples.items()}


NAIVE_EVAL = "naive (bs 64, DataLoader, no_grad)"
DEFAULT_EVAL = "engine default"
DEFAULT_TRIAL = "fit(), defaults"


def eval_throughput(task: str, rounds: int, with_compile: bool) -> tuple[dict[str, Timing], int]:
    """The naive loop, the engine's defaults on this device, and what each default is worth (ablations)."""
    parts = build(task)
    plain, n = parts.model.to(DEVICE), len(parts.val_set)  # a user's script: default (NCHW) memory format
    conv = task in CONV_TASKS
    fast = torch.channels_last if conv else None
    model = copy.deepcopy(plain).to(memory_format=torch.channels_last) if conv else plain
    args = (parts.val_set, parts.loss_fn, parts.metrics)
    cuda = DEVICE.type == "cuda"
    policy = resolve_precision("auto", device_caps(DEVICE))  # bf16 (fp16) on a GPU, fp32 on a CPU

    def engine(**options: Any) -> Evaluator:
        settings: dict[str, Any] = {
            "batch_size": 2 * TRAIN_BATCH,
            "device": DEVICE,
            "compile": "auto",  # compiled on CUDA, eager on CPU
            "memory_format": fast,
            "precision": policy,
            **options,
        }
        return Evaluator(settings.pop("model", model), *args, **settings)

    configs: dict[str, Callable[[], Any]] = {
        NAIVE_EVAL: lambda: naive_evaluate(plain, *args, batch_size=TRAIN_BATCH, device=DEVICE),
        DEFAULT_EVAL: engine(),
        "  ablation: eval batch = train batch": engine(batch_size=TRAIN_BATCH),
    }
    if cuda:
        configs["  ablation: eager (compile off)"] = engine(compile="off")
        configs[f"  ablation: fp32 (no {policy.name} autocast)"] = engine(
            precision=PrecisionPolicy(None, False)
        )
    else:
        configs["  amp bf16 autocast (opt-in on CPU)"] = engine(
            precision=PrecisionPolicy(torch.bfloat16, False)
        )
    if conv:
        if not cuda:  # the eval graph is the eager path's; compiled steps get Inductor's rewrites
            configs["  ablation: no eval graph"] = engine(rewrite=False)
        configs["  ablation: no channels_last"] = engine(model=plain, memory_format=None)
    if with_compile and not cuda:
        compiled = engine(compile="on")
        compiled()  # pay compilation outside the timing (reported separately)
        configs["engine compiled (compile: on)"] = compiled
    return interleaved(configs, rounds), n


def compile_probe(task: str) -> dict[str, float]:
    """Runs in a fresh process: first compiled eval of one model, then of a second model of the same shape."""
    out = {}
    for key in ("first_model_s", "second_model_s"):
        parts = build(task)
        parts.model.to(DEVICE)
        conv = task in CONV_TASKS
        if conv:
            parts.model.to(memory_format=torch.channels_last)
        evaluator = Evaluator(
            parts.model,
            parts.val_set,
            parts.loss_fn,
            parts.metrics,
            batch_size=2 * TRAIN_BATCH,
            device=DEVICE,
            compile="on",
            memory_format=torch.channels_last if conv else None,
        )
        start = time.perf_counter()
        evaluator()
        out[key] = time.perf_counter() - start
        out[f"{key}_compiled"] = float(evaluator.step.is_compiled)
        evaluator.release()
    return out


def compile_times(task: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hpctune-inductor-") as cache:
        result = {}
        for label in ("cold", "warm"):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            proc = subprocess.run(
                [sys.executable, __file__, "--compile-probe", task, "--device", DEVICE.type],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            probe = json.loads(proc.stdout.strip().splitlines()[-1])
            result[f"{label} first compile (s)"] = probe["first_model_s"]
            result[f"{label} next trial, same process (s)"] = probe["second_model_s"]
        return result


def naive_trial(parts: TaskParts, epochs: int) -> float:
    """What a typical script does: DataLoader train loop + naive validation each epoch."""
    torch.manual_seed(0)
    model = parts.model.to(DEVICE)
    optimizer = parts.make_optimizer(model.parameters())
    loader = torch.utils.data.DataLoader(parts.train_set, batch_size=TRAIN_BATCH, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(DEVICE), y.to(DEVICE)
            optimizer.zero_grad()
            loss = parts.loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()
        naive_evaluate(model, parts.val_set, parts.loss_fn, parts.metrics, TRAIN_BATCH, device=DEVICE)
    return time.perf_counter() - start


def trial_times(task: str, epochs: int, rounds: int, with_compile: bool) -> dict[str, Timing]:
    """Whole trials, interleaved round by round like the eval configurations (a fresh model each call)."""

    def engine(setting: str) -> Callable[[], Any]:
        options = TrainConfig(batch_size=TRAIN_BATCH, compile=setting, device=DEVICE.type)  # type: ignore[arg-type]
        return lambda: fit(build(task), epochs=epochs, options=options, on_epoch=lambda r: None)

    configs: dict[str, Callable[[], Any]] = {"naive loop": lambda: naive_trial(build(task), epochs)}
    configs[DEFAULT_TRIAL] = engine("auto")  # compiled on CUDA, eager on CPU
    if DEVICE.type == "cuda":
        configs["fit(), compile off"] = engine("off")
    elif with_compile:
        configs["fit(), compile on (cache warm in-process)"] = engine("on")
    return interleaved(configs, rounds, min_seconds=0.0)


def pin_threads(threads: int) -> str:
    """One fixed thread count, and the process kept on that many cores where the OS allows it."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the compile probes' subprocesses too
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)
        return f"{threads} threads pinned to cores {cores}"
    return f"{threads} threads"


def _row(name: str, timing: Timing, n: int, base: Timing) -> str:
    rate, low, high = timing.per_second(n)
    ratio, worst = timing.speedup_over(base)
    spread = f"({low:,.0f}-{high:,.0f})"
    return f"  {name:<42} {rate:>10,.0f} {spread:<20} {ratio:5.2f}x naive (worst round {worst:.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of " + ", ".join(TASKS))
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile (fast smoke run)")
    parser.add_argument("--allow-busy", action="store_true", help="exit 0 even when the machine was busy")
    parser.add_argument("--json", help="also write all figures to this file")
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: the GPU if any"
    )
    parser.add_argument("--compile-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global DEVICE
    try:
        DEVICE = resolve_device(args.device)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.compile_probe:
        print(json.dumps(compile_probe(args.compile_probe)))
        return
    started = time.perf_counter()
    pinned = pin_threads(args.threads)
    print(
        f"torch {torch.__version__}, {pinned}, cuda={torch.cuda.is_available()}, "
        f"load average {os.getloadavg()[0]:.2f}; medians of {args.rounds} interleaved rounds (min-max)"
    )
    figures: dict[str, Any] = {"threads": args.threads, "rounds": args.rounds}
    verdicts: list[str] = []
    spreads: list[tuple[str, float]] = []
    epochs = {"digits-mlp": 10, "shapes-cnn": 2, "shapes-resnet": 1}
    naive_eval, default_eval, default_trial = NAIVE_EVAL, DEFAULT_EVAL, DEFAULT_TRIAL
    for task in args.tasks.split(","):
        if task not in TASKS:
            parser.error(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        print(f"\n== {task}: eval throughput, samples/s")
        timings, n = eval_throughput(task, args.rounds, not args.skip_compile)
        base = timings[naive_eval]
        for name, timing in timings.items():
            print(_row(name, timing, n, base))
            if name in (naive_eval, default_eval):  # what the verdicts rest on
                spreads.append((f"{task} {name.strip()}", timing.spread))
        ratio, worst = timings[default_eval].speedup_over(base)
        # The eval targets: 2.5x for the built-in tasks on a CPU, 5x for every task on a GPU.
        target = 5.0 if torch.cuda.is_available() else 2.5 if task in ("digits-mlp", "shapes-cnn") else None
        verdicts.append(
            f"{task}: default eval {ratio:.2f}x naive (worst round {worst:.2f}x); never slower: "
            f"{'yes' if worst >= 1 else 'NO'}"
            + (f"; >= {target:g}x: {'yes' if ratio >= target else 'NO'}" if target else "; no CPU target")
        )
        figures[task] = {
            "eval": {name: {"seconds": t.seconds, "samples": n} for name, t in timings.items()},
        }
        if not args.skip_compile:
            print(f"== {task}: compile time of the eval step (fresh process each)")
            ct = compile_times(task)
            for name, value in ct.items():
                print(f"  {name:<42} {value:>8.2f} s")
            figures[task]["compile_s"] = ct
        print(f"== {task}: end-to-end trial, {epochs[task]} epochs (train + eval), seconds")
        trials = trial_times(task, epochs[task], args.rounds, not args.skip_compile)
        for name, timing in trials.items():
            ratio, worst = timing.speedup_over(trials["naive loop"])
            print(
                f"  {name:<42} {timing.median:>8.2f} ({min(timing.seconds):.2f}-{max(timing.seconds):.2f})  "
                f"{ratio:5.2f}x faster than naive (worst round {worst:.2f}x)"
            )
            if name in ("naive loop", default_trial):
                spreads.append((f"{task} trial {name}", timing.spread))
        ratio, worst = trials[default_trial].speedup_over(trials["naive loop"])
        verdicts.append(
            f"{task}: default trial {ratio:.2f}x naive (worst round {worst:.2f}x); never slower: "
            f"{'yes' if worst >= 1 else 'NO'}"
        )
        figures[task]["trial"] = {name: t.seconds for name, t in trials.items()}
    busy_share = CONTENTION.busy_share()
    worst_spread = max(spreads, key=lambda item: item[1])
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    print("\n".join(verdicts))
    busy = busy_share > BUSY_SHARE or worst_spread[1] > BUSY_SPREAD
    figures["contention"] = {"busy_share": busy_share, "worst_spread": worst_spread}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)
    if busy:
        print(
            f"BUSY: another process was runnable in {busy_share:.0%} of the rounds and the widest spread was "
            f"{worst_spread[1]:.0%} of its median ({worst_spread[0]}): these figures measure the neighbours "
            "too; run again on an idle machine",
            file=sys.stderr,
        )
        if not args.allow_busy:
            raise SystemExit(3)
    else:
        print(
            f"machine quiet: {busy_share:.0%} of rounds saw another runnable process, widest spread "
            f"{worst_spread[1]:.0%}"
        )


if __name__ == "__main__":
    main()
