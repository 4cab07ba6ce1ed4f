"""Mixed-precision policy: which autocast dtype and whether a GradScaler is needed, per device.

Resolution is a pure function of the device's capabilities so that the GPU branches are unit-tested on a CPU.
On CPU ``auto`` means fp32: bf16 autocast on a CPU without AMX is slower than fp32 (measured in
benchmarks/eval_speed.py, see docs/benchmarks.md), and fp16 on CPU is slower still.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

from hpc_tune.errors import ConfigError

AmpSetting = Literal["auto", "off", "bf16", "fp16"]


@dataclass(frozen=True)
class DeviceCaps:
    type: str  # "cuda" or "cpu"
    bf16_supported: bool = False


@dataclass(frozen=True)
class PrecisionPolicy:
    dtype: torch.dtype | None  # None: plain fp32, no autocast
    use_grad_scaler: bool  # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def resolve_precision(setting: AmpSetting, caps: DeviceCaps) -> PrecisionPolicy:
    if setting == "off":
        return PrecisionPolicy(None, False)
    if caps.type == "cuda":
        if setting == "bf16" and not caps.bf16_supported:
            raise ConfigError("train.amp is bf16 but this GPU does not support bf16", "train.amp")
        if setting == "bf16" or (setting == "auto" and caps.bf16_supported):
            return PrecisionPolicy(torch.bfloat16, False)
        return PrecisionPolicy(torch.float16, True)
    # CPU: only an explicit request turns autocast on (it is slower here; the user may know better hardware).
    if setting == "bf16":
        return PrecisionPolicy(torch.bfloat16, False)
    if setting == "fp16":
        return PrecisionPolicy(torch.float16, True)
    return PrecisionPolicy(None, False)


def device_caps(device: torch.device) -> DeviceCaps:
    if device.type == "cuda":
        return DeviceCaps("cuda", torch.cuda.is_bf16_supported())
    return DeviceCaps(device.type, False)


def autocast(device: torch.device, policy: PrecisionPolicy) -> contextlib.AbstractContextManager[None]:
    if policy.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=policy.dtype)


def make_grad_scaler(device: torch.device, policy: PrecisionPolicy) -> torch.amp.GradScaler:
    # A disabled scaler is a transparent pass-through, so the train step has one code path for every policy.
    return torch.amp.GradScaler(device.type, enabled=policy.use_grad_scaler)
