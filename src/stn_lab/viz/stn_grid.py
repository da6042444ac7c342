"""Pictures of what a Spatial Transformer does to its input.

``plot_stn_grid`` draws a batch of inputs next to the STN's output for the same images;
``plot_stn_epochs`` draws how the transform of a fixed set of images evolves over training.
Each has a ``*_figure`` twin that returns the Matplotlib figure instead of writing it (for a
notebook, or to look inside the picture).

Images are shown as :mod:`stn_lab.viz.drawing` scales them (each on its own, grey scale or
RGB), one montage per panel. Parallel STNs whose outputs are stacked along channels
(C = k * C_in) are split into their k views, each drawn on its own. Figures are built with the
object-oriented Matplotlib API (no pyplot, no global state), so the functions are safe headless
and in notebooks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from matplotlib.figure import Figure

from stn_lab.atomic import atomic_png
from stn_lab.viz.drawing import DEFAULT_DPI, montage, show_image

__all__ = [
    "plot_stn_epochs",
    "plot_stn_grid",
    "split_views",
    "stn_epochs_figure",
    "stn_grid_figure",
]


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


def stn_grid_figure(
    inputs: torch.Tensor,
    transformed: torch.Tensor,
    nrow: int = 8,
    *,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Inputs (N, C, H, W) and STN outputs (N, C, h, w) as two montages, "Input" | "Transformed".

    Outputs of k parallel STNs stacked along channels (N, k * C, h, w) get one montage each,
    "Transformed 1" ... "Transformed k". ``nrow`` is the number of images per montage row. The
    default figsize is 1.25 in per image column per montage plus room for the titles.
    """
    if len(inputs) == 0:
        raise ValueError("no images to plot")
    if len(inputs) != len(transformed):
        raise ValueError(f"{len(inputs)} inputs but {len(transformed)} transformed images")
    views = split_views(torch.as_tensor(transformed), inputs.shape[1])
    grids = [montage(t, nrow=nrow) for t in (inputs, *views)]
    titles = ["Input"] + (
        ["Transformed"] if len(views) == 1 else [f"Transformed {i + 1}" for i in range(len(views))]
    )
    if figsize is None:
        ncol = max(1, min(nrow, len(inputs)))
        nrows = math.ceil(len(inputs) / ncol)
        figsize = (len(grids) * 1.25 * ncol + 0.5, 1.25 * nrows + 0.75)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, grid, title in zip(axes, grids, titles, strict=True):
        show_image(ax, grid)
        ax.set_title(title)
    return fig


def plot_stn_grid(
    inputs: torch.Tensor,
    transformed: torch.Tensor,
    path: str | Path,
    nrow: int = 8,
    *,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Write :func:`stn_grid_figure` as a PNG of ``figsize * dpi`` pixels; returns the path."""
    return atomic_png(stn_grid_figure(inputs, transformed, nrow, figsize=figsize), path, dpi=dpi)


def stn_epochs_figure(
    inputs: torch.Tensor,
    snapshots: Mapping[int, torch.Tensor],
    *,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """The fixed inputs (first row) and their STN transform at each epoch (one row each), each
    row one montage.

    ``snapshots`` maps a 1-based epoch number to the (N, C, h, w) transform of ``inputs`` at that
    epoch; rows are sorted by epoch and labelled "epoch k". With k parallel STNs stacked along
    channels each epoch gets k rows, "epoch e / STN j". The default figsize is 1 in per image
    plus 1 in for the row labels, by 1 in per row.
    """
    if len(inputs) == 0:
        raise ValueError("no images to plot")
    n = len(inputs)
    rows = [("input", montage(inputs, nrow=n))]
    for epoch in sorted(snapshots):
        snap = snapshots[epoch]
        if len(snap) != n:
            raise ValueError(f"snapshot for epoch {epoch} has {len(snap)} images, not {n}")
        views = split_views(torch.as_tensor(snap), inputs.shape[1])
        for j, view in enumerate(views):
            label = f"epoch {epoch}" if len(views) == 1 else f"epoch {epoch}\nSTN {j + 1}"
            rows.append((label, montage(view, nrow=n)))
    if figsize is None:
        figsize = (1.0 * n + 1.0, 1.0 * len(rows))
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, grid) in zip(axes, rows, strict=True):
        show_image(ax, grid)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    return fig


def plot_stn_epochs(
    inputs: torch.Tensor,
    snapshots: Mapping[int, torch.Tensor],
    path: str | Path,
    *,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Write :func:`stn_epochs_figure` as a PNG of ``figsize * dpi`` pixels; returns the path."""
    return atomic_png(stn_epochs_figure(inputs, snapshots, figsize=figsize), path, dpi=dpi)
