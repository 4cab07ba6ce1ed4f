"""Save and restore everything a trial needs to continue bit-for-bit: weights, optimizer, scaler, scheduler,
RNG states (torch CPU/CUDA, numpy, python, the shuffle generator), epoch and the records so far.

Files are written to a temp file in the same directory and moved into place with ``os.replace``, so a kill
during the write leaves the previous checkpoint intact, never a truncated one. Everything is stored as tensors
and plain Python values so that loading works with ``weights_only=True`` (no arbitrary unpickling).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpc_tune.atomic import atomic_open

CHECKPOINT_VERSION = 1


def capture_rng(shuffle: torch.Generator | None = None) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            kind,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if shuffle is not None:
        state["shuffle"] = shuffle.get_state()
    return state


def restore_rng(state: dict[str, Any], shuffle: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if shuffle is not None and "shuffle" in state:
        shuffle.set_state(state["shuffle"])


def _python_state_to_plain(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_open(Path(path), "wb") as handle:
        torch.save({"version": CHECKPOINT_VERSION, **state}, handle)


def load_checkpoint(path: Path) -> dict[str, Any]:
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"unsupported checkpoint version {state.get('version')!r} in {path}")
    return state
