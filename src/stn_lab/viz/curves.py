"""Training curves from a Lightning ``CSVLogger`` ``metrics.csv``.

The CSV is sparse: each row holds ``epoch``, ``step`` and only the metrics logged at that moment.
:func:`load_epoch_metrics` gathers one value per epoch for each metric (the mean of that epoch's
rows, so step-level logging is averaged) and :func:`plot_curves` draws loss and accuracy panels.
Epochs are shown 1-based, matching the "epoch k" labels of the STN snapshots.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stn_lab.viz.stn_grid import DEFAULT_DPI, _save

__all__ = ["CURVE_METRICS", "load_epoch_metrics", "plot_curves"]

#: Metrics drawn by :func:`plot_curves`, by panel.
CURVE_METRICS: dict[str, tuple[str, str]] = {
    "loss": ("train/loss", "val/loss"),
    "accuracy": ("train/acc", "val/acc"),
}


def _column_for(name: str, columns: Iterable[str]) -> str | None:
    """The CSV column holding ``name``: itself, else Lightning's ``<name>_epoch`` or ``_step``."""
    cols = set(columns)
    for candidate in (name, f"{name}_epoch", f"{name}_step"):
        if candidate in cols:
            return candidate
    return None


def load_epoch_metrics(
    metrics_csv: str | Path, names: Iterable[str] | None = None
) -> dict[str, dict[int, float]]:
    """Read ``metrics.csv`` into ``{metric: {epoch (0-based): mean value that epoch}}``.

    ``names`` defaults to every metric in :data:`CURVE_METRICS`; metrics without a column (or
    without any value) are left out. Raises ``FileNotFoundError`` if the file does not exist.
    """
    if names is None:
        names = [m for pair in CURVE_METRICS.values() for m in pair]
    with Path(metrics_csv).open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = reader.fieldnames or []
    out: dict[str, dict[int, float]] = {}
    for name in names:
        column = _column_for(name, columns)
        if column is None:
            continue
        values: dict[int, list[float]] = defaultdict(list)
        for row in rows:
            raw, epoch = row.get(column), row.get("epoch")
            if not raw or not epoch:
                continue
            try:
                values[int(float(epoch))].append(float(raw))
            except ValueError:
                continue
        if values:
            out[name] = {e: sum(v) / len(v) for e, v in sorted(values.items())}
    return out


def plot_curves(
    metrics_csv: str | Path,
    path: str | Path,
    *,
    figsize: tuple[float, float] = (10.0, 4.0),
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Draw loss (train & val) and accuracy (train & val) per epoch from a CSVLogger file.

    Missing metrics are skipped; an empty panel says "no data". Returns the path written.
    """
    metrics = load_epoch_metrics(metrics_csv)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (panel, names) in zip(axes, CURVE_METRICS.items(), strict=True):
        drawn = False
        for name in names:
            series = metrics.get(name)
            if not series:
                continue
            epochs = [e + 1 for e in series]
            ax.plot(epochs, list(series.values()), marker="o", markersize=3, label=name)
            drawn = True
        ax.set_title(panel.capitalize())
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path, dpi)
