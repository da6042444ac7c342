"""Run folders for the ``compare`` tests, written as ``train`` writes them (no tests here).

Each record comes from the real writer, :func:`stn_lab.run_record.metrics_record`, with the
config Hydra composes from ``conf/`` for the given overrides (resolved, as ``train`` records
it) and the choices recorded as ``train`` records them. Only the results are chosen by the
test: accuracies, losses, timings. ``predictions.npy`` has the documented layout
(docs/outputs.md). :func:`run_compare` is the real command line, in a subprocess.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf, open_dict

from stn_lab import compare
from stn_lab.config_path import compose_config
from stn_lab.run_record import metrics_record, record_choices

#: The layout of ``predictions.npy`` (docs/outputs.md): 8 bytes an image.
PREDICTION_DTYPE = np.dtype(
    [("index", "<i4"), ("pred", "i1"), ("label", "i1"), ("confidence", "<f2")]
)
CLASSES = ["T-shirt/top", "Trouser", "Pullover"]


@functools.cache
def composed(overrides: tuple[str, ...]) -> tuple[str, str]:
    """The resolved config and the Hydra choices for ``overrides``, as JSON (cached: composing
    takes a tenth of a second)."""
    cfg = compose_config([*overrides, "paths.output_dir=run"], return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return json.dumps(OmegaConf.to_container(cfg, resolve=True)), json.dumps(choices)


def record(
    seed: int,
    acc: float,
    *overrides: str,
    status: str = "completed",
    loss: float | None = None,
    per_class: list[float] | None = None,
    class_names: list[str] | None = None,
    seconds: list[float] | None = None,
    params: dict | None = None,
    **results,
) -> dict:
    """What ``train ... <overrides> seed=<seed>`` records when its test accuracy is ``acc``.
    ``results`` are further :func:`metrics_record` arguments (``error``, ``step``, ``debug``,
    ``diverged``, ``best_val_acc``, ``predictions``)."""
    config_json, choices_json = composed(tuple(overrides))
    config = {**json.loads(config_json), "seed": seed}
    has_stn = config["model"].get("stn") is not None
    completed = status == "completed"
    if per_class is None:
        per_class = [acc - 0.01, acc + 0.02, acc - 0.01]
    test = {
        "acc": acc,
        "loss": 1.0 - acc if loss is None else loss,
        "acc_per_class": per_class,
        "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    }
    arguments = {
        "class_names": CLASSES if class_names is None else class_names,
        "test": test,
        "epochs": config["trainer"]["max_epochs"],
        "seconds_per_epoch": [10.0 + seed, 12.0 + seed] if seconds is None else seconds,
        "params": params or {"total": 5000 if has_stn else 3000, "stn": 2000 if has_stn else 0},
        "best_checkpoint": "checkpoints/epoch=1-step=10.ckpt",
        "step": 114,
        "best_val_acc": acc + 0.01,
    }
    return metrics_record(
        status=status,
        seed=seed,
        choices=record_choices(json.loads(choices_json), has_stn),
        overrides=[*overrides, f"seed={seed}"],
        config=config,
        **(arguments if completed else {}),
        **results,
    )


def write_run(run_dir: Path, payload: dict | str, hydra: bool = True) -> Path:
    """A run folder: ``.hydra/`` (as Hydra leaves it) and ``metrics.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if hydra:
        (run_dir / ".hydra").mkdir(exist_ok=True)
        (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    text = payload if isinstance(payload, str) else json.dumps(payload, indent=2)
    (run_dir / "metrics.json").write_text(text)
    return run_dir


def prediction_table(correct: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """``predictions.npy``'s table for a run that gets image i right where ``correct[i]``."""
    index = np.arange(len(correct))
    label = index % n_classes
    table = np.empty(len(correct), dtype=PREDICTION_DTYPE)
    table["index"], table["label"] = index, label
    table["pred"] = np.where(correct, label, (label + 1) % n_classes)
    table["confidence"] = np.linspace(0.5, 0.99, len(correct))
    return table


def write_predicted_run(run_dir: Path, correct: np.ndarray, seed: int, *overrides: str) -> Path:
    """A completed run that scored the test images as ``correct`` says, with its predictions."""
    payload = record(
        seed,
        float(np.mean(correct)),
        *overrides,
        class_names=[f"class_{k}" for k in range(10)],
        per_class=[],
        predictions="predictions.npy",
    )
    write_run(run_dir, payload)
    np.save(run_dir / "predictions.npy", prediction_table(correct))
    return run_dir


def v1(payload: dict) -> dict:
    """The same record as schema 1 wrote it: no config, debug flags, step or manifest."""
    old = {k: v for k, v in payload.items() if k not in
           ("config", "debug", "step", "diverged", "best_val_acc", "resumes", "variance",
            "predictions")}  # fmt: skip
    return {**old, "schema_version": 1}


def run_compare(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m stn_lab.compare ARGS`` in ``cwd``, as a user runs it."""
    src = str(Path(compare.__file__).resolve().parents[2])
    base = {k: v for k, v in os.environ.items() if k != "STN_LAB_LOGS"}
    environment = {**base, "PYTHONPATH": src, "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "stn_lab.compare", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=300,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))
