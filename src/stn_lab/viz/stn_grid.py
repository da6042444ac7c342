"""Pictures of what a Spatial Transformer does to its input.

``plot_stn_grid`` draws a batch of inputs next to the STN's output for the same images;
``plot_stn_epochs`` draws how the transform of a fixed set of images evolves over training.

Images are model-space tensors (normalised, any range); each image is min-max scaled to [0, 1]
for display, so the pictures show structure rather than absolute intensity. One channel is drawn
in grey scale, three channels as RGB. Parallel STNs whose outputs are stacked along channels
(C = k * C_in) are split into their k views, each drawn on its own. Figures are built with the
object-oriented Matplotlib API (no pyplot, no global state), so the functions are safe headless
and in notebooks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["images_to_numpy", "make_grid", "plot_stn_epochs", "plot_stn_grid", "split_views"]

DEFAULT_DPI = 100


def images_to_numpy(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Convert an (N, C, H, W) batch with C in {1, 3} to display arrays in [0, 1].

    Returns (N, H, W) for one channel and (N, H, W, 3) for three. Each image is min-max scaled
    on its own; a constant image becomes all zeros.
    """
    x = torch.as_tensor(images).detach().to("cpu", torch.float32)
    if x.ndim == 3:  # (N, H, W): treat as single channel
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images shaped (N, 1|3, H, W), got {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    scaled = (x - lo) / (hi - lo).clamp_min(1e-12)
    scaled = torch.where(hi > lo, scaled, torch.zeros_like(scaled)).clamp(0.0, 1.0)
    arr = scaled.numpy()
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


def split_views(transformed: torch.Tensor, channels: int) -> list[torch.Tensor]:
    """Split STN outputs stacked along channels (k * ``channels``) into k (N, channels, h, w).

    A tensor that already has ``channels`` channels comes back as a one-item list.
    """
    c = transformed.shape[1]
    if channels < 1 or c % channels != 0:
        raise ValueError(
            f"{c} transformed channels are not a multiple of {channels} input channels"
        )
    return list(torch.split(transformed, channels, dim=1))


def make_grid(
    images: np.ndarray, nrow: int = 8, pad: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tile display arrays from :func:`images_to_numpy` into one image, ``nrow`` images per row."""
    n, h, w = images.shape[:3]
    ncol = max(1, min(nrow, n))
    rows = math.ceil(n / ncol)
    shape = (rows * (h + pad) + pad, ncol * (w + pad) + pad, *images.shape[3:])
    grid = np.full(shape, pad_value, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = images[i]
    return grid


def _show(ax: Axes, image: np.ndarray) -> None:
    """Draw one display array without axes decorations."""
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` as a PNG (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def plot_stn_grid(
    inputs: torch.Tensor,
    transformed: torch.Tensor,
    path: str | Path,
    nrow: int = 8,
    *,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Draw inputs (N, C, H, W) and STN outputs (N, C, h, w) as two grids, "Input" | "Transformed".

    Outputs of k parallel STNs stacked along channels (N, k * C, h, w) get one grid each,
    "Transformed 1" ... "Transformed k". ``nrow`` is the number of images per grid row. The PNG
    is ``figsize * dpi`` pixels; the default figsize is 1.25 in per image column per grid plus
    room for the titles. Returns the path written.
    """
    if len(inputs) == 0:
        raise ValueError("no images to plot")
    if len(inputs) != len(transformed):
        raise ValueError(f"{len(inputs)} inputs but {len(transformed)} transformed images")
    views = split_views(torch.as_tensor(transformed), inputs.shape[1])
    grids = [make_grid(images_to_numpy(t), nrow=nrow) for t in (inputs, *views)]
    titles = ["Input"] + (
        ["Transformed"] if len(views) == 1 else [f"Transformed {i + 1}" for i in range(len(views))]
    )
    if figsize is None:
        ncol = max(1, min(nrow, len(inputs)))
        nrows = math.ceil(len(inputs) / ncol)
        figsize = (len(grids) * 1.25 * ncol + 0.5, 1.25 * nrows + 0.75)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, len(grids))
    for ax, grid, title in zip(axes, grids, titles, strict=True):
        _show(ax, grid)
        ax.set_title(title)
    return _save(fig, path, dpi)


def plot_stn_epochs(
    inputs: torch.Tensor,
    snapshots: Mapping[int, torch.Tensor],
    path: str | Path,
    *,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Draw the fixed inputs (first row) and their STN transform at each epoch (one row each).

    ``snapshots`` maps a 1-based epoch number to the (N, C, h, w) transform of ``inputs`` at that
    epoch; rows are sorted by epoch and labelled "epoch k". With k parallel STNs stacked along
    channels each epoch gets k rows, "epoch e / STN j". The default figsize is 1 in per image
    plus 1 in for the row labels. Returns the path written.
    """
    if len(inputs) == 0:
        raise ValueError("no images to plot")
    rows = [("input", images_to_numpy(inputs))]
    for epoch in sorted(snapshots):
        snap = snapshots[epoch]
        if len(snap) != len(inputs):
            raise ValueError(
                f"snapshot for epoch {epoch} has {len(snap)} images, not {len(inputs)}"
            )
        views = split_views(torch.as_tensor(snap), inputs.shape[1])
        for j, view in enumerate(views):
            label = f"epoch {epoch}" if len(views) == 1 else f"epoch {epoch}\nSTN {j + 1}"
            rows.append((label, images_to_numpy(view)))
    n = len(inputs)
    if figsize is None:
        figsize = (1.0 * n + 1.0, 1.0 * len(rows))
    fig = Figure(figsize=figsize, layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), n, squeeze=False))
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            _show(ax, images[c])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    return _save(fig, path, dpi)
