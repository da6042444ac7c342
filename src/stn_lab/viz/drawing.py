"""What every picture in ``viz/`` shares: images scaled for display, montages of a batch (built
by ``torchvision.utils.make_grid``) and image axes without decorations.

Images are model-space tensors (normalised, any range); each image is min-max scaled to [0, 1]
on its own, so the pictures show structure rather than absolute intensity. One channel is drawn
in grey scale, three channels as RGB. Every figure is written with
:func:`stn_lab.atomic.atomic_png`, so a picture on disk is always whole.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from torchvision.utils import make_grid

__all__ = ["DEFAULT_DPI", "images_to_numpy", "montage", "scale_images", "show_image"]

DEFAULT_DPI = 100
PAD = 2  # pixels between the images of a montage
PAD_VALUE = 1.0  # white between images, which display scaling never produces inside one


def scale_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """An (N, C, H, W) batch with C in {1, 3} (or (N, H, W)) as float32 in [0, 1] on the CPU,
    each image min-max scaled on its own; a constant image becomes all zeros."""
    x = torch.as_tensor(images).detach().to("cpu", torch.float32)
    if x.ndim == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images shaped (N, 1|3, H, W), got {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    scaled = (x - lo) / (hi - lo).clamp_min(1e-12)
    return torch.where(hi > lo, scaled, torch.zeros_like(scaled)).clamp(0.0, 1.0)


def _display(x: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) in [0, 1] -> (..., H, W) for one channel or (..., H, W, 3) for three."""
    arr = x.numpy()
    return arr[..., 0, :, :] if arr.shape[-3] == 1 else np.moveaxis(arr, -3, -1)


def images_to_numpy(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Display arrays in [0, 1]: (N, H, W) for one channel, (N, H, W, 3) for three."""
    return _display(scale_images(images))


def montage(images: torch.Tensor | np.ndarray, nrow: int = 8) -> np.ndarray:
    """One display array of the batch, ``nrow`` images per row, each scaled on its own and
    ``PAD`` white pixels apart: (H', W') for one channel, (H', W', 3) for three."""
    x = scale_images(images)
    grid = make_grid(x, nrow=max(1, nrow), padding=PAD, pad_value=PAD_VALUE)
    # make_grid repeats a single channel into three; keep one so it is drawn in grey scale.
    return _display(grid[:1] if x.shape[1] == 1 else grid)


def show_image(ax: Axes, image: np.ndarray) -> None:
    """Draw one display array on ``ax`` without ticks."""
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
