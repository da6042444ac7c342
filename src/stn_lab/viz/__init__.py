"""Visualisation for stn_lab runs: STN grids, training curves, confusion matrices, Grad-CAM.

The plotting functions take tensors/arrays (or a ``metrics.csv``) and write PNG files, each
through :func:`stn_lab.atomic.atomic_png`; every one has a ``*_figure`` twin that returns the
Matplotlib figure instead (for a notebook, or a test that looks inside the picture). They use
the object-oriented Matplotlib API, so they need no display and leave no open pyplot figures.
:class:`RunArtefacts` is the Lightning callback that writes all of them for a run.
"""

from stn_lab.viz.callbacks import ARTEFACT_FILES, RunArtefacts
from stn_lab.viz.confusion import (
    confusion_figure,
    normalize_rows,
    plot_confusion_matrix,
    read_confusion_csv,
    write_confusion_csv,
)
from stn_lab.viz.curves import CURVE_METRICS, curves_figure, load_epoch_metrics, plot_curves
from stn_lab.viz.drawing import images_to_numpy, montage, scale_images
from stn_lab.viz.gradcam import GradCAM, eval_mode, gradcam_figure, plot_gradcam
from stn_lab.viz.stn_grid import (
    plot_stn_epochs,
    plot_stn_grid,
    split_views,
    stn_epochs_figure,
    stn_grid_figure,
)

__all__ = [
    "ARTEFACT_FILES",
    "CURVE_METRICS",
    "GradCAM",
    "RunArtefacts",
    "confusion_figure",
    "curves_figure",
    "eval_mode",
    "gradcam_figure",
    "images_to_numpy",
    "load_epoch_metrics",
    "montage",
    "normalize_rows",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_gradcam",
    "plot_stn_epochs",
    "plot_stn_grid",
    "read_confusion_csv",
    "scale_images",
    "split_views",
    "stn_epochs_figure",
    "stn_grid_figure",
    "write_confusion_csv",
]
