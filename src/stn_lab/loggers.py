"""Loggers from the ``logger`` config group, and what stn_lab adds to Lightning's loggers.

Each group entry is a named ``_target_`` config, so several loggers can run at once
(``logger=[csv,mlflow]``); ``+trainer.logger={...}`` is honoured too. The optional loggers each
need an extra; a missing package is one line naming it. A resumed run's ``metrics.csv`` keeps the
rows from before the resume (Lightning's writer would delete them), and MLflow and W&B get the
run's pictures and ``metrics.json`` once the run ends.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, WandbLogger

from stn_lab.instantiators import as_list, build_entry, entries

log = logging.getLogger("stn_lab")


def build_loggers(cfg_logger: Mapping | None, extra: Any = None) -> list[Logger]:
    """The ``logger`` group's entries, then any given as ``trainer.logger``."""
    named = entries(cfg_logger, "logger")
    named += [("trainer.logger", c) for c in as_list(extra, "trainer.logger")]
    return [build_entry(name, _local_settings(conf), "logger") for name, conf in named]


def _local_settings(conf: Any) -> Any:
    """MLflow's store as an absolute ``file:`` or ``sqlite:`` URI (a database's artifacts beside
    it); W&B offline unless a key is set."""
    if not isinstance(conf, Mapping):
        return conf
    kwargs = {}
    target = str(conf.get("_target_", ""))
    if target.endswith("MLFlowLogger"):
        kwargs["tracking_uri"] = _absolute_file_uri(conf.get("tracking_uri"))
        if str(kwargs["tracking_uri"] or "").startswith("file:"):
            # Recent MLflow 3 refuses a file store unless opted in; it is still a store that its
            # client and `mlflow ui` read, with one folder per run (safe for parallel sweep
            # jobs, no database). A sqlite:/// tracking_uri uses a database instead.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = str(kwargs["tracking_uri"] or "")
        if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
            # A database store keeps files elsewhere: next to the database, not in ./mlruns.
            db = Path(uri[len("sqlite:///") :]).resolve()
            kwargs["tracking_uri"] = f"sqlite:///{db}"
            if conf.get("artifact_location") is None:
                kwargs["artifact_location"] = (db.parent / "mlartifacts").as_uri()
    if target.endswith("WandbLogger") and conf.get("offline") is None:
        kwargs["offline"] = not os.environ.get("WANDB_API_KEY")
    return {**conf, **kwargs} if kwargs else conf


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
        for row in kept:  # Lightning's public call; the first one removes the old file
            step = row.pop("step")
            logger.log_metrics(row, step=step)
        logger.save()


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
