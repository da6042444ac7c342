"""Batched, seeded image distortions (CPU or GPU): the paper's R, RTS, P, E and TC sets.

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

from stn_lab.errors import ConfigError
from stn_lab.geometry.grids import invert_affine, similarity_matrix
from stn_lab.geometry.projective import IMAGE_CORNERS, homography_from_corners, projective_grid
from stn_lab.geometry.tps import tps_grid
from stn_lab.ops.affine_grid import affine_grid


def _check_range(name: str, values: Sequence[float], positive: bool = False) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if low > high:
        raise ConfigError(
            f"distortion.{name} range is reversed: [{low}, {high}] (expected low <= high)"
        )
    if positive and low <= 0:
        raise ConfigError(f"distortion.{name} must be > 0, got [{low}, {high}]")
    return low, high


def _check_canvas(canvas: int, size: int) -> int:
    if canvas < size:
        raise ConfigError(f"distortion.canvas {canvas}px is smaller than the {size}px image")
    return canvas


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

    Rotation convention: a positive angle turns the image **clockwise** as displayed (y points
    down), the opposite of ``torchvision``'s and ``kornia``'s ``rotate``: the angle ``a`` gives
    what ``torchvision.transforms.functional.rotate(image, -a)`` gives (bilinear, zero fill).
    Symmetric ranges such as ``[-45, 45]`` do not depend on it; ``[0, 90]`` turns clockwise.

    Args:
        rotation: angle range in degrees (positive: clockwise), e.g. ``[-45, 45]``.
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
            raise ConfigError(f"distortion.translation must be >= 0, got {translation}")
        self.translation = float(translation)
        self.canvas = canvas

    def out_size(self, size: int) -> int:
        return size if self.canvas is None else _check_canvas(self.canvas, size)

    def sample(self, n: int, size: int, generator=None, device=None) -> torch.Tensor:
        """``[n, 4]``: angle (degrees, positive clockwise), scale, x shift and y shift (pixels of
        the output, positive to the right and down)."""
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
        # Where each input point goes, in coordinates normalised over the canvas: the image
        # (size/out of the canvas) scaled, turned clockwise (y points down) and shifted. The
        # sampling grid is its inverse: where each output pixel comes from.
        moved = similarity_matrix(
            angle * (math.pi / 180.0), scale * (size / out), tx / (out / 2), ty / (out / 2)
        )
        shape = (len(images), images.shape[1], out, out)
        return _sample_grid(images, affine_grid(invert_affine(moved), shape, align_corners=False))


def _sample_grid(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(images.float(), grid, padding_mode="zeros", align_corners=False)


class ProjectiveDistortion(Distortion):
    """P: each of the four corners moves by normal noise of ``sigma`` times the image size."""

    def __init__(self, sigma: float = 0.1):
        if sigma < 0:
            raise ConfigError(f"distortion.sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def sample(self, n: int, size: int, generator=None, device=None) -> torch.Tensor:
        """``[n, 8]``: x and y offsets of the 4 corners, in normalised units (2 = image size)."""
        return 2 * self.sigma * torch.randn(n, 8, generator=generator, device=device)

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        corners = torch.tensor(IMAGE_CORNERS, device=images.device)
        moved = corners + params.to(images.device, torch.float32).view(-1, 4, 2)
        homography = homography_from_corners(moved)
        return _sample_grid(images, projective_grid(homography, images.shape, align_corners=False))


class ElasticDistortion(Distortion):
    """E: a thin-plate-spline warp whose control points move by normal noise of ``sigma`` px."""

    def __init__(self, sigma: float = 1.5, grid_size: int = 4):
        if sigma < 0:
            raise ConfigError(f"distortion.sigma must be >= 0, got {sigma}")
        if grid_size < 2:
            raise ConfigError(f"distortion.grid_size must be >= 2, got {grid_size}")
        self.sigma = float(sigma)
        self.grid_size = grid_size

    def sample(self, n: int, size: int, generator=None, device=None) -> torch.Tensor:
        """``[n, 2K]``: control-point offsets ``(x0, y0, x1, ...)`` in normalised units
        (``sigma`` px at this size), for the ``K = grid_size**2`` points of the lattice."""
        scale = self.sigma * 2 / size
        count = 2 * self.grid_size**2
        return scale * torch.randn(n, count, generator=generator, device=device)

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # Each control point samples the input at its offset position: an interpolating spline.
        displacement = params.to(images.device, torch.float32).view(len(images), -1, 2)
        return _sample_grid(images, tps_grid(displacement, images.shape, align_corners=False))


class ClutterDistortion(Distortion):
    """TC: the image at a random whole-pixel place on a larger canvas, plus clutter patches.

    Each of ``patches`` clutter patches is a ``patch_size`` square cropped from another image
    of the batch at a random place, pasted at a random place of the canvas (by maximum, so it
    adds strokes without erasing the digit). Placement and pasting are index copies, not
    resampling: the digit stays sharp and the set runs at the speed of a memory copy.
    """

    def __init__(self, canvas: int = 60, patches: int = 6, patch_size: int = 6):
        if patches < 0 or patch_size < 1:
            raise ConfigError(
                "distortion.patches must be >= 0 and distortion.patch_size >= 1, "
                f"got {patches} and {patch_size}"
            )
        if patch_size > canvas:
            raise ConfigError(
                f"distortion.patch_size {patch_size} is larger than distortion.canvas {canvas}"
            )
        self.canvas, self.patches, self.patch_size = canvas, patches, patch_size

    def out_size(self, size: int) -> int:
        return _check_canvas(self.canvas, size)

    def sample(self, n: int, size: int, generator=None, device=None) -> torch.Tensor:
        """``[n, 2 + 5 * patches]`` uniform numbers in [0, 1): the image's x and y place, then
        per patch: which other image, crop x, crop y, paste x, paste y."""
        return torch.rand(n, 2 + 5 * self.patches, generator=generator, device=device)

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        n, channels, size = len(images), images.shape[1], images.shape[-1]
        out, k, device = self.out_size(size), self.patch_size, images.device
        params = params.to(device, torch.float32)
        source = images.float().reshape(n, channels, size * size)

        def offsets(u: torch.Tensor, room: int) -> torch.Tensor:
            """Whole-pixel starts in ``[0, room)`` from uniform numbers ``u`` in [0, 1)."""
            return (u * room).long().clamp(max=room - 1)

        def square(top: torch.Tensor, left: torch.Tensor, side: int, width: int) -> torch.Tensor:
            """Flat indices ``[..., side*side]`` of ``side``-squares at (top, left), row width
            ``width``."""
            steps = torch.arange(side, device=device)
            cells = (steps.view(-1, 1) * width + steps).flatten()
            return (top * width + left).unsqueeze(-1) + cells

        # The image, copied whole onto the canvas at a random place (flat-index scatter).
        canvas = source.new_zeros(n, channels, out * out)
        place = square(offsets(params[:, 1], out - size + 1),
                       offsets(params[:, 0], out - size + 1), size, out)  # fmt: skip
        canvas.scatter_(2, place.unsqueeze(1).expand(-1, channels, -1), source)
        if self.patches and n > 1:
            u = params[:, 2:].view(n, self.patches, 5)
            rows = torch.arange(n, device=device).view(-1, 1)
            other = (rows + 1 + (u[..., 0] * (n - 1)).long().clamp(max=n - 2)) % n  # [n, P]
            crop = square(offsets(u[..., 2], size - k + 1), offsets(u[..., 1], size - k + 1),
                          k, size)  # fmt: skip
            flat_source = source.transpose(0, 1).reshape(channels, -1)  # [C, N*H*W]
            patches = flat_source[:, (other.unsqueeze(-1) * size * size + crop).view(n, -1)]
            paste = square(offsets(u[..., 4], out - k + 1), offsets(u[..., 3], out - k + 1),
                           k, out).view(n, 1, -1)  # fmt: skip
            # All patches at once; amax keeps the brighter pixel where they overlap.
            canvas.scatter_reduce_(
                2, paste.expand(-1, channels, -1), patches.transpose(0, 1), reduce="amax"
            )
        return canvas.view(n, channels, out, out)
