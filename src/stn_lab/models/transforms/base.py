"""The contract every transform family fulfils, plus a base for families that are 2x3 matrices."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def base_grid(out_shape: tuple[int, int, int, int], align_corners: bool, device) -> torch.Tensor:
    """The identity grid ``[1, H, W, 2]`` in fp32, exactly as ``F.affine_grid`` builds it.

    Taking it from ``affine_grid`` itself (rather than re-deriving the pixel-centre offsets of
    the two ``align_corners`` conventions) makes the identity of every family that starts from
    this grid agree bit for bit with the affine families.
    """
    eye = torch.eye(2, 3, device=device, dtype=torch.float32).unsqueeze(0)
    return F.affine_grid(eye, [1, *out_shape[1:]], align_corners=align_corners)


class TransformFamily(nn.Module):
    """A parameterised family of spatial transforms.

    Subclasses set ``num_params``, implement :meth:`identity` and :meth:`grid`. The grid maps
    each output location (normalised to [-1, 1], as ``grid_sample`` expects) to the input
    location it samples from.
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
        matrix = self.matrix(theta)
        return F.affine_grid(matrix, list(out_shape), align_corners=align_corners)
