"""The general affine family: 6 free parameters, a full 2x3 matrix."""

from __future__ import annotations

import torch

from stn_lab.models.transforms.base import MatrixTransform


class Affine(MatrixTransform):
    """``theta`` is the row-major 2x3 matrix ``[a, b, tx, c, d, ty]``."""

    num_params = 6

    def identity(self) -> torch.Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        return theta.view(-1, 2, 3)
