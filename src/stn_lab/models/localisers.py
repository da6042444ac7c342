"""Localisation networks: the part of an STN that looks at the input and regresses features.

A localiser is a stack of ``conv -> max-pool -> activation`` blocks followed by fully connected
layers. The convolution (plain or CoordConv) and the activation (ReLU or LeakyReLU) are passed
in as factories, so the Hydra groups ``localiser`` and ``activation`` swap them without code.
The final regression layer to the transform's parameters belongs to the STN, which knows the
transform family and so its identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stn_lab.errors import ConfigError
from stn_lab.models.shapes import output_shape


class Localiser(nn.Module):
    """Conv blocks then fully connected layers; ``out_features`` is the last hidden width.

    With ``channels=[]`` it is a fully connected localiser (as in the paper's ST-FCN).
    ``input_downsample`` average-pools the input first: the localiser only needs a coarse view.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        channels: Sequence[int] = (8, 10),
        kernel_sizes: Sequence[int] = (7, 5),
        hidden: Sequence[int] = (32,),
        pool: int = 2,
        input_downsample: int = 1,
        conv: Callable[..., nn.Module] = nn.Conv2d,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ):
        super().__init__()
        if len(channels) != len(kernel_sizes):
            raise ConfigError(
                f"localiser channels {list(channels)} and kernel_sizes {list(kernel_sizes)} "
                "must have the same length"
            )
        if input_downsample < 1:
            raise ConfigError(f"localiser input_downsample must be >= 1, got {input_downsample}")
        self.input_downsample = input_downsample
        blocks: list[nn.Module] = []
        prev = in_channels
        for width, kernel in zip(channels, kernel_sizes, strict=True):
            blocks += [conv(prev, width, kernel), nn.MaxPool2d(pool), activation()]
            prev = width
        self.features = nn.Sequential(*blocks, nn.Flatten())
        seen_size = math.ceil(image_size / input_downsample)
        (flat,) = output_shape(self.features, in_channels, seen_size)
        if flat == 0:
            raise ConfigError(f"localiser conv stack leaves nothing of a {seen_size}px input")
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(flat, width), activation()]
            flat = width
        self.fc = nn.Sequential(*layers)
        self.out_features = flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_downsample > 1:
            x = F.avg_pool2d(x, self.input_downsample, ceil_mode=True)
        return self.fc(self.features(x))
