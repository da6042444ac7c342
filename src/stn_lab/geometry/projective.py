"""Homographies: the projective sampling grid and the homography that moves the image corners.

Coordinates follow the package convention (see :mod:`stn_lab.geometry`): normalised ``(x, y)``,
x to the right, y down, as ``F.grid_sample`` reads them.
"""

from __future__ import annotations

import torch

from stn_lab.geometry.grids import grid_points

# The image corners in normalised coordinates: top left, top right, bottom right, bottom left.
IMAGE_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0))

# Smallest |w| the perspective division may see. Output points whose homogeneous coordinate
# is closer to 0 than this are mapped to the line at infinity of the input.
MIN_DENOMINATOR = 1e-6


def safe_denominator(w: torch.Tensor, eps: float = MIN_DENOMINATOR) -> torch.Tensor:
    """``w`` pushed away from 0 to at least ``eps`` in magnitude, keeping its sign bit.

    Where ``w`` crosses 0 the output point maps to infinity: dividing by it gives inf/NaN, which
    would poison ``grid_sample`` and every gradient in the batch. Clamping keeps such points
    finite but far outside [-1, 1], so they sample padding, as the true (infinitely distant)
    point would. The sign is kept because points with ``w < 0`` lie beyond the horizon and map
    to the opposite side; flipping them would fold the image onto itself (``+0`` gives ``+eps``,
    ``-0`` gives ``-eps``: either is a point at infinity). ``copysign`` is one elementwise pass,
    where a ``torch.where`` on the sign would be several.

    >>> w = torch.tensor([0.5, 0.0, -0.0, -1e-9])
    >>> torch.equal(safe_denominator(w), torch.tensor([0.5, 1e-6, -1e-6, -1e-6]))
    True
    """
    return torch.copysign(w.abs().clamp(min=eps), w)


def projective_grid(homography: torch.Tensor, out_shape, align_corners: bool) -> torch.Tensor:
    """The sampling grid ``[N, H, W, 2]`` (fp32, also under autocast) of homographies
    ``[N, 3, 3]`` for an output of shape ``out_shape = (N, C, H, W)``.

    The output point ``(x, y)`` samples the input at ``(u / w, v / w)`` with
    ``(u, v, w) = H (x, y, 1)``; ``w`` passes through :func:`safe_denominator`.

    The grid is computed in fp32 whatever the autocast state: low-precision coordinates lose
    whole pixels, and the division amplifies the error. Each matrix row is mapped over the grid
    as its own plane ``[N, 3, H*W]``, so that the division runs over whole planes instead of
    broadcasting over an inner size of 2.

    >>> from stn_lab.geometry.grids import identity_grid
    >>> eye = torch.eye(3).unsqueeze(0)
    >>> torch.equal(projective_grid(eye, (1, 1, 2, 3), False), identity_grid(2, 3, False))
    True
    """
    n, _, height, width = out_shape
    with torch.autocast(device_type=homography.device.type, enabled=False):
        points = grid_points(height, width, align_corners, homography.device)
        planes = (homography.float().reshape(n * 3, 3) @ points).view(n, 3, -1)
        source = planes[:, :2] / safe_denominator(planes[:, 2:])
    return source.transpose(1, 2).reshape(n, height, width, 2)


def homography_from_corners(moved: torch.Tensor) -> torch.Tensor:
    """Homographies ``[N, 3, 3]`` (bottom-right entry 1) that take the moved corners
    ``[N, 4, 2]`` to :data:`IMAGE_CORNERS`.

    Used as a sampling grid, the output's point ``moved[:, k]`` samples the input's corner
    ``k``: the image is stretched so that its corners land on the moved positions. Each
    correspondence gives two linear equations in the eight free entries; the 8x8 systems are
    solved as one batch.

    >>> corners = torch.tensor(IMAGE_CORNERS).unsqueeze(0)
    >>> torch.allclose(homography_from_corners(corners), torch.eye(3))
    True
    """
    corners = torch.tensor(IMAGE_CORNERS, device=moved.device, dtype=moved.dtype)
    x, y = moved[..., 0], moved[..., 1]
    u, v = corners[:, 0].expand_as(x), corners[:, 1].expand_as(y)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    # The correspondence (x, y) -> (u, v) in h0..h7 (h8 = 1): u (h6 x + h7 y + 1) = h0 x + h1 y
    # + h2, and likewise for v.
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    system = torch.cat([rows_u, rows_v], dim=1)
    entries = torch.linalg.solve(system, torch.cat([u, v], dim=1))
    return torch.cat([entries, torch.ones_like(entries[:, :1])], dim=1).view(-1, 3, 3)
