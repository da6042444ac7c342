"""The contract every transform family fulfils, plus a base for families that are 2x3 matrices."""

from __future__ import annotations

import torch
from torch import nn

from stn_lab.ops.affine_grid import affine_grid


class TransformFamily(nn.Module):
    """A parameterised family of spatial transforms.

    Subclasses set ``num_params``, implement :meth:`identity` and :meth:`grid`. The grid maps
    each output location (normalised to [-1, 1], as ``grid_sample`` expects; see
    :mod:`stn_lab.geometry` for the convention) to the input location it samples from.
    """

    num_params: int

    def identity(self) -> torch.Tensor:
        """Parameters (shape ``[num_params]``) for which :meth:`grid` is the identity."""
        raise NotImplementedError

    def grid(
        self, theta: torch.Tensor, out_shape: tuple[int, int, int, int], align_corners: bool
    ) -> torch.Tensor:
        """Sampling grid ``[N, H_out, W_out, 2]`` for parameters ``theta`` of shape ``[N, P]``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_params={self.num_params}"


class MatrixTransform(TransformFamily):
    """A family whose members are 2x3 affine matrices; subclasses only build the matrix.

    Args:
        bounded: squash each parameter's distance from the identity through ``tanh`` (so it
            stays within +-``BOUND`` of the identity): a safeguard against runaway transforms
            that sample far outside the image. ``BOUND`` < 1 keeps an isotropic scale above 0.
    """

    BOUND = 0.9

    def __init__(self, bounded: bool = False):
        super().__init__()
        self.bounded = bounded

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """The ``[N, 2, 3]`` affine matrix for parameters ``theta``."""
        raise NotImplementedError

    def grid(
        self, theta: torch.Tensor, out_shape: tuple[int, int, int, int], align_corners: bool
    ) -> torch.Tensor:
        theta = theta.float()
        if self.bounded:
            identity = self.identity().to(theta.device)
            theta = identity + self.BOUND * torch.tanh(theta - identity)
        return affine_grid(self.matrix(theta), out_shape, align_corners)
