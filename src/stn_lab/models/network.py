"""Puts spatial transformers in front of (or inside) a classifier: the ``nn.Module`` that trains.

The LightningModule only uses this class's public methods (forward, ``param_groups``,
``parameter_counts``, ``transform_input``), never its insides.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from stn_lab.errors import ConfigError
from stn_lab.models.shapes import check_input, output_shape

COMBINE_MODES = ("parallel", "series")


class Network(nn.Module):
    """``classifier(stn(x))``; with ``stn=None`` it is the plain classifier (the baseline).

    Args:
        classifier: factory ``(in_channels=, image_size=, num_classes=)`` of a
            :class:`~stn_lab.models.classifiers.StagedClassifier`.
        stn: factory ``(in_channels=, image_size=)`` of a spatial transformer, or ``None``.
        position: 0 puts the STN on the input; ``k`` after the classifier's ``k``-th block (a
            feature-map STN, whose output keeps the feature map's size).
        num_transformers: how many STNs. ``parallel``: each sees the same input and their
            outputs are stacked along channels (as the paper's CUB model); ``series``: each
            transforms the previous one's output.

    Raises:
        InputSizeError: (a ``ValueError``) from :meth:`forward` when the input is not
            ``[N, in_channels, image_size, image_size]``.
    """

    def __init__(
        self,
        classifier: Callable[..., nn.Module],
        in_channels: int,
        image_size: int,
        num_classes: int,
        stn: Callable[..., nn.Module] | None = None,
        position: int = 0,
        num_transformers: int = 1,
        combine: str = "parallel",
    ):
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ConfigError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
        if num_transformers < 1:
            raise ConfigError(f"num_transformers must be >= 1, got {num_transformers}")
        self.in_channels, self.image_size = in_channels, image_size
        self.position = position if stn else 0
        self.combine = combine
        copies = num_transformers if combine == "parallel" and stn else 1
        if self.position == 0:
            self.stns = nn.ModuleList(
                [
                    stn(in_channels=in_channels, image_size=image_size)
                    for _ in range(num_transformers)
                ]
                if stn
                else []
            )
            size = self.stns[0].out_size if stn else image_size
            self.classifier = classifier(
                in_channels=in_channels * copies, image_size=size, num_classes=num_classes
            )
            return
        self.classifier = classifier(
            in_channels=in_channels, image_size=image_size, num_classes=num_classes
        )
        if copies > 1:
            raise ConfigError(
                "parallel transformers work on the input (position=0); "
                "use combine=series for several feature-map STNs"
            )
        if not 0 < position <= len(self.classifier.blocks):
            raise ConfigError(
                f"position {position} is not after one of the classifier's "
                f"{len(self.classifier.blocks)} blocks"
            )
        channels, size, _ = output_shape(
            nn.Sequential(*self.classifier.blocks[:position]), in_channels, image_size
        )
        self.stns = nn.ModuleList(
            [
                stn(in_channels=channels, image_size=size, out_size=size)
                for _ in range(num_transformers)
            ]
        )

    @property
    def has_stn(self) -> bool:
        return len(self.stns) > 0

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_stn:
            return x
        if self.combine == "series":
            for stn in self.stns:
                x = stn(x)
            return x
        outputs = [stn(x) for stn in self.stns]
        # One STN: its output as it is (cat would copy it).
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the classifier sees: the input STNs' output (``x`` itself without one)."""
        return self._transform(x) if self.position == 0 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.image_size, "the network")
        if self.position == 0:
            return self.classifier(self._transform(x))
        features = self.classifier.features(x, self.position)
        return self.classifier(self._transform(features), start=self.position)

    def penalty(self) -> torch.Tensor | None:
        """The STNs' identity penalties from the last forward pass, or ``None`` when off."""
        penalties = [stn.last_penalty for stn in self.stns if stn.last_penalty is not None]
        return sum(penalties[1:], penalties[0]) if penalties else None

    def health_points(self) -> list[tuple[torch.Tensor, int]]:
        """Each STN's last training grid at the health lattice, with its input size (empty
        without STNs or before training); ``stn.step_health`` reads them."""
        points = (stn.health_points() for stn in self.stns)
        return [p for p in points if p is not None]

    def gradcam_layer(self) -> nn.Module:
        return self.classifier.last_conv

    def param_groups(self) -> list[dict]:
        """Optimiser groups; the STNs' group carries ``lr_mult`` for its own learning rate."""
        groups = [{"params": list(self.classifier.parameters()), "lr_mult": 1.0}]
        if self.has_stn:
            groups.append({"params": list(self.stns.parameters()), "lr_mult": self.stns[0].lr_mult})
        return groups

    def parameter_counts(self) -> dict[str, int]:
        return {
            "total": sum(p.numel() for p in self.parameters()),
            "stn": sum(p.numel() for p in self.stns.parameters()),
        }
