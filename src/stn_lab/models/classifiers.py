"""Classifiers that sit behind the STN (or alone, as the CNN baseline).

``ConvClassifier`` follows the reference designs: two 5x5 conv blocks with max-pooling (the
second with Dropout2d), then two fully connected layers. With ``channels=(10, 20), hidden=50`` it
is PyTorch's STN-tutorial CNN for 1-channel digits; with ``channels=(16, 32), hidden=1024`` the
CIFAR10 network. The flattened size is worked out from the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stn_lab.models.shapes import output_shape


class ConvClassifier(nn.Module):
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
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size)
        self.conv2_drop = nn.Dropout2d(dropout)
        self.dropout = dropout
        (flat,) = output_shape(
            nn.Sequential(self.conv1, nn.MaxPool2d(2), self.conv2, nn.MaxPool2d(2), nn.Flatten()),
            in_channels,
            image_size,
        )
        self.fc1 = nn.Linear(flat, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    @property
    def last_conv(self) -> nn.Module:
        """The layer Grad-CAM explains."""
        return self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.dropout(x, self.dropout, training=self.training)
        return self.fc2(x)
