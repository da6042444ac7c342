"""The thin-plate-spline family: a smooth non-rigid warp steered by a lattice of control points.

The parameters are where each control point samples the input (its "target"); the spline is the
smoothest map (least bending energy) that sends every control point to its target, up to the
regularisation. It contains the affine maps: if the targets are an affine image of the control
points, the warp is exactly that affine map. The maths is :mod:`stn_lab.geometry.tps`.
"""

from __future__ import annotations

import torch

from stn_lab.errors import ConfigError
from stn_lab.geometry.tps import lattice, tps_grid, tps_transform_points
from stn_lab.models.transforms.base import TransformFamily


class ThinPlateSpline(TransformFamily):
    """``theta = [x0, y0, x1, y1, ...]``: the input position each control point samples.

    Args:
        grid_size: the control points form a ``grid_size x grid_size`` lattice (>= 2), so
            ``num_params = 2 * grid_size**2``.
        regularisation: lambda added to the kernel diagonal. 0 interpolates the targets exactly;
            a small positive value keeps the solve well conditioned and lets the spline trade a
            little accuracy at the control points for less bending. It never changes affine maps.
        span: the lattice covers ``[-span, span]^2`` in normalised coordinates.
    """

    def __init__(self, grid_size: int = 4, regularisation: float = 1e-3, span: float = 1.0):
        super().__init__()
        if grid_size < 2:  # fewer than 3 non-collinear points leave the affine part undetermined
            raise ConfigError(f"grid_size must be >= 2, got {grid_size}")
        if regularisation < 0:
            raise ConfigError(f"regularisation must be >= 0, got {regularisation}")
        if span <= 0:
            raise ConfigError(f"span must be > 0, got {span}")
        self.grid_size = grid_size
        self.regularisation = regularisation
        self.span = span
        # Set per instance: the count follows grid_size (the STN head reads it after __init__).
        self.num_params = 2 * grid_size**2
        # Follows .to(device) but is not saved: it is recomputed from the config.
        self.register_buffer("control_points", lattice(grid_size, span).float(), persistent=False)

    def identity(self) -> torch.Tensor:
        return self.control_points.detach().cpu().flatten().clone()

    def extra_repr(self) -> str:
        return (
            f"num_params={self.num_params}, grid_size={self.grid_size}, "
            f"regularisation={self.regularisation}, span={self.span}"
        )

    def displacement(self, theta: torch.Tensor) -> torch.Tensor:
        """``[N, K, 2]``: how far each control point's target lies from the control point
        (exactly 0 at the identity, so the identity warp is exact)."""
        control = self.control_points.to(theta.device)
        return theta.float().reshape(theta.shape[0], -1, 2) - control

    def transform_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Where ``points`` (normalised ``(x, y)``, ``[M, 2]`` or ``[N, M, 2]``) sample the input
        under the warps ``theta`` (``[N, num_params]``); returns ``[N, M, 2]``."""
        return tps_transform_points(
            self.displacement(theta), points, self.span, self.regularisation
        )

    def grid(
        self, theta: torch.Tensor, out_shape: tuple[int, int, int, int], align_corners: bool
    ) -> torch.Tensor:
        return tps_grid(
            self.displacement(theta), out_shape, align_corners, self.span, self.regularisation
        )
