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

from stn_lab.errors import UserError, first_line
from stn_lab.instantiators import as_list, build_entry, entries

log = logging.getLogger("stn_lab")
RUN_DIR_TAG = "stn_lab_run_dir"  # the MLflow tag naming the run folder (conf/logger/mlflow.yaml)


def build_loggers(
    cfg_logger: Mapping | None, extra: Any = None, resuming: bool = False
) -> list[Logger]:
    """The ``logger`` group's entries, then any given as ``trainer.logger``. A resumed run
    continues its MLflow run (found by its ``stn_lab_run_dir`` tag) rather than starting one."""
    named = entries(cfg_logger, "logger")
    named += [("trainer.logger", c) for c in as_list(extra, "trainer.logger")]
    loggers = []
    for name, conf in named:
        conf = _local_settings(conf)
        if resuming and str(conf.get("_target_", "")).endswith("MLFlowLogger"):
            conf = {**conf, "run_id": conf.get("run_id") or _mlflow_run_of(conf)}
        loggers.append(build_entry(name, conf, "logger"))
    return loggers


def _mlflow_run_of(conf: Mapping) -> str | None:
    """The MLflow run that logged this run folder before (its newest), or None."""
    run_dir = (conf.get("tags") or {}).get(RUN_DIR_TAG)
    if not run_dir:
        return None
    from mlflow.tracking import MlflowClient  # the mlflow extra; build_entry named it if missing

    client = MlflowClient(conf.get("tracking_uri"))
    experiment = client.get_experiment_by_name(conf.get("experiment_name") or "Default")
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.{RUN_DIR_TAG} = '{run_dir}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )  # fmt: skip
    return runs[0].info.run_id if runs else None


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
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless opted in;
            # a file: tracking_uri (not the default) still works for writing.
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


def log_config(loggers: list[Logger], config: dict, resuming: bool) -> None:
    """Give every logger the run's resolved config; the first write, so a store that refuses it
    is one line. A resumed MLflow run keeps the params it started with (MLflow forbids changing
    them): the record's ``resumes`` says what the resume changed."""
    for logger in loggers:
        if resuming and isinstance(logger, MLFlowLogger):
            continue
        try:
            logger.log_hyperparams(config)
        except Exception as err:  # noqa: BLE001 - any store's failure (a database, a server)
            raise UserError(
                f"logger {type(logger).__name__} cannot write to its store: {first_line(err)}"
            ) from err


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
