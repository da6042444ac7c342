"""The spatial transformer: localiser -> parameters -> sampling grid -> bilinear sampler."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from stn_lab.errors import ConfigError
from stn_lab.geometry.cache import cached
from stn_lab.models.shapes import check_input
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

    Raises:
        InputSizeError: (a ``ValueError``) from :meth:`forward` when the input is not
            ``[N, in_channels, image_size, image_size]``.
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
            raise ConfigError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if lr_mult <= 0:
            raise ConfigError(f"lr_mult must be > 0, got {lr_mult}")
        if not isinstance(transform, TransformFamily):
            raise ConfigError(
                f"transform {type(transform).__name__} is not supported by the STN: it must be a "
                "TransformFamily (affine, attention, similarity, projective, tps)"
            )
        self.in_channels, self.image_size = in_channels, image_size
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
            raise ConfigError(f"identity_weight must be >= 0, got {identity_weight}")
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

    def health_points(self) -> tuple[torch.Tensor, int] | None:
        """The last training batch's grid read at the health lattice, ``[N, 2, P]``, and the
        input size (``None`` before training); :func:`step_health` turns these into fractions."""
        if self._last_grid is None:
            return None
        grid, in_size = self._last_grid
        return lattice_points(grid), in_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.image_size, "this STN")
        theta = self.theta(x)
        if self.identity_weight > 0:
            identity = self.transform.identity().to(theta.device)
            self.last_penalty = self.identity_weight * (theta - identity).square().mean()
        return self.warp(x, theta)


HEALTH_POINTS = 8  # the health check reads an 8x8 lattice of the grid, corners included


@cached
def _lattice(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Where the ``HEALTH_POINTS`` x ``HEALTH_POINTS`` lattice's coordinates lie in an H x W grid
    flattened to ``H * W * 2`` values: every x, then every y."""
    rows = torch.linspace(0, height - 1, HEALTH_POINTS, device=device).round().long()
    cols = torch.linspace(0, width - 1, HEALTH_POINTS, device=device).round().long()
    flat = (rows[:, None] * width + cols).flatten()
    return torch.cat([2 * flat, 2 * flat + 1])


def lattice_points(grid: torch.Tensor) -> torch.Tensor:
    """Grids ``[N, H, W, 2]`` read on a ``HEALTH_POINTS`` square lattice that includes the
    corners, coordinate-major: ``[N, 2, P]`` (x then y). 64 points instead of H*W keep the health
    check cheap, and reducing along contiguous rows of points is about a quarter cheaper in the
    training loop than along the interleaved ``[N, P, 2]`` (bench/results.md)."""
    n, height, width, _ = grid.shape
    index = _lattice(height, width, grid.device)
    return grid.reshape(n, height * width * 2).index_select(1, index).view(n, 2, -1)


def grid_extents(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per grid of lattice points ``[N, 2, P]``: its spread ``[N]`` (the longer side of its
    bounding box) and its reach ``[N]`` (the max-norm distance of its nearest point from the
    image centre, so beyond 1 means no point lies in the image)."""
    # amax and amin apart: faster than one aminmax in the training loop (bench/results.md).
    spread = (points.amax(dim=2) - points.amin(dim=2)).amax(dim=1)
    return spread, points.abs().amax(dim=1).amin(dim=1)


def step_health(
    loss: torch.Tensor, points: list[tuple[torch.Tensor, int]]
) -> tuple[float, list[float]]:
    """One training step's (detached) loss value and, worst over the STNs, the fractions of its
    grids that collapsed and that left the image (``[]`` without STNs); ``points`` is
    :meth:`Network.health_points`.

    A grid collapsed when its whole output samples less than one input pixel (exact for the
    matrix families, whose extremes are at the corners); it left the image when none of its
    lattice points lies in it. Everything comes back in one read, and the two thresholds are
    counted in Python: in the training loop each small tensor op costs tens of microseconds
    (bench/results.md).
    """
    if not points:
        return loss.item(), []
    extents = [e for p, _ in points for e in grid_extents(p)]
    value, *rest = torch.cat([loss.view(1), *extents]).tolist()  # cat promotes a bf16 loss
    worst, offset = [0.0, 0.0], 0
    for p, in_size in points:
        n, pixel = p.shape[0], 2.0 / in_size  # one input pixel in normalised coordinates
        spread, reach = rest[offset : offset + n], rest[offset + n : offset + 2 * n]
        offset += 2 * n
        collapsed = sum(s < pixel for s in spread) / n
        outside = sum(r > 1 for r in reach) / n
        worst = [max(worst[0], collapsed), max(worst[1], outside)]
    return value, worst
