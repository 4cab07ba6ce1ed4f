"""A ResNet-style CNN on the shapes data: the larger kind of model the field notes tune, for the benchmarks.

Three stages of two residual blocks (convolution, BatchNorm, ReLU; 32, 64 and 128 channels; stride 2 between
stages) after a convolution and max-pool stem: about 1.2 M parameters, against the built-in CNN's 25 k. It
uses the shapes task's images (generated, nothing to download), so it is a module with ``build()`` like any
user task: ``benchmarks/eval_speed.py`` measures it beside the built-in tasks, on a CPU and on a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from hpc_tune.config import FidelityConfig, TrainConfig
from hpc_tune.tasks import shapes_cnn
from hpc_tune.tasks.base import TaskParts
from hpc_tune.tasks.common import classification_parts


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def make_resnet(width: int = 32, classes: int = len(shapes_cnn.CLASSES)) -> nn.Sequential:
    stages: list[nn.Module] = []
    channels = width
    for stage in range(3):
        outputs = width * 2**stage
        stages += [BasicBlock(channels, outputs, 1 if stage == 0 else 2), BasicBlock(outputs, outputs, 1)]
        channels = outputs
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),  # 12x12
        *stages,  # 12x12, 6x6, 3x3
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, classes),
    )


def build(
    params: dict[str, Any], fidelity: FidelityConfig | None, seed: int, train: TrainConfig
) -> TaskParts:
    torch.manual_seed(seed)
    model = make_resnet(int(params.get("width", 32)))
    return classification_parts(model, shapes_cnn.datasets(fidelity), params, train)
