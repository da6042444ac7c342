"""Classifiers that sit behind the STN (or alone, as the baselines): a CNN and an FCN.

``ConvClassifier`` follows the reference designs: two 5x5 conv blocks with max-pooling (the
second with Dropout2d), then two fully connected layers. With ``channels=(10, 20), hidden=50`` it
is PyTorch's STN-tutorial CNN for 1-channel digits; with ``channels=(16, 32), hidden=1024`` the
CIFAR10 network. ``FCNClassifier`` is the paper's fully connected baseline (3 weight layers).

Both are split into ``blocks`` and a ``head`` so that an STN can sit between blocks (a
feature-map STN); layer sizes are worked out from the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stn_lab.models.shapes import output_shape
from stn_lab.ops.input_grad_conv import InputGradConv2d


class StagedClassifier(nn.Module):
    """``head(blocks[start:](x))``: a classifier that can be entered after any block."""

    blocks: nn.ModuleList
    head: nn.Module

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        for block in self.blocks[start:]:
            x = block(x)
        return self.head(x)

    def features(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        """The output of the first ``stop`` blocks."""
        for block in self.blocks[:stop]:
            x = block(x)
        return x


class ConvClassifier(StagedClassifier):
    """conv, pool, relu; conv, dropout2d, pool, relu; fc, relu, dropout; fc."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        channels: Sequence[int] = (10, 20),
        kernel_size: int = 5,
        hidden: int = 50,
        dropout: float = 0.5,
    ):
        super().__init__()
        c1, c2 = channels
        self.blocks = nn.ModuleList(
            [
                # The first conv passes a gradient back to an STN's output: opt in to the fast
                # input gradient (stn_lab.ops).
                nn.Sequential(
                    InputGradConv2d(in_channels, c1, kernel_size), nn.MaxPool2d(2), nn.ReLU()
                ),
                nn.Sequential(
                    nn.Conv2d(c1, c2, kernel_size),
                    nn.Dropout2d(dropout),
                    nn.MaxPool2d(2),
                    nn.ReLU(),
                ),
            ]
        )
        (flat,) = output_shape(nn.Sequential(*self.blocks, nn.Flatten()), in_channels, image_size)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    @property
    def last_conv(self) -> nn.Module:
        """The layer Grad-CAM explains."""
        return self.blocks[-1][0]


class FCNClassifier(StagedClassifier):
    """Fully connected baseline: flatten, then ``len(hidden) + 1`` linear layers with ReLU."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        hidden: Sequence[int] = (32, 32),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.blocks = nn.ModuleList()  # nothing to place a feature-map STN after
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.head = nn.Sequential(*layers, nn.Linear(width, num_classes))

    @property
    def last_conv(self) -> nn.Module:
        """An FCN has no conv layer; Grad-CAM then explains its first linear layer's input."""
        return self.head[1]
