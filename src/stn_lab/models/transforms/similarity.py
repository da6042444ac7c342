"""The similarity family: rotation, isotropic scale and translation (4 parameters)."""

from __future__ import annotations

import torch

from stn_lab.models.transforms.base import MatrixTransform


class Similarity(MatrixTransform):
    """``theta = [angle (radians), s, tx, ty]``: ``s * R(angle)`` plus a translation."""

    num_params = 4

    def identity(self) -> torch.Tensor:
        return torch.tensor([0.0, 1.0, 0.0, 0.0])

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        angle, s, tx, ty = theta.unbind(dim=1)
        cos, sin = s * torch.cos(angle), s * torch.sin(angle)
        return torch.stack([cos, -sin, tx, sin, cos, ty], dim=1).view(-1, 2, 3)
