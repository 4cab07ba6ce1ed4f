"""Eval speed of the train engine vs a naive loop, side by side in one run (issue 5).

For each built-in task (digits MLP, shapes CNN):
  1. per-sample eval throughput: naive loop (eager, no_grad, DataLoader, eval batch = train batch) vs the
     engine's evaluator (inference_mode, 2x batch, pre-collated tensors, channels_last for convs), eager
     and compiled, plus ablations and bf16 autocast on CPU;
  2. compile time, cold (empty cache dir) and warm (the same cache dir again), each in a fresh process, plus
     a second model of the same shape in the same process (what the next trial of a worker pays);
  3. end-to-end trial time: a naive train+eval loop vs fit() with compile off and on.
Configurations are interleaved round by round and the best round is reported, because other processes may
share the CPU. Usage: python benchmarks/eval_speed.py [--rounds 7] [--skip-compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from hpc_tune.study.config import TrainConfig
from hpc_tune.tasks import digits, shapes_cnn
from hpc_tune.tasks.base import TaskParts
from hpc_tune.train.engine import fit
from hpc_tune.train.evaluate import Evaluator, naive_evaluate
from hpc_tune.train.precision import PrecisionPolicy

CPU = torch.device("cpu")
TRAIN_BATCH = 64
TASKS: dict[str, tuple[Any, dict[str, Any]]] = {
    "digits-mlp": (digits, {"hidden": 128}),
    "shapes-cnn": (shapes_cnn, {"channels": 16}),
}


def build(task: str) -> TaskParts:
    module, params = TASKS[task]
    return module.build(params, None, 0, TrainConfig(batch_size=TRAIN_BATCH))


def interleaved(
    configs: dict[str, Callable[[], Any]], rounds: int, min_seconds: float = 0.05
) -> dict[str, float]:
    """Best (min) seconds per call of each config: neighbours on a shared CPU only ever slow a round down,
    so the minimum is the least contaminated estimate (as timeit advises)."""
    reps = {}
    for name, fn in configs.items():
        fn()  # warm-up (lazy init, first-touch allocations)
        start = time.perf_counter()
        fn()
        reps[name] = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, fn in configs.items():
            start = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / reps[name])
    return {name: min(v) for name, v in samples.items()}


def eval_throughput(task: str, rounds: int, with_compile: bool) -> dict[str, float]:
    parts = build(task)
    plain, n = parts.model, len(parts.val_set)  # what a user's script has: default (NCHW) memory format
    conv = task == "shapes-cnn"
    fast = torch.channels_last if conv else None
    model = copy.deepcopy(plain).to(memory_format=torch.channels_last) if conv else plain
    args = (parts.val_set, parts.loss_fn, parts.metrics)
    configs: dict[str, Callable[[], Any]] = {
        "naive (bs 64, DataLoader, no_grad)": lambda: naive_evaluate(plain, *args, batch_size=TRAIN_BATCH),
        "engine eager (default on CPU)": Evaluator(
            model, *args, batch_size=2 * TRAIN_BATCH, device=CPU, compile="off", memory_format=fast
        ),
        "  ablation: eval batch = train batch": Evaluator(
            model, *args, batch_size=TRAIN_BATCH, device=CPU, compile="off", memory_format=fast
        ),
        "  amp bf16 autocast (CPU)": Evaluator(
            model,
            *args,
            batch_size=2 * TRAIN_BATCH,
            device=CPU,
            compile="off",
            memory_format=fast,
            precision=PrecisionPolicy(torch.bfloat16, False),
        ),
    }
    if conv:
        configs["  ablation: no channels_last"] = Evaluator(
            plain, *args, batch_size=2 * TRAIN_BATCH, device=CPU, compile="off"
        )
    if with_compile:
        compiled = Evaluator(
            model, *args, batch_size=2 * TRAIN_BATCH, device=CPU, compile="on", memory_format=fast
        )
        compiled()  # pay compilation outside the timing (reported separately)
        configs["engine compiled (compile: on)"] = compiled
    seconds = interleaved(configs, rounds)
    return {name: n / s for name, s in seconds.items()}


def compile_probe(task: str) -> dict[str, float]:
    """Runs in a fresh process: first compiled eval of one model, then of a second model of the same shape."""
    out = {}
    for key in ("first_model_s", "second_model_s"):
        parts = build(task)
        conv = task == "shapes-cnn"
        if conv:
            parts.model.to(memory_format=torch.channels_last)
        evaluator = Evaluator(
            parts.model,
            parts.val_set,
            parts.loss_fn,
            parts.metrics,
            batch_size=2 * TRAIN_BATCH,
            device=CPU,
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
                [sys.executable, __file__, "--compile-probe", task],
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
    optimizer = parts.make_optimizer(parts.model.parameters())
    loader = torch.utils.data.DataLoader(parts.train_set, batch_size=TRAIN_BATCH, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        parts.model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = parts.loss_fn(parts.model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()
        naive_evaluate(parts.model, parts.val_set, parts.loss_fn, parts.metrics, TRAIN_BATCH)
    return time.perf_counter() - start


def trial_times(task: str, epochs: int, with_compile: bool) -> dict[str, float]:
    naive_trial(build(task), 1)  # warm-up: first-call costs (lazy imports, allocator) hit neither side
    fit(
        build(task),
        epochs=1,
        options=TrainConfig(batch_size=TRAIN_BATCH, compile="off"),
        on_epoch=lambda r: None,
    )
    result = {"naive loop": naive_trial(build(task), epochs)}
    for setting in ("off", "on") if with_compile else ("off",):
        options = TrainConfig(batch_size=TRAIN_BATCH, compile=setting)
        parts = build(task)
        start = time.perf_counter()
        fit(parts, epochs=epochs, options=options, on_epoch=lambda r: None)
        result[f"fit(), compile {setting}"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile (fast smoke run)")
    parser.add_argument("--json", help="also write all figures to this file")
    parser.add_argument("--compile-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_probe:
        print(json.dumps(compile_probe(args.compile_probe)))
        return
    started = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    figures: dict[str, Any] = {}
    epochs = {"digits-mlp": 10, "shapes-cnn": 2}
    for task in TASKS:
        print(f"\n== {task}: eval throughput (samples/s, best of {args.rounds} interleaved rounds)")
        thr = eval_throughput(task, args.rounds, not args.skip_compile)
        base = thr["naive (bs 64, DataLoader, no_grad)"]
        for name, value in thr.items():
            print(f"  {name:<38} {value:>12,.0f}   {value / base:6.2f}x naive")
        figures[task] = {"eval_samples_per_s": thr}
        if not args.skip_compile:
            print(f"== {task}: compile time of the eval step (fresh process each)")
            ct = compile_times(task)
            for name, value in ct.items():
                print(f"  {name:<38} {value:>8.2f} s")
            figures[task]["compile_s"] = ct
        print(f"== {task}: end-to-end trial, {epochs[task]} epochs (train + eval)")
        tt = trial_times(task, epochs[task], not args.skip_compile)
        for name, value in tt.items():
            print(f"  {name:<38} {value:>8.2f} s   {tt['naive loop'] / value:5.2f}x faster than naive")
        figures[task]["trial_s"] = tt
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)


if __name__ == "__main__":
    main()
