"""Loggers and callbacks from the ``logger`` and ``callbacks`` config groups.

Each group holds named entries with a ``_target_`` (the lightning-hydra-template shape), so
several loggers can run at once (``logger=[csv,mlflow]``) and one more callback is one override
(``+callbacks.name._target_=...``). Lists given the Trainer's own way (``+trainer.callbacks=[...]``,
``+trainer.logger=...``) are honoured too, never dropped.

The optional loggers each need an extra; a missing package is one line naming it. A resumed
run's ``metrics.csv`` keeps the rows from before the resume (Lightning's writer would delete
them), and MLflow and W&B get the run's pictures and ``metrics.json`` once the run ends.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, WandbLogger

from stn_lab.errors import UserError

log = logging.getLogger("stn_lab")

#: The pip extra (``pip install -e '.[name]'``) each optional logger or callback needs.
EXTRAS = {
    "tensorboard": "tensorboard",
    "tensorboardX": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "rich": "rich",
}


class MissingExtra(UserError, ImportError):
    """An optional logger or callback whose package is not installed."""


def _build(name: str, config: Any, group: str):
    """Instantiate one entry; a missing optional package becomes :class:`MissingExtra`."""
    try:
        return instantiate(config)
    except (ImportError, InstantiationException, ModuleNotFoundError) as err:
        cause = err
        while cause.__cause__ is not None and not isinstance(cause, ModuleNotFoundError):
            cause = cause.__cause__
        text = str(cause)
        for package, extra in EXTRAS.items():
            if package in text and ("not installed" in text or isinstance(cause, ImportError)):
                raise MissingExtra(
                    f"{group} {name!r} needs the {extra!r} extra: pip install -e '.[{extra}]'"
                ) from None
        raise


def _entries(group: Mapping | None, name: str) -> list[tuple[str, Any]]:
    """The named entries of a group node, skipping ones set to null (``callbacks.x=null``)."""
    if group is None:
        return []
    if not isinstance(group, Mapping):
        raise ValueError(f"{name} must be a mapping of named entries, got {type(group).__name__}")
    return [(key, conf) for key, conf in group.items() if conf is not None]


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) or hasattr(value, "__iter__") else [value]


def build_callbacks(cfg_callbacks: Mapping | None, extra: Any = None) -> list[L.Callback]:
    """The ``callbacks`` group's entries, then any given as ``trainer.callbacks``."""
    callbacks = [_build(n, c, "callback") for n, c in _entries(cfg_callbacks, "callbacks")]
    callbacks += [_build("trainer.callbacks", c, "callback") for c in _as_list(extra)]
    return callbacks


def build_loggers(cfg_logger: Mapping | None, run_dir: Path, extra: Any = None) -> list[Logger]:
    """The ``logger`` group's entries, then any given as ``trainer.logger``."""
    loggers = []
    for name, conf in _entries(cfg_logger, "logger"):
        kwargs = {}
        target = str(conf.get("_target_", ""))
        if target.endswith("MLFlowLogger"):
            kwargs["tracking_uri"] = _absolute_file_uri(conf.get("tracking_uri"))
        if target.endswith("WandbLogger") and conf.get("offline") is None:
            kwargs["offline"] = not os.environ.get("WANDB_API_KEY")
        loggers.append(_build(name, {**conf, **kwargs} if kwargs else conf, "logger"))
    loggers += [_build("trainer.logger", c, "logger") for c in _as_list(extra)]
    return loggers


def _absolute_file_uri(uri: str | None) -> str | None:
    """MLflow wants ``file:`` stores as absolute paths; the config gives one under the log dir."""
    if not uri or not str(uri).startswith("file:"):
        return uri
    return Path(str(uri)[len("file:") :]).resolve().as_uri()


def restore_history(loggers: list[Logger], upto_step: int) -> None:
    """Keep a resumed run's ``metrics.csv`` rows up to the checkpoint's step.

    Lightning's CSV writer deletes an existing file when it starts, so the rows are read first
    and written back into the new file. Rows logged after ``upto_step`` are dropped: those steps
    run again and log again.
    """
    for logger in loggers:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        with path.open(newline="") as fh:
            rows = [{k: v for k, v in row.items() if v} for row in csv.DictReader(fh)]
        kept = [_typed(row) for row in rows if int(row.get("step", 0)) <= upto_step]
        writer = logger.experiment  # creating it removes the old file
        writer.metrics.extend(kept)
        writer.save()


def _typed(row: dict[str, str]) -> dict[str, float | int]:
    return {k: int(v) if k in ("epoch", "step") else float(v) for k, v in row.items()}


def publish_artifacts(loggers: list[Logger], run_dir: Path, files: list[Path]) -> None:
    """Hand the run's pictures and ``metrics.json`` to the loggers that store files."""
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for path in files:
                logger.experiment.log_artifact(logger.run_id, str(path))
        elif isinstance(logger, WandbLogger):
            for path in files:
                logger.experiment.save(str(path), base_path=str(run_dir), policy="now")
