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
        identity_weight: weight of a penalty pulling the parameters towards the identity
            (mean squared distance); 0 turns it off.

    After each forward pass, :attr:`last_penalty` holds that penalty (``None`` when off) and
    :meth:`health` reports the fraction of the last training batch whose sampling grid has
    collapsed (spans less than one input pixel) or lies entirely outside the input: the signs
    of a transform that has run away. It is computed only when asked for, off the hot path.
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
        identity_weight: float = 0.0,
    ):
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if lr_mult <= 0:
            raise ValueError(f"lr_mult must be > 0, got {lr_mult}")
        if not isinstance(transform, TransformFamily):
            raise ValueError(
                f"transform {type(transform).__name__} is not supported by the STN: it must be a "
                "TransformFamily (affine, attention, similarity, projective, tps)"
            )
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
        if identity_weight < 0:
            raise ValueError(f"identity_weight must be >= 0, got {identity_weight}")
        self.identity_weight = identity_weight
        self.last_penalty: torch.Tensor | None = None
        self._last_grid: tuple[torch.Tensor, int] | None = None

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The transform parameters ``[N, num_params]`` predicted for ``x``."""
        return self.head(self.localiser(x))

    def warp(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Sample ``x`` on the grid that ``theta`` defines.

        Grid generation and sampling run in fp32 even under autocast: in bf16 the sampling
        coordinates would be off by whole pixels.
        """
        shape = (x.shape[0], x.shape[1], self.out_size, self.out_size)
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self._sample(x.float(), theta.float(), shape).to(x.dtype)
        return self._sample(x, theta, shape)

    def _sample(self, x: torch.Tensor, theta: torch.Tensor, shape) -> torch.Tensor:
        grid = self.transform.grid(theta, shape, self.align_corners)
        out = F.grid_sample(
            x, grid, mode="bilinear", padding_mode=self.padding_mode,
            align_corners=self.align_corners,
        )  # fmt: skip
        if self.training:
            self._last_grid = (grid.detach(), x.shape[-1])  # kept for backward anyway
        return out

    def health(self) -> dict[str, torch.Tensor]:
        """Collapsed / outside fractions of the last training batch (empty before training)."""
        return grid_health(*self._last_grid) if self._last_grid is not None else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x)
        if self.identity_weight > 0:
            identity = self.transform.identity().to(theta.device)
            self.last_penalty = self.identity_weight * (theta - identity).square().mean()
        return self.warp(x, theta)


HEALTH_POINTS = 8  # the health check reads an 8x8 lattice of the grid, corners included


def grid_health(grid: torch.Tensor, in_size: int) -> dict[str, torch.Tensor]:
    """Fractions of a batch whose grids ``[N, H, W, 2]`` collapsed or fell outside the input.

    Read on a ``HEALTH_POINTS`` square lattice that includes the grid's corners: 64 points
    instead of H*W keeps the per-step check cheap. The span is exact for the matrix families
    (their extremes are at the corners); "outside" means no lattice point lies in the image.
    """
    rows = torch.linspace(0, grid.shape[1] - 1, HEALTH_POINTS, device=grid.device).round().long()
    cols = torch.linspace(0, grid.shape[2] - 1, HEALTH_POINTS, device=grid.device).round().long()
    flat = grid[:, rows][:, :, cols].flatten(1, 2)
    span = (flat.amax(dim=1) - flat.amin(dim=1)).amax(dim=1)
    collapsed = span < 2.0 / in_size  # the whole output samples less than one input pixel
    inside = (flat.abs() <= 1).all(dim=2).any(dim=1)
    return {"collapsed": collapsed.float().mean(), "outside": (~inside).float().mean()}
