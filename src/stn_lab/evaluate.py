"""Score a trained checkpoint: robustness curves, or its accuracy on any dataset and distortion.

Usage (a Hydra app, ``conf/evaluate.yaml``; ``--help`` shows every key)::

    python -m stn_lab.evaluate ckpt_path=<run>/checkpoints/<name>.ckpt robustness=rotation \\
        [compare=<other run>/checkpoints/<name>.ckpt] [num_points=N] [limit=N] [out_dir=DIR] \\
        [device=auto|cpu|cuda]
    python -m stn_lab.evaluate ckpt_path=<ckpt> data=fashion_mnist distortion=RTS [compare=...]
    python -m stn_lab.evaluate -m ckpt_path=<ckpt> robustness=rotation,scale,shift   # all three

The checkpoint rebuilds its own network (:meth:`ClassifierModule.load_from_checkpoint`: the
network's config is saved in it), so a checkpoint loads from anywhere. The test images are the
official test split of ``data`` with ``distortion``. By default they are the run's own: the
dataset and distortion it trained on, read from ``<run>/.hydra/config.yaml`` (the run folder is
the parent of a ``checkpoints/`` folder, else the checkpoint's own folder); a robustness sweep
starts from the undistorted images. Each model is scored by its own test step through a
Lightning Trainer (:mod:`stn_lab.robustness`), the path ``train`` scores with.

- ``robustness=rotation|scale|shift`` sweeps one distortion over the test images: each image is
  rotated (-180..180 degrees, positive clockwise as displayed, like the training distortions),
  scaled (0.5..1.5) or shifted along x (0 up to the distance at which its centre reaches the
  border). Writes ``robustness_<kind>.csv`` (``model,value,accuracy``) and
  ``robustness_<kind>.png``.
- Without ``robustness``, the test accuracy as the images are: ``score_<data>_<distortion>.csv``
  (``model,data,distortion,images,accuracy``). With ``limit=N`` the files are named
  ``..._limitN.csv``, so a quick look never replaces the full-test result.

Images smaller than the model's input (a model trained on a canvas, e.g. RTS 42x42) are placed at
the canvas centre. Files go to ``out_dir`` (default: the run folder); with
``compare=``, both models' rows go into the same files, labelled by each run's ``model`` choice.
Problems the user can fix (a missing or unreadable checkpoint, data the model cannot take, a bad
value) end with one ``error:`` line and exit code 2.

:func:`stn_lab.robustness.robustness_curve` and :func:`stn_lab.robustness.score` are the pieces
to use from a notebook.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from stn_lab.atomic import atomic_csv
from stn_lab.build import build_datamodule
from stn_lab.config_path import CONFIG_DIR, register_resolvers
from stn_lab.cpu_runtime import tune_cpu_runtime
from stn_lab.data.datamodules import ImageDataModule
from stn_lab.errors import ConfigError, first_line, user_error_message, whole_number
from stn_lab.module import ClassifierModule
from stn_lab.robustness import (
    SCORE_COLUMNS,
    EvaluateError,
    check_kind,
    plot_robustness,
    robustness_curve,
    score,
    sweep_values,
    write_csv,
)

log = logging.getLogger("stn_lab")


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


def run_choice(run_dir: Path, group: str) -> str | None:
    """The run's choice for a config ``group``: from ``metrics.json``, else
    ``.hydra/hydra.yaml``; None when neither says."""
    try:
        choice = json.loads((run_dir / "metrics.json").read_text())["choices"][group]
        if choice:
            return str(choice)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        choice = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices[group]
        if choice:
            return str(choice)
    except Exception:  # noqa: BLE001 - any unreadable hydra.yaml just means "say nothing"
        pass
    return None


def model_label(run_dir: Path, module: ClassifierModule) -> str:
    """The run's ``model`` choice, else what the network is (``stn`` when it has a spatial
    transformer, ``cnn`` otherwise)."""
    return run_choice(run_dir, "model") or ("stn" if module.network.has_stn else "cnn")


def load_module(ckpt_path: str | Path) -> ClassifierModule:
    """The checkpoint's :class:`ClassifierModule`, on the CPU; :class:`EvaluateError` when the
    file is missing, unreadable or not a checkpoint of ``stn_lab.train``."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise EvaluateError(f"checkpoint not found: {path}")
    try:
        # Memory-mapped: only the small entries read here leave the disk.
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle errors, not a torch file
        raise EvaluateError(f"cannot load checkpoint {path}: {first_line(err)}") from err
    hparams = state.get("hyper_parameters") if isinstance(state, dict) else None
    if not isinstance(hparams, dict) or "network" not in hparams or "state_dict" not in state:
        raise EvaluateError(
            f"{path} is not a stn_lab checkpoint (it holds no ClassifierModule settings): give "
            "one that python -m stn_lab.train wrote (<run>/checkpoints/<name>.ckpt)"
        )
    try:
        return ClassifierModule.load_from_checkpoint(path, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - a checkpoint of an incompatible stn_lab version
        raise EvaluateError(f"cannot load checkpoint {path}: {first_line(err)}") from err


def run_data(run_dir: Path, distortion: DictConfig | None, own: bool = False) -> ImageDataModule:
    """The dataset the run in ``run_dir`` trained on, with its own distortion (``own``) or with
    ``distortion`` instead."""
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise EvaluateError(
            f"no run config at {config_file}: give data=<dataset>, or a ckpt_path inside a run "
            "folder (<run>/checkpoints/<name>.ckpt)"
        )
    cfg = OmegaConf.load(config_file)
    if not own:
        cfg.distortion = distortion  # the run's data config reads it as ${distortion}
    try:
        return build_datamodule(cfg.data)
    except Exception as err:  # noqa: BLE001 - an outdated or broken config: one line, exit 2
        reason = user_error_message(err) or first_line(err)
        raise EvaluateError(
            f"cannot build the test data from {config_file} ({reason}): give data=<dataset>"
        ) from err


def load(
    ckpt_path: str | Path,
    data: DictConfig | None,
    distortion: DictConfig | None,
    own_distortion: bool = False,
) -> Loaded:
    """A checkpoint and its test data: ``data`` (a data config) if given, else the run's own
    dataset; with ``distortion`` (a distortion config, or ``None``), or with the run's own
    (``own_distortion``, for the run's own dataset)."""
    ckpt_path = Path(ckpt_path)
    run_dir = run_dir_of(ckpt_path)
    module = load_module(ckpt_path)
    if data is None:
        datamodule = run_data(run_dir, distortion, own=own_distortion)
    else:
        datamodule = build_datamodule(data)
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


def pick_accelerator(device: str) -> str:
    """``device`` (auto, cpu, cuda) as a Lightning accelerator name."""
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for, but no CUDA GPU is available")
    return {"cuda": "gpu"}.get(device, device)


def _count(datamodule: ImageDataModule, limit: int | None) -> int:
    """How many test images are scored."""
    n = len(datamodule.splits["test"])
    return n if limit is None else min(limit, n)


def _suffix(limit: int | None) -> str:
    """A limited evaluation writes its own files, so the run's full-test ones stay."""
    return "" if limit is None else f"_limit{limit}"


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
    name = f"score_{rows[0][1]}_{distortion}{_suffix(scoring['limit'])}.csv"
    path = atomic_csv(out / name, SCORE_COLUMNS, rows)
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
    stem = f"robustness_{kind}{_suffix(scoring['limit'])}"
    csv_path = write_csv(out / f"{stem}.csv", curves)
    png_path = plot_robustness(out / f"{stem}.png", kind, curves, title)
    log.info("wrote %s and %s", csv_path, png_path)
    return csv_path


def evaluate(cfg: DictConfig, distortion_name: str | None = None) -> Path:
    """Do what ``cfg`` (a composed ``conf/evaluate.yaml``) asks; return the CSV it wrote.

    ``distortion_name`` is the ``distortion`` choice, for the score file's name and rows; None
    (no ``distortion=``) scores the run's own dataset with its own distortion, and sweeps the
    clean images.
    """
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path=<run>/checkpoints/<name>.ckpt is required")
    kind = None if cfg.robustness is None else check_kind(cfg.robustness)
    limit = None if cfg.limit is None else whole_number("limit", cfg.limit, 1)
    accelerator = pick_accelerator(cfg.device)
    own = distortion_name is None and kind is None and cfg.get("data") is None
    paths = [cfg.ckpt_path] + ([cfg.compare] if cfg.compare else [])
    runs = [load(path, cfg.get("data"), cfg.get("distortion"), own) for path in paths]
    if own:
        distortion_name = run_choice(run_dir_of(runs[0].ckpt_path), "distortion") or "own"
    out = Path(cfg.out_dir) if cfg.out_dir else run_dir_of(runs[0].ckpt_path)
    if kind is None:
        return _score_files(
            runs, out, distortion_name or "none", limit=limit, accelerator=accelerator
        )
    return _sweep_files(runs, out, kind, cfg.num_points, limit=limit, accelerator=accelerator)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Run the CLI; a problem the user can fix ends with one ``error:`` line and exit code 2."""
    register_resolvers()  # the run's own config names the data folder through them
    tune_cpu_runtime()
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    try:
        evaluate(cfg, HydraConfig.get().runtime.choices.get("distortion"))
    except Exception as err:
        message = user_error_message(err)
        if message is None and isinstance(err, OSError):  # a full disk, a read-only out_dir
            message = f"could not write the results: {first_line(err)}"
        if message is None:
            raise  # a bug: keep the traceback
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
