"""Train one model (or, with ``-m``, a sweep): ``python -m stn_lab.train model=stn data=...``.

Flow: seed everything -> build the DataModule -> build the network for the data's shape -> wrap it
in :class:`ClassifierModule` -> fit -> test on the best checkpoint -> write ``metrics.json``.
Everything lands in the run's Hydra output directory (``logs/runs/...`` or
``logs/multiruns/.../<job>``).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import uuid
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, OmegaConf

from stn_lab.config_path import CONFIG_DIR
from stn_lab.cpu_runtime import tune_cpu_runtime
from stn_lab.data.sources import DataError
from stn_lab.epoch_log import EpochSummary
from stn_lab.module import ClassifierModule, TrainingFault
from stn_lab.run_record import metrics_record, record_choices, write_json_atomic
from stn_lab.viz.callbacks import RunArtefacts

log = logging.getLogger("stn_lab")

# A short random id makes run directories unique even for jobs started in the same second.
OmegaConf.register_new_resolver("run_id", lambda: uuid.uuid4().hex[:6], use_cache=True)


class UserError(Exception):
    """A problem the user can fix (bad option value, missing data): shown as one line."""


def user_error_message(err: BaseException) -> str | None:
    """The one-line message for errors caused by input, or ``None`` for real bugs."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, (DataError, UserError, ValueError, TrainingFault)):
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


def build(cfg: DictConfig):
    """Seeded DataModule, network and LightningModule for ``cfg`` (no trainer)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    network = instantiate(
        cfg.model,
        in_channels=datamodule.in_channels,
        image_size=datamodule.image_size,
        num_classes=datamodule.num_classes,
    )
    if cfg.get("channels_last", False):
        # Conv weights in NHWC make oneDNN run every convolution and max-pool in that layout.
        network.to(memory_format=torch.channels_last)
    module = ClassifierModule(
        network,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        scheduler_interval=cfg.get("scheduler_interval", "epoch"),
        on_fault=cfg.faults.on_fault,
        degenerate_fraction=cfg.faults.degenerate_fraction,
        num_classes=datamodule.num_classes,
        step_batch_size=datamodule.batch_size,
    )
    return datamodule, network, module


def in_loaded_batches(steps: int, steps_per_batch: int) -> int:
    """A step count as Lightning's batch count (a loaded batch holds ``steps_per_batch``
    optimiser steps), rounded up so that it is never 0."""
    return max(1, math.ceil(steps / steps_per_batch))


def train(cfg: DictConfig, run_dir: Path, choices: dict, overrides: list[str]) -> dict:
    """Run one training job in ``run_dir`` and return its ``metrics.json`` record."""
    datamodule, network, module = build(cfg)
    summary = EpochSummary()
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="epoch{epoch:03d}-val_acc{val/acc:.4f}",
        auto_insert_metric_name=False,
        monitor="val/acc",
        mode="max",
        save_last=True,
        enable_version_counter=False,  # both callbacks refresh the one last.ckpt
    )
    # A second checkpoint refreshes last.ckpt every N steps, so a killed run resumes mid-epoch.
    # It fires when the step count is a multiple of N, which with several steps per batch must
    # also be a multiple of steps_per_batch.
    per_batch, every_n = datamodule.steps_per_batch, cfg.checkpoint_every_n_steps
    if every_n:  # 0 / null: no step-based refresh
        every_n = per_batch * in_loaded_batches(every_n, per_batch)
    last = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        every_n_train_steps=every_n,
        save_top_k=0,
        save_last=True,
        enable_version_counter=False,
    )
    # val_check_interval as an int counts steps here and batches in Lightning.
    every = cfg.trainer.get("val_check_interval")
    val_every = {} if not isinstance(every, int) else {
        "val_check_interval": in_loaded_batches(every, per_batch)
    }  # fmt: skip
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        **val_every,
        default_root_dir=str(run_dir),
        logger=CSVLogger(str(run_dir), name="csv", version=""),
        callbacks=[summary, checkpoint, last, RunArtefacts(run_dir, **cfg.artefacts)],
    )
    counts = network.parameter_counts()
    log.info("run dir: %s", run_dir)
    log.info("model: %d parameters (%d in the STN)", counts["total"], counts["stn"])
    if trainer.is_global_zero:
        write_summary(module, datamodule, run_dir / "summary.txt")
    fit(trainer, module, datamodule, cfg.get("ckpt_path"))
    best = checkpoint.best_model_path or None
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    results = module.test_results
    if trainer.is_global_zero:
        log.info("test acc %.2f%% | test loss %.4f", 100 * results["acc"], results["loss"])
    record = metrics_record(
        status="completed",
        seed=cfg.seed,
        choices=record_choices(choices, network.has_stn, cfg.data.get("distortion")),
        overrides=overrides,
        class_names=list(datamodule.class_names),
        test=results,
        epochs=trainer.current_epoch,
        seconds_per_epoch=[round(s, 3) for s in summary.seconds_per_epoch],
        skipped_batches=module.skipped_batches,
        params=counts,
        best_checkpoint=str(Path(best).relative_to(run_dir)) if best else None,
    )
    if trainer.is_global_zero:  # under DDP every process gets here; one file is enough
        write_json_atomic(run_dir / "metrics.json", record)
    return record


def write_summary(module: ClassifierModule, datamodule, path: Path) -> None:
    """Layer table with output shapes and parameter counts, to the log and ``summary.txt``."""
    size = datamodule.image_size
    module.example_input_array = torch.zeros(2, datamodule.in_channels, size, size)
    table = str(ModelSummary(module, max_depth=-1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table + "\n")
    log.info("model summary (also in %s):\n%s", path.name, table)


def fit(trainer: L.Trainer, module, datamodule, ckpt_path: str | None) -> None:
    """``trainer.fit``, resuming from ``ckpt_path``; another model's checkpoint is a user error."""
    if ckpt_path and ckpt_path != "last" and not Path(ckpt_path).is_file():
        raise UserError(f"checkpoint {ckpt_path} does not exist")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except RuntimeError as err:
        if "state_dict" not in str(err):
            raise
        reason = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise UserError(
            f"checkpoint {ckpt_path} was made with a different model config ({reason[:160]})"
        ) from None


def completed_record(run_dir: Path) -> dict | None:
    """The run's ``metrics.json`` if it already completed (re-running a sweep skips it)."""
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("status") == "completed" else None


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    tune_cpu_runtime()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = dict(hydra_cfg.runtime.choices)
    overrides = list(hydra_cfg.overrides.task)
    done = completed_record(run_dir)
    if done is not None:
        log.info("%s already completed (metrics.json): skipping", run_dir)
        return done["test"]["acc"]
    try:
        record = train(cfg, run_dir, choices, overrides)
    except Exception as err:
        message = user_error_message(err)
        has_stn = cfg.model.get("stn") is not None
        write_json_atomic(
            run_dir / "metrics.json",
            metrics_record(
                status="failed",
                seed=cfg.seed,
                choices=record_choices(choices, has_stn, cfg.data.get("distortion")),
                overrides=overrides,
                error=message or f"{type(err).__name__}: {err}".splitlines()[0],
            ),
        )
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # One bad job must not stop the sweep; compare lists it as failed.
            if message is None:
                log.exception("job failed with an unexpected error")
            else:
                log.error("error: %s", message)
            return None
        if message is None:
            raise  # a bug: keep the traceback
        log.error("error: %s", message)
        sys.exit(2)
    return record["test"]["acc"]


if __name__ == "__main__":
    main()
