"""Confusion-matrix artefacts: a row-normalised heat map (PNG) and the raw counts (CSV), each
written atomically.

Rows are true classes and columns predicted classes, as in ``torchmetrics``' ``ConfusionMatrix``.
The heat map shows each row divided by its total, so the diagonal is the per-class recall.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from stn_lab.atomic import atomic_csv, atomic_png
from stn_lab.viz.drawing import DEFAULT_DPI

__all__ = [
    "confusion_figure",
    "normalize_rows",
    "plot_confusion_matrix",
    "read_confusion_csv",
    "write_confusion_csv",
]

CSV_CORNER = "true\\pred"


def _as_matrix(matrix: Sequence[Sequence[int]] | np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    """Return ``matrix`` as an (n, n) int64 array, checking its shape against ``n`` class names."""
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    arr = np.asarray(matrix)
    if arr.shape != (n, n):
        raise ValueError(f"confusion matrix shaped {arr.shape} does not match {n} class names")
    return arr.astype(np.int64)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Divide each row by its sum (per-class recall); rows with no samples become zeros."""
    m = np.asarray(matrix, dtype=np.float64)
    totals = m.sum(axis=1, keepdims=True)
    return np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)


def confusion_figure(
    matrix: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    *,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """The row-normalised confusion matrix with class names on both axes and cell values.

    The default figsize is ``0.5 * n + 3`` inches square for ``n`` classes.
    """
    names = [str(c) for c in class_names]
    n = len(names)
    norm = normalize_rows(_as_matrix(matrix, n))
    if figsize is None:
        side = 0.5 * n + 3.0
        figsize = (side, side)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title("Confusion matrix (row-normalised)")
    fontsize = max(4.0, min(9.0, 90.0 / max(n, 1)))
    for i in range(n):
        for j in range(n):
            value = norm[i, j]
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if value > 0.5 else "black",
            )
    return fig


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    path: str | Path,
    *,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Write :func:`confusion_figure` as a PNG; returns the path."""
    return atomic_png(confusion_figure(matrix, class_names, figsize=figsize), path, dpi=dpi)


def write_confusion_csv(
    matrix: Sequence[Sequence[int]] | np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    path: str | Path,
) -> Path:
    """Write raw counts: a header ``true\\pred,<names...>`` then one row ``<name>,<counts...>``.

    Returns the path written.
    """
    names = [str(c) for c in class_names]
    counts = _as_matrix(matrix, len(names))
    rows = [[name, *row] for name, row in zip(names, counts.tolist(), strict=True)]
    return atomic_csv(path, [CSV_CORNER, *names], rows)


def read_confusion_csv(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read a file written by :func:`write_confusion_csv`; returns (counts, class_names)."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.reader(fh))
    names = rows[0][1:]
    counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]], dtype=np.int64)
    return counts.reshape(len(rows) - 1, len(names)), names
