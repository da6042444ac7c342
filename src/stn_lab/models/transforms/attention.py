"""The attention family: isotropic scale and translation (3 parameters), a crop-and-zoom window."""

from __future__ import annotations

import torch

from stn_lab.models.transforms.base import MatrixTransform


class Attention(MatrixTransform):
    """``theta = [s, tx, ty]`` gives the matrix ``[[s, 0, tx], [0, s, ty]]``."""

    num_params = 3

    def identity(self) -> torch.Tensor:
        return torch.tensor([1.0, 0.0, 0.0])

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        s, tx, ty = theta.unbind(dim=1)
        zero = torch.zeros_like(s)
        return torch.stack([s, zero, tx, zero, s, ty], dim=1).view(-1, 2, 3)
