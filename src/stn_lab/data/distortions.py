"""Batched, seeded geometric distortions applied to image tensors (on the CPU or the GPU).

A distortion draws one row of random parameters per image (:meth:`Distortion.sample`) and then
warps the whole batch at once (:meth:`Distortion.apply`). Splitting the two lets evaluation sets
be distorted deterministically: the parameters for sample ``i`` are row ``i`` of a table drawn
from a fixed generator, whatever the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _check_range(name: str, values: Sequence[float], positive: bool = False) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if low > high:
        raise ValueError(f"{name} range is reversed: [{low}, {high}] (expected low <= high)")
    if positive and low <= 0:
        raise ValueError(f"{name} must be > 0, got [{low}, {high}]")
    return low, high


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


class Distortion:
    """Base class: ``sample`` parameters, ``apply`` them, and say the output size."""

    def out_size(self, size: int) -> int:
        return size

    def sample(self, n: int, size: int, generator=None, device=None) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, generator=None) -> torch.Tensor:
        params = self.sample(len(images), images.shape[-1], generator, images.device)
        return self.apply(images, params)


class AffineDistortion(Distortion):
    """Rotation, isotropic scale and translation, optionally onto a larger canvas.

    Args:
        rotation: angle range in degrees, e.g. ``[-45, 45]``.
        scale: scale-factor range, e.g. ``[0.7, 1.2]``; both ends must be > 0.
        translation: shift range as a fraction of the image size (each axis, uniform).
        canvas: output side in pixels; the image is placed at a uniformly random position on
            it (so it may move by up to ``(canvas - size) / 2`` pixels). ``None`` keeps the size.
    """

    def __init__(
        self,
        rotation: Sequence[float] = (0.0, 0.0),
        scale: Sequence[float] = (1.0, 1.0),
        translation: float = 0.0,
        canvas: int | None = None,
    ):
        self.rotation = _check_range("rotation", rotation)
        self.scale = _check_range("scale", scale, positive=True)
        if translation < 0:
            raise ValueError(f"translation must be >= 0, got {translation}")
        self.translation = float(translation)
        self.canvas = canvas

    def out_size(self, size: int) -> int:
        if self.canvas is None:
            return size
        if self.canvas < size:
            raise ValueError(f"canvas {self.canvas}px is smaller than the {size}px image")
        return self.canvas

    def sample(self, n: int, size: int, generator=None, device=None) -> torch.Tensor:
        """``[n, 4]``: angle (degrees), scale, x shift and y shift (pixels of the output)."""
        max_shift = self.translation * size + (self.out_size(size) - size) / 2
        return torch.stack(
            [
                _uniform(n, *self.rotation, generator, device),
                _uniform(n, *self.scale, generator, device),
                _uniform(n, -max_shift, max_shift, generator, device),
                _uniform(n, -max_shift, max_shift, generator, device),
            ],
            dim=1,
        )

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        size = images.shape[-1]
        out = self.out_size(size)
        params = params.to(device=images.device, dtype=torch.float32)
        angle, scale, tx, ty = params.unbind(dim=1)
        angle = angle * (math.pi / 180.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Output pixel p (normalised over the canvas) samples input point
        # (out/size) * R^T (p - t) / s, with t normalised over the canvas as well.
        k = (out / size) / scale
        txn, tyn = tx / (out / 2), ty / (out / 2)
        a, b, c, d = k * cos, k * sin, -k * sin, k * cos
        theta = torch.stack([a, b, -(a * txn + b * tyn), c, d, -(c * txn + d * tyn)], dim=1).view(
            -1, 2, 3
        )
        grid = F.affine_grid(theta, [len(images), images.shape[1], out, out], align_corners=False)
        return F.grid_sample(images.float(), grid, padding_mode="zeros", align_corners=False)
