"""Robustness of a trained classifier: its test accuracy as one distortion grows.

``rotation`` (degrees, positive clockwise as displayed, like the training distortions),
``scale`` (a factor) or ``shift`` (pixels along +x) is applied to every test image, the images are
rounded to uint8 as the datamodule rounds its own evaluation splits, and the module scores them
with its own test step through a Trainer (:func:`test_accuracy`): the one scoring path that
``train`` uses too. The identity value of a sweep (rotation 0, scale 1, shift 0) therefore scores
exactly the accuracy on the clean test images.

:func:`robustness_curve` and :func:`score` are the pieces to use from a notebook: a
:class:`~stn_lab.module.ClassifierModule` plus a datamodule in, accuracies out.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import TensorDataset

from stn_lab.atomic import atomic_csv, atomic_png
from stn_lab.build import scoring_trainer
from stn_lab.data.datamodules import EVAL_CHUNK, ImageDataModule
from stn_lab.data.distortions import AffineDistortion
from stn_lab.errors import ConfigError, UserError, whole_number

log = logging.getLogger("stn_lab")

KINDS = ("rotation", "scale", "shift")
#: Default number of sweep values: every 30 degrees, every 0.1 of scale, 8 shifts.
DEFAULT_POINTS = {"rotation": 13, "scale": 11, "shift": 8}
#: The value at which a kind leaves the image unchanged.
IDENTITY = {"rotation": 0.0, "scale": 1.0, "shift": 0.0}
AXIS_LABELS = {
    "rotation": "rotation angle (degrees, positive = clockwise)",
    "scale": "scale factor (x original size)",
    "shift": "shift along x (pixels)",
}
UNITS = {"rotation": "deg", "shift": "px"}
CSV_COLUMNS = ("model", "value", "accuracy")
SCORE_COLUMNS = ("model", "data", "distortion", "images", "accuracy")


class EvaluateError(UserError):
    """A checkpoint that cannot be scored on the asked-for images: shown as one line."""


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"unknown robustness kind {kind!r}; valid choices: {', '.join(KINDS)}")
    return kind


def max_shift(image_size: int) -> float:
    """Shift (px) at which the image's centre reaches the border of the ``image_size`` input."""
    return image_size / 2


def sweep_values(kind: str, image_size: int, num_points: int | None = None) -> list[float]:
    """Evenly spaced values: rotation -180..180 deg, scale 0.5..1.5, shift 0..image_size/2 px.

    The defaults (:data:`DEFAULT_POINTS`) include the identity value; so does any odd
    ``num_points`` for rotation and scale, and any ``num_points`` for shift.
    """
    check_kind(kind)
    n = DEFAULT_POINTS[kind] if num_points is None else whole_number("num_points", num_points, 2)
    low, high = {
        "rotation": (-180.0, 180.0),
        "scale": (0.5, 1.5),
        "shift": (0.0, max_shift(image_size)),
    }[kind]
    return [round(float(v), 6) for v in np.linspace(low, high, n)]


def distortion_params(kind: str, value: float, n: int, device=None) -> torch.Tensor:
    """``[n, 4]`` :class:`AffineDistortion` parameters (angle, scale, x shift, y shift)."""
    row = {
        "rotation": (value, 1.0, 0.0, 0.0),
        "scale": (0.0, value, 0.0, 0.0),
        "shift": (0.0, 1.0, value, 0.0),
    }[check_kind(kind)]
    return torch.tensor(row, dtype=torch.float32, device=device).expand(n, 4)


def format_value(kind: str, value: float) -> str:
    """``30 deg``, ``x1.1``, ``4 px``: a sweep value with its unit, for log lines."""
    return f"x{value:g}" if kind == "scale" else f"{value:g} {UNITS[kind]}"


def test_images(
    datamodule: ImageDataModule, image_size: int | None, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor, AffineDistortion]:
    """The test split's uint8 images and labels (the first ``limit``), and the warp that places
    them on the model's ``image_size`` canvas when that is larger than the images."""
    datamodule.setup("test")
    images, labels = datamodule.splits["test"].tensors
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if len(images) == 0:
        raise EvaluateError("no test images to evaluate")
    size = images.shape[-1]
    image_size = int(image_size or datamodule.image_size)
    if image_size < size:
        raise EvaluateError(
            f"the model takes {image_size}px images, smaller than the {size}px test images"
        )
    return images, labels, AffineDistortion(canvas=image_size if image_size > size else None)


def warped(images: torch.Tensor, warp: AffineDistortion, kind: str, value: float) -> torch.Tensor:
    """``images`` (uint8) with every one warped by ``kind=value``, rounded back to uint8."""
    out = []
    for batch in images.split(EVAL_CHUNK):
        params = distortion_params(kind, value, len(batch))
        moved = warp.apply(batch.float() / 255, params)
        out.append((moved * 255).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def test_accuracy(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: ImageDataModule,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> float:
    """The module's own test step on ``images`` (uint8) through ``trainer``: its test accuracy,
    counted exactly from the step's per-image predictions. The datamodule's test split is put
    back afterwards."""
    kept = datamodule.splits["test"]
    datamodule.splits["test"] = TensorDataset(images, labels)
    try:
        trainer.test(module, datamodule=datamodule, verbose=False)
    finally:
        datamodule.splits["test"] = kept
    predictions = module.test_predictions
    return float((predictions["pred"] == predictions["label"]).double().mean())


def robustness_curve(
    module: L.LightningModule,
    datamodule: ImageDataModule,
    kind: str,
    values: Sequence[float],
    *,
    image_size: int | None = None,
    limit: int | None = None,
    accelerator: str | None = None,
    label: str | None = None,
) -> list[tuple[float, float]]:
    """Accuracy of ``module`` on ``datamodule``'s test split, distorted by each of ``values``.

    Args:
        module: a :class:`~stn_lab.module.ClassifierModule`; it scores with its own test step
            (eval mode, no gradients; Lightning restores its train/eval mode afterwards).
        datamodule: supplies the test images and their normalisation. Use one built with
            ``distortion=None`` so that only the sweep distorts the images; an already distorted
            test split is swept as it is.
        kind: ``rotation`` (degrees, positive clockwise), ``scale`` (factor) or ``shift``
            (pixels along +x).
        values: the distortion values; see :func:`sweep_values`.
        image_size: the model's input side. When larger than the test images (a model trained
            on a canvas, e.g. RTS 42x42), each image is placed at the canvas centre before the
            distortion. Default: ``datamodule.image_size``.
        limit: use only the first ``limit`` test images.
        accelerator: Lightning's ``cpu``, ``gpu`` or ``auto`` (default: the CPU).
        label: a name for the progress lines (one INFO line per value on the ``stn_lab`` logger).

    Returns:
        ``[(value, accuracy), ...]`` in the order of ``values``, accuracy in [0, 1].
    """
    check_kind(kind)
    prefix = f"{label} | " if label else ""
    images, labels, warp = test_images(datamodule, image_size, limit)
    trainer = scoring_trainer(accelerator)
    curve = []
    for value in values:
        moved = warped(images, warp, kind, float(value))
        accuracy = test_accuracy(trainer, module, datamodule, moved, labels)
        curve.append((float(value), accuracy))
        log.info(
            "%s%s %s: acc %.2f%% (%d images)",
            prefix, kind, format_value(kind, float(value)), 100 * accuracy, len(images),
        )  # fmt: skip
    return curve


def score(
    module: L.LightningModule,
    datamodule: ImageDataModule,
    *,
    image_size: int | None = None,
    limit: int | None = None,
    accelerator: str | None = None,
) -> float:
    """Accuracy of ``module`` on ``datamodule``'s test split as it is (with the datamodule's own
    distortion), only placed at the centre of the model's canvas when that is larger; the
    arguments are :func:`robustness_curve`'s."""
    images, labels, warp = test_images(datamodule, image_size, limit)
    if warp.canvas is not None:
        images = warped(images, warp, "shift", IDENTITY["shift"])
    return test_accuracy(scoring_trainer(accelerator), module, datamodule, images, labels)


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------
def write_csv(path: str | Path, curves: dict[str, list[tuple[float, float]]]) -> Path:
    """``model,value,accuracy`` rows, one per model and value (written atomically)."""
    rows = [
        [label, f"{value:g}", f"{accuracy:.6f}"]
        for label, curve in curves.items()
        for value, accuracy in curve
    ]
    return atomic_csv(path, CSV_COLUMNS, rows)


def read_csv(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """The inverse of :func:`write_csv`."""
    curves: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            curves.setdefault(row["model"], []).append(
                (float(row["value"]), float(row["accuracy"]))
            )
    return curves


def plot_robustness(
    path: str | Path,
    kind: str,
    curves: dict[str, list[tuple[float, float]]],
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Accuracy (%) against the distortion value, one line per model; written as a PNG."""
    check_kind(kind)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for label, curve in curves.items():
        xs = [v for v, _ in curve]
        ys = [100 * a for _, a in curve]
        ax.plot(xs, ys, marker="o", markersize=4, label=label)
    ax.axvline(IDENTITY[kind], color="0.6", linestyle=":", linewidth=1, label="no distortion")
    if kind == "rotation":
        ax.set_xticks(range(-180, 181, 45))
    ax.set_xlabel(AXIS_LABELS[kind])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title or f"Robustness to {kind}")
    return atomic_png(fig, path, dpi=dpi)
