"""Training curves from a Lightning ``CSVLogger`` ``metrics.csv``.

The CSV is sparse: each row holds ``epoch``, ``step`` and only the metrics logged at that moment.
:func:`load_epoch_metrics` gathers one value per epoch for each named column (the mean of that
epoch's rows, for a metric logged more than once in an epoch, such as a validation every
``val_check_interval`` steps) and :func:`plot_curves` draws loss and accuracy panels. Epochs are
shown 1-based, matching the "epoch k" labels of the STN snapshots and the epoch log line.

The train loss curve is ``train/loss_epoch``, the mean over every step of the epoch that the
module logs and the epoch line prints. The ``train/loss`` column holds only the steps the
loggers wrote (every ``log_every_n_steps``), so its mean is not the epoch's loss and it is not
drawn.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stn_lab.atomic import atomic_png
from stn_lab.viz.drawing import DEFAULT_DPI

__all__ = ["CURVE_METRICS", "curves_figure", "load_epoch_metrics", "plot_curves"]

#: The ``metrics.csv`` columns :func:`plot_curves` draws, by panel, with each curve's label.
CURVE_METRICS: dict[str, dict[str, str]] = {
    "loss": {"train/loss_epoch": "train/loss_epoch (epoch mean)", "val/loss": "val/loss"},
    "accuracy": {"train/acc": "train/acc (epoch)", "val/acc": "val/acc"},
}


def load_epoch_metrics(
    metrics_csv: str | Path, names: Iterable[str] | None = None
) -> dict[str, dict[int, float]]:
    """Read ``metrics.csv`` into ``{column: {epoch (0-based): mean value that epoch}}``.

    ``names`` defaults to every column in :data:`CURVE_METRICS`; columns that are absent (or
    hold no value) are left out. Raises ``FileNotFoundError`` if the file does not exist.
    """
    if names is None:
        names = [name for panel in CURVE_METRICS.values() for name in panel]
    with Path(metrics_csv).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, dict[int, float]] = {}
    for name in names:
        values: dict[int, list[float]] = defaultdict(list)
        for row in rows:
            raw, epoch = row.get(name), row.get("epoch")
            if not raw or not epoch:
                continue
            try:
                values[int(float(epoch))].append(float(raw))
            except ValueError:
                continue
        if values:
            out[name] = {e: sum(v) / len(v) for e, v in sorted(values.items())}
    return out


def curves_figure(metrics_csv: str | Path, *, figsize: tuple[float, float] = (10.0, 4.0)) -> Figure:
    """Loss (train epoch mean and val) and accuracy (train and val) per epoch, two panels.

    Missing metrics are skipped; an empty panel says "no data".
    """
    metrics = load_epoch_metrics(metrics_csv)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (panel, labels) in zip(axes, CURVE_METRICS.items(), strict=True):
        drawn = False
        for name, label in labels.items():
            series = metrics.get(name)
            if not series:
                continue
            epochs = [e + 1 for e in series]
            ax.plot(epochs, list(series.values()), marker="o", markersize=3, label=label)
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
    return fig


def plot_curves(
    metrics_csv: str | Path,
    path: str | Path,
    *,
    figsize: tuple[float, float] = (10.0, 4.0),
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Write :func:`curves_figure` for a CSVLogger file as a PNG; returns the path."""
    return atomic_png(curves_figure(metrics_csv, figsize=figsize), path, dpi=dpi)
