"""Loggers and callbacks from the ``logger`` and ``callbacks`` config groups.

Each group holds named entries with a ``_target_`` (the lightning-hydra-template shape), so
several loggers can run at once (``logger=[csv,mlflow]``) and one more callback is one override
(``+callbacks.name._target_=...``). Entries given the Trainer's own way
(``+trainer.callbacks=[...]``, ``+trainer.logger={...}``, ``+trainer.plugins=[...]``) are honoured
too, never dropped; one that cannot be (not a ``_target_`` config, a target that does not
import, ``trainer.default_root_dir``) is refused in one line.

The optional loggers each need an extra; a missing package is one line naming it. A resumed
run's ``metrics.csv`` keeps the rows from before the resume (Lightning's writer would delete
them), and MLflow and W&B get the run's pictures and ``metrics.json`` once the run ends.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, WandbLogger
from omegaconf import ListConfig

from stn_lab.errors import ConfigError, UserError

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
    """Instantiate one entry; a missing optional package becomes :class:`MissingExtra`, and an
    entry that is not a ``_target_`` config, or whose target cannot be imported, one line."""
    if not isinstance(config, Mapping) or "_target_" not in config:
        hint = {"logger": "; pick named ones with logger=[...]",
                "callback": "; pick named ones with callbacks=[...]"}.get(group, "")  # fmt: skip
        raise ConfigError(
            f"{group} {name!r} must be a config with a _target_ (a class path), "
            f"got {config!r}{hint}"
        )
    try:
        return instantiate(config)
    except (ImportError, InstantiationException) as err:
        extra, text = _missing(err)
        if extra is not None:
            raise MissingExtra(
                f"{group} {name!r} needs the {extra!r} extra: pip install -e '.[{extra}]'"
            ) from None
        if text is not None:
            raise ConfigError(
                f"{group} {name!r}: cannot import {config['_target_']!r} ({text})"
            ) from None
        raise


def _missing(err: BaseException) -> tuple[str | None, str | None]:
    """(the extra to install, or None; the import failure's first line, or None for errors
    that are not about a missing import: those are bugs and keep their traceback)."""
    chain = [err]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    failed = [e for e in chain if isinstance(e, ImportError)]
    if not failed:
        return None, None
    named = [e for e in failed if getattr(e, "name", None)]
    cause = named[-1] if named else failed[-1]
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    # A failed `import x` names the module; Lightning's own check ("Requirement 'mlflow>=1.0.0'
    # not met", "Neither `tensorboard` nor `tensorboardX` is available") names the package.
    words = [cause.name.split(".")[0]] if named else re.findall(r"[\w-]+", str(cause))
    return next((EXTRAS[w] for w in words if w in EXTRAS), None), text


def _entries(group: Mapping | None, name: str) -> list[tuple[str, Any]]:
    """The named entries of a group node, skipping ones set to null (``callbacks.x=null``)."""
    if group is None:
        return []
    if not isinstance(group, Mapping):
        raise ConfigError(f"{name} must be a mapping of named entries, got {type(group).__name__}")
    return [(key, conf) for key, conf in group.items() if conf is not None]


def _as_list(value: Any, key: str) -> list:
    """``trainer.callbacks`` / ``trainer.logger``: one config or a list of them."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list | tuple | ListConfig):
        return list(value)
    hint = " (to log nothing: ~logger)" if key == "trainer.logger" else ""
    raise ConfigError(
        f"{key}={value!r} cannot be honoured: give a config with a _target_ or a list of them{hint}"
    )


def build_callbacks(cfg_callbacks: Mapping | None, extra: Any = None) -> list[L.Callback]:
    """The ``callbacks`` group's entries, then any given as ``trainer.callbacks``."""
    callbacks = [_build(n, c, "callback") for n, c in _entries(cfg_callbacks, "callbacks")]
    extra = _as_list(extra, "trainer.callbacks")
    callbacks += [_build("trainer.callbacks", c, "callback") for c in extra]
    return callbacks


def build_plugins(extra: Any = None) -> list:
    """Plugins given as ``+trainer.plugins=[...]`` (e.g. a cluster environment); train.py puts
    them after its own atomic checkpoint writer."""
    return [_build("trainer.plugins", c, "plugin") for c in _as_list(extra, "trainer.plugins")]


#: Trainer arguments that train.py sets itself: an override is refused, never dropped.
RESERVED_TRAINER_ARGS = {
    "default_root_dir": "it is the run folder: set hydra.run.dir (or hydra.sweep.dir) instead",
}


def refuse_reserved(trainer_cfg: Mapping) -> None:
    """One line for a ``trainer.<key>`` override that train.py would silently replace."""
    for key, why in RESERVED_TRAINER_ARGS.items():
        if trainer_cfg.get(key) is not None:
            raise ConfigError(f"trainer.{key} cannot be overridden: {why}")


def build_loggers(cfg_logger: Mapping | None, extra: Any = None) -> list[Logger]:
    """The ``logger`` group's entries, then any given as ``trainer.logger``."""
    entries = _entries(cfg_logger, "logger")
    entries += [("trainer.logger", c) for c in _as_list(extra, "trainer.logger")]
    return [_build(name, _local_settings(conf), "logger") for name, conf in entries]


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
