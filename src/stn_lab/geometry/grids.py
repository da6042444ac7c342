"""Identity grids, homogeneous grid points and 2x3 affine matrices (rotation, scale, shift).

Coordinates follow the package convention (see :mod:`stn_lab.geometry`): normalised ``(x, y)``,
x to the right, y *down*, as ``F.grid_sample`` reads them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stn_lab.geometry.cache import cached


def identity_grid(height: int, width: int, align_corners: bool, device=None) -> torch.Tensor:
    """The identity sampling grid ``[1, H, W, 2]`` in fp32, exactly as ``F.affine_grid`` builds it.

    Taken from ``affine_grid`` itself (rather than re-deriving the pixel-centre offsets of the
    two ``align_corners`` conventions), so that every grid built on it agrees bit for bit with
    the affine grids at the identity.

    >>> identity_grid(2, 2, align_corners=False)[0, 0].tolist()  # the top row
    [[-0.5, -0.5], [0.5, -0.5]]
    >>> identity_grid(2, 2, align_corners=True)[0, 0].tolist()
    [[-1.0, -1.0], [1.0, -1.0]]
    """
    eye = torch.eye(2, 3, device=device, dtype=torch.float32).unsqueeze(0)
    return F.affine_grid(eye, [1, 1, height, width], align_corners=align_corners)


@cached
def grid_points(height: int, width: int, align_corners: bool, device) -> torch.Tensor:
    """``[3, H*W]`` fp32, cached: the homogeneous coordinates ``(x, y, 1)`` of every point of the
    identity grid, row-major (x varies fastest). ``M @ grid_points(...)`` maps the whole grid
    through a 2x3 or 3x3 matrix ``M`` as coordinate planes.
    """
    points = identity_grid(height, width, align_corners, device).view(-1, 2)
    return torch.cat([points, torch.ones_like(points[:, :1])], dim=1).t().contiguous()


def similarity_matrix(
    angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor
) -> torch.Tensor:
    """``[N, 2, 3]`` matrices ``[[s cos a, -s sin a, tx], [s sin a, s cos a, ty]]`` from ``[N]``
    angles (radians), scales and shifts.

    Rotation convention: the matrix maps ``(1, 0)`` towards ``(0, 1)``, i.e. from the right
    towards the *bottom* of the image, since y points down. Applied to points (a forward map), a
    positive angle turns them **clockwise** as displayed. Used as a sampling grid it is the
    backward map, so it turns the image content the other way, **counter-clockwise**.

    >>> m = similarity_matrix(*torch.tensor([[torch.pi / 2], [2.0], [0.0], [0.0]]))
    >>> [round(v) for v in (m[0, :, :2] @ torch.tensor([1.0, 0.0])).tolist()]  # right -> down
    [0, 2]
    """
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    return torch.stack([cos, -sin, tx, sin, cos, ty], dim=1).view(-1, 2, 3)


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """The inverses ``[N, 2, 3]`` of invertible affine maps ``[N, 2, 3]`` (closed form).

    Turns a forward map (where each input point goes) into the sampling matrix that realises it
    (where each output point comes from), and back.

    >>> m = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 4.0, -1.0]]])  # x -> 2 x + 1, y -> 4 y - 1
    >>> invert_affine(m)[0].diagonal().tolist(), invert_affine(m)[0, :, 2].tolist()
    ([0.5, 0.25], [-0.5, 0.25])
    """
    a, b, tx, c, d, ty = matrix.reshape(-1, 6).unbind(dim=1)
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    rows = [ia, ib, -(ia * tx + ib * ty), ic, id_, -(ic * tx + id_ * ty)]
    return torch.stack(rows, dim=1).view(-1, 2, 3)
