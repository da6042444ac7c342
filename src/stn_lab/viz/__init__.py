"""Visualisation for stn_lab runs: STN grids, training curves, confusion matrices, Grad-CAM.

The plotting functions take tensors/arrays (or a ``metrics.csv``) and write PNG files; they use
the object-oriented Matplotlib API, so they need no display and leave no open pyplot figures.
:class:`RunArtefacts` is the Lightning callback that writes all of them for a run.
"""

from stn_lab.viz.callbacks import ARTEFACT_FILES, RunArtefacts
from stn_lab.viz.confusion import (
    normalize_rows,
    plot_confusion_matrix,
    read_confusion_csv,
    write_confusion_csv,
)
from stn_lab.viz.curves import load_epoch_metrics, plot_curves
from stn_lab.viz.gradcam import GradCAM, eval_mode, plot_gradcam
from stn_lab.viz.stn_grid import (
    images_to_numpy,
    make_grid,
    plot_stn_epochs,
    plot_stn_grid,
    split_views,
)

__all__ = [
    "ARTEFACT_FILES",
    "GradCAM",
    "RunArtefacts",
    "eval_mode",
    "images_to_numpy",
    "load_epoch_metrics",
    "make_grid",
    "normalize_rows",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_gradcam",
    "plot_stn_epochs",
    "plot_stn_grid",
    "read_confusion_csv",
    "split_views",
    "write_confusion_csv",
]
