"""Puts an optional STN in front of a classifier: the one ``nn.Module`` the training loop sees.

The LightningModule only uses this class's public methods (forward, ``param_groups``,
``parameter_counts``, ``transform_input``), never its insides.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Network(nn.Module):
    """``classifier(stn(x))``; with ``stn=None`` it is the plain classifier (the CNN baseline).

    Both parts come as factories so their layer sizes follow the data: the classifier is built
    for the STN's output size, which may differ from the input size.
    """

    def __init__(
        self,
        classifier: Callable[..., nn.Module],
        in_channels: int,
        image_size: int,
        num_classes: int,
        stn: Callable[..., nn.Module] | None = None,
    ):
        super().__init__()
        self.stn = stn(in_channels=in_channels, image_size=image_size) if stn else None
        size = self.stn.out_size if self.stn is not None else image_size
        self.classifier = classifier(
            in_channels=in_channels, image_size=size, num_classes=num_classes
        )

    @property
    def has_stn(self) -> bool:
        return self.stn is not None

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier sees: the STN's output, or ``x`` itself without an STN."""
        return self.stn(x) if self.stn is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transform_input(x))

    def gradcam_layer(self) -> nn.Module:
        return self.classifier.last_conv

    def param_groups(self) -> list[dict]:
        """Optimiser groups; the STN's carries ``lr_mult`` for its own learning rate."""
        groups = [{"params": list(self.classifier.parameters()), "lr_mult": 1.0}]
        if self.stn is not None:
            groups.append({"params": list(self.stn.parameters()), "lr_mult": self.stn.lr_mult})
        return groups

    def parameter_counts(self) -> dict[str, int]:
        stn = sum(p.numel() for p in self.stn.parameters()) if self.stn is not None else 0
        return {"total": sum(p.numel() for p in self.parameters()), "stn": stn}
