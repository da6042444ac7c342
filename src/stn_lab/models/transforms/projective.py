"""The projective family: 8 parameters, a homography with its bottom-right entry fixed to 1.

A homography can do everything an affine map can, plus perspective (keystone) distortions: lines
stay lines, but parallel lines may meet. The grid is not an affine grid, so this family builds
it itself instead of deriving from :class:`~stn_lab.models.transforms.base.MatrixTransform`.
"""

from __future__ import annotations

import torch

from stn_lab.geometry.projective import projective_grid
from stn_lab.models.transforms.base import TransformFamily


class Projective(TransformFamily):
    """``theta = [h0, ..., h7]`` is the homography ``[[h0, h1, h2], [h3, h4, h5], [h6, h7, 1]]``.

    The output point ``(x, y)`` samples the input at
    ``((h0 x + h1 y + h2) / w, (h3 x + h4 y + h5) / w)`` with ``w = h6 x + h7 y + 1``
    (:func:`~stn_lab.geometry.projective.projective_grid`). With ``h6 = h7 = 0`` this is the
    affine family.
    """

    num_params = 8

    def identity(self) -> torch.Tensor:
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """The ``[N, 3, 3]`` homography for parameters ``theta`` of shape ``[N, 8]``."""
        ones = theta.new_ones(theta.shape[0], 1)
        return torch.cat([theta, ones], dim=1).view(-1, 3, 3)

    def grid(
        self, theta: torch.Tensor, out_shape: tuple[int, int, int, int], align_corners: bool
    ) -> torch.Tensor:
        return projective_grid(self.matrix(theta), out_shape, align_corners)
