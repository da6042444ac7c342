"""The similarity family: rotation, isotropic scale and translation (4 parameters)."""

from __future__ import annotations

import torch

from stn_lab.geometry.grids import similarity_matrix
from stn_lab.models.transforms.base import MatrixTransform


class Similarity(MatrixTransform):
    """``theta = [angle (radians), s, tx, ty]``: ``s * R(angle)`` plus a translation.

    The matrix samples the input (:func:`~stn_lab.geometry.grids.similarity_matrix`), so a
    positive angle turns the image content counter-clockwise as displayed, as
    ``torchvision.transforms.functional.rotate`` does.
    """

    num_params = 4

    def identity(self) -> torch.Tensor:
        return torch.tensor([0.0, 1.0, 0.0, 0.0])

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        return similarity_matrix(*theta.unbind(dim=1))
