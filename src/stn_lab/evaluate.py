"""Score a trained checkpoint: robustness curves, or its accuracy on any dataset and distortion.

Usage (a Hydra app, ``conf/evaluate.yaml``; ``--help`` shows every key)::

    python -m stn_lab.evaluate ckpt_path=<run>/checkpoints/<name>.ckpt robustness=rotation \\
        [compare=<other run>/checkpoints/<name>.ckpt] [num_points=N] [limit=N] [out_dir=DIR] \\
        [device=auto|cpu|cuda]
    python -m stn_lab.evaluate ckpt_path=<ckpt> data=fashion_mnist distortion=RTS [compare=...]
    python -m stn_lab.evaluate -m ckpt_path=<ckpt> robustness=rotation,scale,shift   # all three

The checkpoint rebuilds its own network (:meth:`ClassifierModule.load_from_checkpoint`: the
network's config is saved in it), so a checkpoint loads from anywhere. The test images are the
official test split of ``data`` with ``distortion`` (default ``none``); without ``data=`` they come
from the dataset the run trained on, read from ``<run>/.hydra/config.yaml`` (the run folder is the
parent of a ``checkpoints/`` folder, else the checkpoint's own folder).

- ``robustness=rotation|scale|shift`` sweeps one distortion over the test images: each image is
  rotated (-180..180 degrees, positive clockwise as displayed, like the training distortions),
  scaled (0.5..1.5) or shifted along x (0 up to the distance at which its centre reaches the
  border). Writes ``robustness_<kind>.csv`` (``model,value,accuracy``) and
  ``robustness_<kind>.png``.
- Without ``robustness``, the test accuracy as the images are: ``score_<data>_<distortion>.csv``
  (``model,data,distortion,images,accuracy``).

Images smaller than the model's input (a model trained on a canvas, e.g. RTS 42x42) are placed at
the canvas centre. Warped images are rounded to uint8, as the datamodule does for its own
evaluation splits, so the identity value of a sweep (rotation 0, scale 1, shift 0) scores exactly
the accuracy on the clean test images. Files go to ``out_dir`` (default: the run folder); with
``compare=``, both models' rows go into the same files, labelled by each run's ``model`` choice.
Problems the user can fix (a missing or unreadable checkpoint, data the model cannot take, a bad
value) end with one ``error:`` line and exit code 2.

:func:`robustness_curve` and :func:`score` are the pieces to use from a notebook: any
network or ClassifierModule plus a datamodule in, accuracies out.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from torch import nn

from stn_lab.atomic import atomic_write
from stn_lab.config_path import CONFIG_DIR
from stn_lab.cpu_runtime import tune_cpu_runtime
from stn_lab.data.datamodules import ImageDataModule
from stn_lab.data.distortions import AffineDistortion
from stn_lab.errors import ConfigError, UserError, user_error_message, whole_number
from stn_lab.module import ClassifierModule

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


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------
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


@dataclass
class _TestSet:
    """The test images on the scoring device, and how to score one warp of them."""

    model: nn.Module
    datamodule: ImageDataModule
    images: torch.Tensor
    labels: torch.Tensor
    warp: AffineDistortion
    batch_size: int

    @torch.no_grad()
    def accuracy(self, kind: str | None = None, value: float | None = None) -> float:
        """Accuracy with every image warped by ``kind=value``, or (``kind=None``) the images as
        they are, only placed at the centre of the model's canvas when that is larger."""
        if kind is None and self.warp.canvas is not None:
            kind, value = "shift", IDENTITY["shift"]
        correct = 0
        for start in range(0, len(self.images), self.batch_size):
            batch = self.images[start : start + self.batch_size]
            if kind is not None:
                params = distortion_params(kind, value, len(batch), batch.device)
                warped = self.warp.apply(batch.float() / 255, params)
                batch = (warped * 255).round().clamp(0, 255).to(torch.uint8)
            logits = self.model(self.datamodule.prepare_images(batch, train=False))
            correct += int((logits.argmax(dim=1) == self.labels[start : start + len(batch)]).sum())
        return correct / len(self.images)


@contextlib.contextmanager
def _test_set(
    model: nn.Module,
    datamodule: ImageDataModule,
    image_size: int | None,
    limit: int | None,
    batch_size: int | None,
    device: torch.device | str | None,
) -> Iterator[_TestSet]:
    """The test split (set up here if needed) with ``model`` in eval mode; its own train/eval
    flags are restored afterwards."""
    if not datamodule.splits:
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
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield _TestSet(
            model=model,
            datamodule=datamodule,
            images=images.to(device),
            labels=labels.to(device),
            warp=AffineDistortion(canvas=image_size if image_size > size else None),
            batch_size=int(batch_size or datamodule.eval_batch_size),
        )
    finally:
        for m, training in flags:
            m.training = training


def robustness_curve(
    model: nn.Module,
    datamodule: ImageDataModule,
    kind: str,
    values: Sequence[float],
    *,
    image_size: int | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    label: str | None = None,
) -> list[tuple[float, float]]:
    """Accuracy of ``model`` on ``datamodule``'s test split, distorted by each of ``values``.

    Args:
        model: a network or :class:`~stn_lab.module.ClassifierModule`; evaluated in eval mode
            (its own train/eval flags are restored afterwards), without gradients.
        datamodule: supplies the test images (``splits["test"]``, set up here if needed) and
            their normalisation. Use one built with ``distortion=None`` so that only the sweep
            distorts the images; an already distorted test split is swept as it is.
        kind: ``rotation`` (degrees, positive clockwise), ``scale`` (factor) or ``shift``
            (pixels along +x).
        values: the distortion values; see :func:`sweep_values`.
        image_size: the model's input side. When larger than the test images (a model trained
            on a canvas, e.g. RTS 42x42), each image is placed at the canvas centre before the
            distortion. Default: ``datamodule.image_size``.
        limit: use only the first ``limit`` test images.
        batch_size: images per forward pass (default: ``datamodule.eval_batch_size``).
        device: where to compute (default: the model's device).
        label: a name for the progress lines (one INFO line per value on the ``stn_lab`` logger).

    Returns:
        ``[(value, accuracy), ...]`` in the order of ``values``, accuracy in [0, 1].
    """
    check_kind(kind)
    prefix = f"{label} | " if label else ""
    curve = []
    with _test_set(model, datamodule, image_size, limit, batch_size, device) as test:
        for value in values:
            accuracy = test.accuracy(kind, float(value))
            curve.append((float(value), accuracy))
            log.info(
                "%s%s %s: acc %.2f%% (%d images)",
                prefix, kind, format_value(kind, float(value)), 100 * accuracy, len(test.images),
            )  # fmt: skip
    return curve


def score(
    model: nn.Module,
    datamodule: ImageDataModule,
    *,
    image_size: int | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Accuracy of ``model`` on ``datamodule``'s test split as it is (with the datamodule's own
    distortion); the arguments are :func:`robustness_curve`'s."""
    with _test_set(model, datamodule, image_size, limit, batch_size, device) as test:
        return test.accuracy()


# --------------------------------------------------------------------------------------------
# Loading a checkpoint and its test data
# --------------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """A checkpoint's module and the test data it is scored on."""

    ckpt_path: Path
    module: ClassifierModule
    datamodule: ImageDataModule
    label: str

    @property
    def image_size(self) -> int:
        """The side of the images the network was built (and trained) for."""
        return int(self.module.hparams.network["image_size"])


def run_dir_of(ckpt_path: str | Path) -> Path:
    """``<run>/checkpoints/<name>.ckpt`` -> ``<run>``; any other checkpoint -> its folder."""
    folder = Path(ckpt_path).absolute().parent
    return folder.parent if folder.name == "checkpoints" else folder


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def model_label(run_dir: Path, module: ClassifierModule) -> str:
    """The run's ``model`` choice: from ``metrics.json``, else ``.hydra/hydra.yaml``, else the
    network itself (``stn`` when it has a spatial transformer, ``cnn`` otherwise)."""
    try:
        choice = json.loads((run_dir / "metrics.json").read_text())["choices"]["model"]
        if choice:
            return str(choice)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        choice = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices.model
        if choice:
            return str(choice)
    except Exception:  # noqa: BLE001 - any unreadable hydra.yaml just means "try the next source"
        pass
    return "stn" if module.network.has_stn else "cnn"


def load_module(ckpt_path: str | Path) -> ClassifierModule:
    """The checkpoint's :class:`ClassifierModule`, on the CPU; :class:`EvaluateError` when the
    file is missing, unreadable or not a checkpoint of ``stn_lab.train``."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise EvaluateError(f"checkpoint not found: {path}")
    try:
        return ClassifierModule.load_from_checkpoint(path, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle errors, another program's file
        raise EvaluateError(f"cannot load checkpoint {path}: {_first_line(err)}") from err


def run_data(run_dir: Path, distortion: DictConfig | None) -> ImageDataModule:
    """The dataset the run in ``run_dir`` trained on, with ``distortion`` instead of its own."""
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise EvaluateError(
            f"no run config at {config_file}: give data=<dataset>, or a ckpt_path inside a run "
            "folder (<run>/checkpoints/<name>.ckpt)"
        )
    cfg = OmegaConf.load(config_file)
    cfg.distortion = distortion  # the run's data config reads it as ${distortion}
    try:
        return instantiate(cfg.data)
    except Exception as err:  # noqa: BLE001 - an outdated or broken config: one line, exit 2
        reason = user_error_message(err) or _first_line(err)
        raise EvaluateError(
            f"cannot build the test data from {config_file} ({reason}): give data=<dataset>"
        ) from err


def load(ckpt_path: str | Path, data: DictConfig | None, distortion: DictConfig | None) -> Loaded:
    """A checkpoint and its test data: ``data`` (a data config) if given, else the run's own
    dataset; both with ``distortion`` (a distortion config, or ``None``)."""
    ckpt_path = Path(ckpt_path)
    run_dir = run_dir_of(ckpt_path)
    module = load_module(ckpt_path)
    datamodule = run_data(run_dir, distortion) if data is None else instantiate(data)
    label = model_label(run_dir, module)
    takes = (module.hparams.network["in_channels"], module.hparams.num_classes)
    has = (datamodule.in_channels, datamodule.num_classes)
    if takes != has:
        raise EvaluateError(
            f"{ckpt_path} ({label}) takes {takes[0]}-channel images of {takes[1]} classes; "
            f"{datamodule.name} has {has[0]}-channel images of {has[1]} classes"
        )
    return Loaded(ckpt_path, module, datamodule, label)


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------
def _write_rows(path: str | Path, header: Sequence[str], rows: list[list]) -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write(path, buffer.getvalue())


def write_csv(path: str | Path, curves: dict[str, list[tuple[float, float]]]) -> Path:
    """``model,value,accuracy`` rows, one per model and value (written atomically)."""
    rows = [
        [label, f"{value:g}", f"{accuracy:.6f}"]
        for label, curve in curves.items()
        for value, accuracy in curve
    ]
    return _write_rows(path, CSV_COLUMNS, rows)


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
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    return atomic_write(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def _unique_labels(runs: list[Loaded]) -> list[str]:
    labels = [r.label for r in runs]
    if len(set(labels)) == len(labels):
        return labels
    labels = [f"{r.label} ({run_dir_of(r.ckpt_path).name})" for r in runs]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{r.label} ({run_dir_of(r.ckpt_path).name}/{r.ckpt_path.stem})" for r in runs]


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for, but no CUDA GPU is available")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"bad device {device!r}: {_first_line(err)}") from err


def _count(datamodule: ImageDataModule, limit: int | None) -> int:
    """How many test images are scored."""
    n = len(datamodule.splits["test"])
    return n if limit is None else min(limit, n)


def _score_files(runs: list[Loaded], out: Path, distortion: str, **scoring) -> Path:
    """Each run's test accuracy into ``score_<data>_<distortion>.csv``."""
    rows = []
    for run, label in zip(runs, _unique_labels(runs), strict=True):
        accuracy = score(run.module, run.datamodule, image_size=run.image_size, **scoring)
        data, n = run.datamodule.name, _count(run.datamodule, scoring["limit"])
        log.info(
            "%s: test accuracy %.2f%% (%s, distortion %s, %d images)",
            label, 100 * accuracy, data, distortion, n,
        )  # fmt: skip
        rows.append([label, data, distortion, n, f"{accuracy:.6f}"])
    path = _write_rows(out / f"score_{rows[0][1]}_{distortion}.csv", SCORE_COLUMNS, rows)
    log.info("wrote %s", path)
    return path


def _sweep_files(runs: list[Loaded], out: Path, kind: str, num_points, **scoring) -> Path:
    """Each run's robustness curve into ``robustness_<kind>.csv`` and ``.png``."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for run, label in zip(runs, _unique_labels(runs), strict=True):
        values = sweep_values(kind, run.image_size, num_points)
        log.info("%s: %s sweep of %s over %d values", label, kind, run.ckpt_path, len(values))
        curves[label] = robustness_curve(
            run.module, run.datamodule, kind, values, image_size=run.image_size, label=label,
            **scoring,
        )  # fmt: skip
    data = runs[0].datamodule
    title = f"Robustness to {kind}: {data.name} test set, {_count(data, scoring['limit'])} images"
    csv_path = write_csv(out / f"robustness_{kind}.csv", curves)
    png_path = plot_robustness(out / f"robustness_{kind}.png", kind, curves, title)
    log.info("wrote %s and %s", csv_path, png_path)
    return csv_path


def evaluate(cfg: DictConfig, distortion_name: str = "none") -> Path:
    """Do what ``cfg`` (a composed ``conf/evaluate.yaml``) asks; return the CSV it wrote.

    ``distortion_name`` is the ``distortion`` choice, for the score file's name and rows.
    """
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path=<run>/checkpoints/<name>.ckpt is required")
    kind = None if cfg.robustness is None else check_kind(cfg.robustness)
    limit = None if cfg.limit is None else whole_number("limit", cfg.limit, 1)
    device = pick_device(cfg.device)
    paths = [cfg.ckpt_path] + ([cfg.compare] if cfg.compare else [])
    runs = [load(path, cfg.get("data"), cfg.distortion) for path in paths]
    for run in runs:
        run.module.to(device)
    out = Path(cfg.out_dir) if cfg.out_dir else run_dir_of(runs[0].ckpt_path)
    if kind is None:
        return _score_files(runs, out, distortion_name, limit=limit, device=device)
    return _sweep_files(runs, out, kind, cfg.num_points, limit=limit, device=device)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Run the CLI; a problem the user can fix ends with one ``error:`` line and exit code 2."""
    tune_cpu_runtime()
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    try:
        evaluate(cfg, HydraConfig.get().runtime.choices.get("distortion") or "none")
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise  # a bug: keep the traceback
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
