"""Thin-plate splines on a square lattice of control points: the solve, point maps and grids.

A spline is given by the *displacement* of each control point, ``[N, K, 2]`` for a lattice of
``K = grid_size**2`` points (:func:`lattice`). It is the smoothest map (least bending energy,
traded against the regularisation) that moves every control point by its displacement; it
contains the affine maps exactly. The spline is linear in the displacements, so everything that
depends only on the lattice (the inverse of the TPS system, the kernel features of a grid) is
solved once and cached.

Coordinates follow the package convention (see :mod:`stn_lab.geometry`): normalised ``(x, y)``,
x to the right, y down, as ``F.grid_sample`` reads them.
"""

from __future__ import annotations

import math

import torch

from stn_lab.geometry.cache import cached
from stn_lab.geometry.grids import grid_points


def tps_kernel(squared_distance: torch.Tensor) -> torch.Tensor:
    """``U(r) = r^2 log r^2``, written in ``d = r^2``: ``d log d``, with ``U(0) = 0``.

    >>> tps_kernel(torch.tensor([0.0, 1.0])).tolist()
    [0.0, 0.0]
    """
    # xlogy is exactly 0 at d = 0, where d * log(d) would be 0 * -inf = NaN.
    return torch.xlogy(squared_distance, squared_distance)


def lattice(grid_size: int, span: float) -> torch.Tensor:
    """``[grid_size**2, 2]`` fp64 points ``(x, y)`` on a square lattice over ``[-span, span]^2``.

    Row-major: x varies fastest, so point ``k`` is column ``k % grid_size`` of row
    ``k // grid_size`` (rows run from y = -span, the top of the image, downwards).

    >>> lattice(2, 1.0).tolist()
    [[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]
    """
    axis = torch.linspace(-span, span, grid_size, dtype=torch.float64)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs, ys], dim=-1).view(-1, 2)


def tps_features(points: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """``[..., K + 3]``: for points ``[..., 2]``, the kernel to each of the ``K`` control points
    ``[K, 2]``, then ``[1, x, y]``. A spline's coefficients ``[K + 3, 2]`` map these to its
    displacement."""
    squared = (points.unsqueeze(-2) - control).square().sum(-1)
    return torch.cat([tps_kernel(squared), torch.ones_like(points[..., :1]), points], dim=-1)


@cached
def tps_solve(grid_size: int, span: float, regularisation: float, device) -> torch.Tensor:
    """``[K + 3, K]`` fp32, cached: the map from control-point displacements to the spline's
    coefficients (kernel weights, then the affine part).

    It is the first ``K`` columns of the inverse of the TPS system
    ``[[U + lambda I, P], [P^T, 0]]``, with ``U_ij = U(|c_i - c_j|)`` and ``P = [1, x, y]`` of the
    control points (the right-hand side is zero in its last 3 rows). Solved in fp64, because the
    matrix mixes kernel entries up to ~17 with zeros. ``regularisation`` (lambda) 0 interpolates
    the displacements exactly; a positive value trades accuracy at the control points for less
    bending, and never changes affine maps.
    """
    points = lattice(grid_size, span)
    k = points.shape[0]
    kernel = tps_kernel(torch.cdist(points, points).square())
    affine = torch.cat([torch.ones(k, 1, dtype=torch.float64), points], dim=1)
    system = torch.zeros(k + 3, k + 3, dtype=torch.float64)
    system[:k, :k] = kernel + regularisation * torch.eye(k, dtype=torch.float64)
    system[:k, k:] = affine
    system[k:, :k] = affine.T
    return torch.linalg.inv(system)[:, :k].to(device=device, dtype=torch.float32).contiguous()


def _coefficients(displacement: torch.Tensor, span: float, regularisation: float):
    """``(coefficients [N, K + 3, 2], grid_size)`` of fp32 displacements ``[N, K, 2]``."""
    grid_size = math.isqrt(displacement.shape[1])
    if grid_size**2 != displacement.shape[1] or displacement.shape[-1] != 2:
        raise ValueError(
            f"TPS displacements must be [N, grid_size**2, 2], got {list(displacement.shape)}"
        )
    solve = tps_solve(grid_size, float(span), float(regularisation), displacement.device)
    return solve @ displacement, grid_size


def tps_transform_points(
    displacement: torch.Tensor,
    points: torch.Tensor,
    span: float = 1.0,
    regularisation: float = 0.0,
) -> torch.Tensor:
    """Where ``points`` (``[M, 2]`` or ``[N, M, 2]``) go under the splines that move the lattice
    over ``[-span, span]^2`` by ``displacement`` ``[N, K, 2]``; returns ``[N, M, 2]`` (fp32, also
    under autocast).

    The result is ``p + spline(p)``: exactly ``p`` for a zero displacement, where a spline of
    the absolute targets would carry the fp32 round-off of the solve.

    >>> shift = torch.full((1, 4, 2), 0.5)  # every control point moves by (0.5, 0.5)
    >>> tps_transform_points(shift, torch.zeros(1, 2)).tolist()
    [[[0.5, 0.5]]]
    """
    with torch.autocast(device_type=displacement.device.type, enabled=False):
        displacement, points = displacement.float(), points.float()
        coefficients, grid_size = _coefficients(displacement, span, regularisation)
        control = lattice(grid_size, span).to(device=points.device, dtype=torch.float32)
        return points + tps_features(points, control) @ coefficients


@cached
def _grid_features(
    height: int, width: int, align_corners: bool, grid_size: int, span: float, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The identity grid's points as planes ``[2, H*W]`` and their features ``[H*W, K + 3]``."""
    planes = grid_points(height, width, align_corners, device)[:2]
    control = lattice(grid_size, span).to(device=device, dtype=torch.float32)
    return planes, tps_features(planes.t(), control)


def tps_grid(
    displacement: torch.Tensor,
    out_shape,
    align_corners: bool,
    span: float = 1.0,
    regularisation: float = 0.0,
) -> torch.Tensor:
    """The sampling grid ``[N, H, W, 2]`` (fp32, also under autocast) of the splines that move
    the lattice over ``[-span, span]^2`` by ``displacement`` ``[N, K, 2]``, for an output of
    shape ``out_shape = (N, C, H, W)``: :func:`tps_transform_points` at every grid point.

    All the grids are one GEMM, ``[N*2, K+3] @ [K+3, H*W]``, against the grid's cached
    features, giving x and y displacement planes that the identity's planes are added to.

    >>> from stn_lab.geometry.grids import identity_grid
    >>> still = torch.zeros(1, 16, 2)
    >>> torch.equal(tps_grid(still, (1, 1, 5, 7), False), identity_grid(5, 7, False))
    True
    """
    n, _, height, width = out_shape
    with torch.autocast(device_type=displacement.device.type, enabled=False):
        coefficients, grid_size = _coefficients(displacement.float(), span, regularisation)
        points, features = _grid_features(
            height, width, align_corners, grid_size, float(span), displacement.device
        )
        rows = coefficients.transpose(1, 2).reshape(n * 2, -1)
        planes = (rows @ features.t()).view(n, 2, -1) + points
        return planes.transpose(1, 2).reshape(n, height, width, 2)
