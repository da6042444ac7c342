"""Robustness curves: a trained run's test accuracy as one distortion grows.

Usage::

    python -m stn_lab.evaluate ckpt_path=<run>/checkpoints/<name>.ckpt robustness=rotation \\
        [compare=<other run>/checkpoints/<name>.ckpt] [out_dir=DIR] [num_points=N] [limit=N] \\
        [device=auto|cpu|cuda]

The run folder is the checkpoint's folder's parent. Its composed config
(``<run>/.hydra/config.yaml``) rebuilds the network with :func:`stn_lab.train.build`, and the
checkpoint's ``state_dict`` is loaded into it. The official test images are then taken
*undistorted* (``data.distortion=none``), so the sweep applies only its own distortion: each image
is rotated (-180..180 degrees), scaled (0.5..1.5) or shifted along x (0 up to the distance at which
its centre reaches the border), and placed on the model's input canvas when the model was trained
on one (e.g. 42x42 for RTS), exactly at the centre unless shifted. Warped images are rounded to
uint8, as the datamodule does for its own evaluation splits, so the identity value (rotation 0,
scale 1, shift 0) scores exactly the model's accuracy on the clean test images.

Writes ``robustness_<kind>.csv`` (``model,value,accuracy``) and ``robustness_<kind>.png`` into
``out_dir`` (default: the run folder); with ``compare=`` both runs' curves go into the same files,
labelled by each run's ``model`` choice. Problems the user can fix (missing or corrupt checkpoint,
a checkpoint that does not fit the run's config, bad arguments) end with one ``error:`` line and
exit code 2.

:func:`robustness_curve` is the piece to use from a notebook: any network or ClassifierModule plus
a datamodule in, ``[(value, accuracy), ...]`` out.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from torch import nn

from stn_lab.atomic import atomic_write
from stn_lab.build import build
from stn_lab.cpu_runtime import tune_cpu_runtime
from stn_lab.data.datamodules import ImageDataModule
from stn_lab.data.distortions import AffineDistortion
from stn_lab.errors import user_error_message

log = logging.getLogger("stn_lab")

KINDS = ("rotation", "scale", "shift")
#: Default number of sweep values: every 30 degrees, every 0.1 of scale, 8 shifts.
DEFAULT_POINTS = {"rotation": 13, "scale": 11, "shift": 8}
#: The value at which a kind leaves the image unchanged.
IDENTITY = {"rotation": 0.0, "scale": 1.0, "shift": 0.0}
AXIS_LABELS = {
    "rotation": "rotation angle (degrees)",
    "scale": "scale factor (x original size)",
    "shift": "shift along x (pixels)",
}
UNITS = {"rotation": "deg", "shift": "px"}
CSV_COLUMNS = ("model", "value", "accuracy")
USAGE = (
    "usage: python -m stn_lab.evaluate ckpt_path=<run>/checkpoints/<name>.ckpt "
    "robustness=rotation|scale|shift [compare=<other ckpt>] [out_dir=DIR] [num_points=N] "
    "[limit=N] [device=auto|cpu|cuda]"
)
OPTIONAL_KEYS = ("compare", "out_dir", "num_points", "limit", "device")
REQUIRED_KEYS = ("ckpt_path", "robustness")


class EvaluateError(Exception):
    """A problem the user can fix (bad argument, unusable checkpoint): shown as one line."""


class UsageError(EvaluateError):
    """A malformed command line: shown with the usage line."""


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------
def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(f"unknown robustness kind {kind!r}; valid choices: {', '.join(KINDS)}")
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
    n = DEFAULT_POINTS[kind] if num_points is None else int(num_points)
    if n < 2:
        raise ValueError(f"num_points must be >= 2, got {n}")
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


@torch.no_grad()
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
            their normalisation. Use one built with ``distortion=none`` so that only the sweep
            distorts the images; an already distorted test split is swept as it is.
        kind: ``rotation`` (degrees), ``scale`` (factor) or ``shift`` (pixels along +x).
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
    if not datamodule.splits:
        datamodule.setup("test")
    images, labels = datamodule.splits["test"].tensors
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if len(images) == 0:
        raise ValueError("no test images to evaluate")
    size = images.shape[-1]
    image_size = int(image_size or datamodule.image_size)
    if image_size < size:
        raise ValueError(f"the model's input ({image_size}px) is smaller than the {size}px images")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch_size = int(batch_size or getattr(datamodule, "eval_batch_size", 256))
    warp = AffineDistortion(canvas=image_size if image_size > size else None)
    images, labels = images.to(device), labels.to(device)
    prefix = f"{label} | " if label else ""

    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        curve = []
        for value in values:
            correct = 0
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                params = distortion_params(kind, float(value), len(batch), device)
                warped = warp.apply(batch.float() / 255, params)
                quantised = (warped * 255).round().clamp(0, 255).to(torch.uint8)
                logits = model(datamodule.prepare_images(quantised, train=False))
                correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
            accuracy = correct / len(images)
            curve.append((float(value), accuracy))
            log.info(
                "%s%s %s: acc %.2f%% (%d images)",
                prefix, kind, format_value(kind, float(value)), 100 * accuracy, len(images),
            )  # fmt: skip
    finally:
        for m, training in flags:
            m.training = training
    return curve


# --------------------------------------------------------------------------------------------
# Loading a run
# --------------------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    """A checkpoint loaded into its run's network, with an undistorted-test datamodule."""

    ckpt_path: Path
    run_dir: Path
    cfg: DictConfig
    module: nn.Module
    datamodule: ImageDataModule
    image_size: int
    label: str


def run_dir_of(ckpt_path: str | Path) -> Path:
    """``<run>/checkpoints/<name>.ckpt`` -> ``<run>``."""
    return Path(ckpt_path).absolute().parent.parent


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def model_label(run_dir: Path, cfg: DictConfig | None = None) -> str:
    """The run's ``model`` choice: from ``metrics.json``, else ``.hydra/hydra.yaml``, else the
    config itself (``stn`` when it has a spatial transformer, ``cnn`` otherwise)."""
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
    if cfg is not None and "model" in cfg:
        return "stn" if cfg.model.get("stn") is not None else "cnn"
    return run_dir.name


def _read_checkpoint(ckpt_path: Path) -> dict:
    if not ckpt_path.is_file():
        raise EvaluateError(f"checkpoint not found: {ckpt_path}")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle errors, ...: all "unreadable"
        raise EvaluateError(f"cannot read checkpoint {ckpt_path}: {_first_line(err)}") from err
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise EvaluateError(
            f"{ckpt_path} holds no 'state_dict': not a Lightning checkpoint of stn_lab.train"
        )
    return state


def _fit_problems(expected: dict, state: dict) -> str | None:
    """A short description of why ``state`` does not fit ``expected``, or ``None``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and hasattr(state[k], "shape") and state[k].shape != expected[k].shape
    ]
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} size mismatch(es), e.g. {mismatched[0]}")
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
    return "; ".join(parts) or None


def load_run(ckpt_path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild ``ckpt_path``'s run from its config and load the checkpoint's weights.

    Raises :class:`EvaluateError` (one line) when the run folder has no config, the checkpoint
    is missing or unreadable, or its weights do not fit the network the config builds.
    """
    ckpt_path = Path(ckpt_path)
    state = _read_checkpoint(ckpt_path)
    run_dir = run_dir_of(ckpt_path)
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise EvaluateError(
            f"no run config at {config_file}; ckpt_path must point into a run folder "
            "(<run>/checkpoints/<name>.ckpt)"
        )
    try:
        cfg = OmegaConf.load(config_file)
        # The run's own datamodule fixes the input size the network was built (and trained) for.
        training_data, _, module = build(cfg)
    except Exception as err:  # noqa: BLE001 - an outdated or broken config: one line, exit 2
        raise EvaluateError(
            f"cannot rebuild the model from {config_file}: "
            f"{user_error_message(err) or _first_line(err)}"
        ) from err
    label = model_label(run_dir, cfg)
    problems = _fit_problems(module.state_dict(), state)
    if problems:
        raise EvaluateError(
            f"{ckpt_path} does not fit the model in {config_file} (model={label}): {problems}"
        )
    module.load_state_dict(state)
    clean = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    clean.data.distortion = "none"  # undistorted test images: the sweep is the only distortion
    datamodule = instantiate(clean.data)
    return LoadedRun(
        ckpt_path=ckpt_path,
        run_dir=run_dir,
        cfg=cfg,
        module=module.to(device),
        datamodule=datamodule,
        image_size=int(training_data.image_size),
        label=label,
    )


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------
def write_csv(path: str | Path, curves: dict[str, list[tuple[float, float]]]) -> Path:
    """``model,value,accuracy`` rows, one per model and value (written atomically)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for label, curve in curves.items():
        for value, accuracy in curve:
            writer.writerow([label, f"{value:g}", f"{accuracy:.6f}"])
    return atomic_write(path, buffer.getvalue())


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
def _unique_labels(runs: list[LoadedRun]) -> list[str]:
    labels = [r.label for r in runs]
    if len(set(labels)) == len(labels):
        return labels
    labels = [f"{r.label} ({r.run_dir.name})" for r in runs]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{r.label} ({r.run_dir.name}/{r.ckpt_path.stem})" for r in runs]


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("device=cuda was asked for, but no CUDA GPU is available")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise UsageError(f"bad device {device!r}: {_first_line(err)}") from err


def evaluate(
    ckpt_path: str | Path,
    kind: str,
    *,
    compare: str | Path | None = None,
    out_dir: str | Path | None = None,
    num_points: int | None = None,
    limit: int | None = None,
    device: str = "auto",
) -> dict[str, list[tuple[float, float]]]:
    """Sweep one run (and ``compare``'s), write the CSV and PNG; return the curves by label."""
    check_kind(kind)
    target = pick_device(device)
    runs = [load_run(ckpt_path, target)]
    if compare is not None:
        runs.append(load_run(compare, target))
    out = Path(out_dir) if out_dir is not None else runs[0].run_dir
    curves: dict[str, list[tuple[float, float]]] = {}
    for run, label in zip(runs, _unique_labels(runs), strict=True):
        values = sweep_values(kind, run.image_size, num_points)
        log.info("%s: %s sweep of %s over %d values", label, kind, run.ckpt_path, len(values))
        curves[label] = robustness_curve(
            run.module,
            run.datamodule,
            kind,
            values,
            image_size=run.image_size,
            limit=limit,
            device=target,
            label=label,
        )
    data = runs[0].datamodule
    n_images = len(data.splits["test"]) if limit is None else min(limit, len(data.splits["test"]))
    title = f"Robustness to {kind}: {data.name} test set, {n_images} images"
    csv_path = write_csv(out / f"robustness_{kind}.csv", curves)
    png_path = plot_robustness(out / f"robustness_{kind}.png", kind, curves, title)
    log.info("wrote %s and %s", csv_path, png_path)
    return curves


def _positive_int(key: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{key} must be an integer, got {text!r}") from None
    if value < minimum:
        raise UsageError(f"{key} must be >= {minimum}, got {value}")
    return value


def parse_args(argv: Sequence[str]) -> dict:
    """``key=value`` arguments -> keyword arguments of :func:`evaluate`."""
    given: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise UsageError(f"arguments are key=value, got {arg!r}")
        if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
            valid = ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)
            raise UsageError(f"unknown argument {key!r}; valid keys: {valid}")
        if key in given:
            raise UsageError(f"{key} given twice")
        given[key] = value
    missing = [k for k in REQUIRED_KEYS if not given.get(k)]
    if missing:
        raise UsageError(f"missing {' and '.join(k + '=' for k in missing)}")
    kwargs: dict = {
        "ckpt_path": given["ckpt_path"],
        "kind": check_kind(given["robustness"]),
        "compare": given.get("compare") or None,
        "out_dir": given.get("out_dir") or None,
        "device": given.get("device") or "auto",
    }
    if given.get("num_points"):
        kwargs["num_points"] = _positive_int("num_points", given["num_points"], 2)
    if given.get("limit"):
        kwargs["limit"] = _positive_int("limit", given["limit"], 1)
    return kwargs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0, or 2 for a problem the user can fix)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    tune_cpu_runtime()
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    try:
        evaluate(**parse_args(argv))
    except UsageError as err:
        print(f"error: {err}\n{USAGE}", file=sys.stderr)
        return 2
    except EvaluateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise  # a bug: keep the traceback
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
