import pytest
import torch

from hpc_tune.errors import ConfigError
from hpc_tune.train.precision import DeviceCaps, make_grad_scaler, resolve_precision

AMPERE = DeviceCaps("cuda", bf16_supported=True)
VOLTA = DeviceCaps("cuda", bf16_supported=False)
CPU = DeviceCaps("cpu")


@pytest.mark.parametrize(
    ("setting", "caps", "dtype", "scaler"),
    [
        ("auto", AMPERE, torch.bfloat16, False),
        ("auto", VOLTA, torch.float16, True),
        ("fp16", AMPERE, torch.float16, True),
        ("bf16", AMPERE, torch.bfloat16, False),
        ("off", AMPERE, None, False),
        ("auto", CPU, None, False),  # slower on CPU (docs/benchmarks.md), so never automatic there
        ("off", CPU, None, False),
        ("bf16", CPU, torch.bfloat16, False),
    ],
)
def test_policy(setting, caps, dtype, scaler):
    policy = resolve_precision(setting, caps)
    assert policy.dtype is dtype
    assert policy.use_grad_scaler is scaler


def test_bf16_on_gpu_without_bf16_is_a_config_error():
    with pytest.raises(ConfigError):
        resolve_precision("bf16", VOLTA)


def test_disabled_scaler_is_a_pass_through():
    scaler = make_grad_scaler(torch.device("cpu"), resolve_precision("auto", CPU))
    loss = torch.tensor(2.0)
    assert scaler.scale(loss) is loss
