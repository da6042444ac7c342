"""The spatial transformer: localiser -> parameters -> sampling grid -> bilinear sampler."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from stn_lab.models.transforms.base import TransformFamily

PADDING_MODES = ("zeros", "border", "reflection")


class SpatialTransformer(nn.Module):
    """Warps its input by a transform it predicts from that input.

    Args:
        localiser: factory ``(in_channels=, image_size=) -> nn.Module`` with ``out_features``.
        transform: the family that turns parameters into a sampling grid.
        in_channels, image_size: the input this STN sees (square images).
        out_size: output side in pixels; ``None`` keeps the input size (e.g. 60 in, 28 out).
        padding_mode: what is sampled outside the input: zeros, border or reflection.
        align_corners: ``grid_sample``'s convention for the normalised coordinates.
        lr_mult: learning-rate multiplier for all STN parameters (own optimiser group).
    """

    def __init__(
        self,
        localiser: Callable[..., nn.Module],
        transform: TransformFamily,
        in_channels: int,
        image_size: int,
        out_size: int | None = None,
        padding_mode: str = "zeros",
        align_corners: bool = False,
        lr_mult: float = 1.0,
    ):
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if lr_mult <= 0:
            raise ValueError(f"lr_mult must be > 0, got {lr_mult}")
        self.localiser = localiser(in_channels=in_channels, image_size=image_size)
        self.transform = transform
        self.head = nn.Linear(self.localiser.out_features, transform.num_params)
        # Start at the identity: without this the first grids are random and the loss sticks.
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(transform.identity())
        self.out_size = out_size or image_size
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        self.lr_mult = lr_mult

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The transform parameters ``[N, num_params]`` predicted for ``x``."""
        return self.head(self.localiser(x))

    def warp(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Sample ``x`` on the grid that ``theta`` defines (fp32 sampling, even under autocast)."""
        shape = (x.shape[0], x.shape[1], self.out_size, self.out_size)
        grid = self.transform.grid(theta, shape, self.align_corners)
        out = F.grid_sample(
            x.float(),
            grid,
            mode="bilinear",
            padding_mode=self.padding_mode,
            align_corners=self.align_corners,
        )
        return out.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.warp(x, self.theta(x))
