"""Train one model (or, with ``-m``, a sweep): ``python -m stn_lab.train model=stn data=...``.

Flow: seed everything -> build the DataModule -> build the network for the data's shape inside
:class:`ClassifierModule` -> fit -> test on the best checkpoint -> write ``metrics.json``.
Everything lands in the run's Hydra output directory (``logs/runs/...`` or
``logs/multiruns/.../<job>``).

What the record says is what trained: ``metrics.json`` holds the resolved config; a finished
run's folder is never rewritten with other settings; a resume may only change how long to train,
and says so. SIGTERM and Ctrl-C save ``last.ckpt`` and record the run as ``interrupted``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import signal
import sys
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, OmegaConf, open_dict

from stn_lab.atomic import atomic_write
from stn_lab.build import build, build_trainer, resolved, trainer_settings
from stn_lab.checkpointing import LAST, AtomicCheckpointIO, LastCheckpoint, check_readable
from stn_lab.config_path import CONFIG_DIR, register_resolvers
from stn_lab.cpu_runtime import tune_cpu_runtime
from stn_lab.epoch_log import EpochSummary
from stn_lab.errors import UserError, user_error_message
from stn_lab.loggers import publish_artifacts, restore_history
from stn_lab.module import ClassifierModule
from stn_lab.plugin_extras import missing_plugin
from stn_lab.run_record import (
    RESUMABLE,
    changed_settings,
    debug_flags,
    metrics_record,
    not_resumable,
    record_choices,
    write_json_atomic,
)

log = logging.getLogger("stn_lab")

#: Exit codes of a run stopped by a signal (the shell's 128 + signal number).
SIGNAL_EXIT = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
TRAINED_HYDRA = "trained"  # .hydra/trained/: the Hydra files of the run that completed
RESUMABLE_TEXT = " and ".join(RESUMABLE)  # what a resume may change, for the refusals
PREDICTIONS = "predictions.npy"
PREDICTION_DTYPE = np.dtype(
    [("index", "<i4"), ("pred", "i1"), ("label", "i1"), ("confidence", "<f2")]
)


class CompletedRunConflict(UserError):
    """The run folder holds a completed run with other settings; it is left untouched."""


class Interrupted(Exception):
    """SIGTERM or Ctrl-C stopped the run; ``last.ckpt`` and ``metrics.json`` are written."""

    def __init__(self, signal_name: str):
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name


def check_settings(cfg: DictConfig) -> None:
    """Settings Lightning would accept but that train nothing useful."""
    epochs, steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps")
    if epochs == 0 and not (steps and steps > 0):
        raise UserError(
            "trainer.max_epochs=0 trains nothing: give max_epochs >= 1 "
            "(or max_epochs=-1 with trainer.max_steps > 0)"
        )


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> tuple[Path | None, dict]:
    """The checkpoint to resume from (``ckpt_path``: ``last`` or a path) and what it holds of
    the run so far: ``step`` and the ``config`` it trained with (when recorded)."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return None, {}
    path = check_readable(run_dir / "checkpoints" / LAST if ckpt == "last" else Path(ckpt))
    # Memory-mapped: only the small entries read here leave the disk (Lightning loads it again).
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    trained = next(
        (
            s.get("run_config")
            for k, s in state.get("callbacks", {}).items()
            if "LastCheckpoint" in k
        ),
        None,
    )
    return path, {"step": int(state.get("global_step", 0)), "config": trained}


def check_resume(path: Path, trained: dict, config: dict) -> dict:
    """Refuse a resume that would train with other settings than the checkpoint's (the record
    would then say one thing and the model another). Returns the allowed changes."""
    if trained.get("config") is None:
        return {}
    changed = changed_settings(trained["config"], config)
    refused = not_resumable(changed)
    if refused:
        raise UserError(
            f"cannot resume {path} with other settings ({describe(refused)}); only "
            f"{RESUMABLE_TEXT} may change on resume: start a new run for the rest"
        )
    return changed


def describe(changed: dict[str, tuple]) -> str:
    """The first few changed settings, as ``key: old -> new``."""
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:3])


def train(cfg: DictConfig, run_dir: Path, choices: dict, overrides: list[str]) -> dict:
    """Run one training job in ``run_dir`` and return its ``metrics.json`` record."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    config = resolved(cfg)
    check_settings(cfg)
    ckpt_path, trained = checkpoint_to_resume(cfg, run_dir)
    changes = check_resume(ckpt_path, trained, config) if ckpt_path else {}
    datamodule, network, module = build(cfg)
    trainer_cfg = trainer_settings(cfg)
    trainer = build_trainer(cfg, run_dir)
    callbacks = trainer.callbacks
    last = next((c for c in callbacks if isinstance(c, LastCheckpoint)), None)
    if last is not None:
        last.run_config = config
    counts = network.parameter_counts()
    log.info("run dir: %s", run_dir)
    log.info("model: %d parameters (%d in the STN)", counts["total"], counts["stn"])
    if trainer.is_global_zero:
        write_summary(module, datamodule, run_dir / "summary.txt")
        if ckpt_path is not None:
            restore_history(trainer.loggers, trained["step"])
    for logger in trainer.loggers:
        logger.log_hyperparams(config)
    resumes = previous_resumes(run_dir)
    if ckpt_path is not None:
        resumes.append(
            {"step": trained["step"], "changed": {k: list(v) for k, v in changes.items()}}
        )
    base = {
        "seed": cfg.seed,
        "choices": record_choices(choices, network.has_stn),
        "overrides": overrides,
        "config": config,
        "debug": debug_flags(trainer_cfg),
        "resumes": resumes,
    }
    try:
        fit(trainer, module, datamodule, ckpt_path)
        # Read before testing: loading the best checkpoint restores the callbacks' state too.
        best_ckpt = best_checkpoint(trainer)
        best = best_ckpt.best_model_path if best_ckpt is not None else None
        best_val = best_val_acc(trainer, best_ckpt)
        summary = next((c for c in callbacks if isinstance(c, EpochSummary)), None)
        seconds = [round(s, 3) for s in summary.seconds_per_epoch] if summary else []
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    except SystemExit as err:  # Lightning's way out on SIGTERM and Ctrl-C
        name = last.interrupted_by if last is not None else None
        if name is None:
            raise
        if trainer.is_global_zero:
            write_json_atomic(
                run_dir / "metrics.json",
                metrics_record(status="interrupted", error=f"interrupted by {name}",
                               step=trainer.global_step, epochs=trainer.current_epoch, **base),
            )  # fmt: skip
        raise Interrupted(name) from err
    results = module.test_results
    diverged = is_diverged(results["loss"], datamodule.num_classes, cfg.faults)
    if trainer.is_global_zero:
        log.info("test acc %.2f%% | test loss %.4f", 100 * results["acc"], results["loss"])
        if diverged:
            log.warning("diverged: test loss %.3g is far above chance; check the learning rate",
                        results["loss"])  # fmt: skip
    record = metrics_record(
        status="completed",
        class_names=list(datamodule.class_names),
        test=results,
        epochs=trainer.current_epoch,
        step=trainer.global_step,
        seconds_per_epoch=seconds,
        skipped_batches=module.skipped_batches,
        params=counts,
        best_checkpoint=str(Path(best).relative_to(run_dir)) if best else None,
        best_val_acc=best_val,
        diverged=diverged,
        predictions=PREDICTIONS,
        **base,
    )
    if trainer.is_global_zero:  # under DDP every process gets here; one file is enough
        write_predictions(run_dir / PREDICTIONS, module.test_predictions)
        write_json_atomic(run_dir / "metrics.json", record)
        keep_trained_hydra_files(run_dir)
        files = [run_dir / "metrics.json", *sorted(run_dir.glob("*.png"))]
        publish_artifacts(trainer.loggers, run_dir, files)
    return record


def write_predictions(path: Path, columns: dict[str, torch.Tensor]) -> None:
    """Each test image's prediction as one structured ``.npy`` (8 bytes an image): ``index``,
    ``pred``, ``label`` and softmax ``confidence``; ``compare`` pairs runs image by image."""
    table = np.empty(len(columns["index"]), dtype=PREDICTION_DTYPE)
    for name in table.dtype.names:
        table[name] = columns[name].numpy()
    buffer = io.BytesIO()
    np.save(buffer, table)
    atomic_write(path, buffer.getvalue())


def best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best model by validation accuracy."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor == "val/acc"), None)


def best_val_acc(trainer: L.Trainer, best: ModelCheckpoint | None) -> float | None:
    if best is not None and best.best_model_score is not None:
        return float(best.best_model_score)
    value = trainer.callback_metrics.get("val/acc")
    return None if value is None else float(value)


def is_diverged(test_loss: float, num_classes: int, faults: DictConfig) -> bool:
    """A run whose loss exploded but stayed finite: far above the loss of guessing."""
    factor = faults.get("diverged_loss_factor", 10)
    return not math.isfinite(test_loss) or test_loss > factor * math.log(num_classes)


def read_record(run_dir: Path) -> dict | None:
    """The folder's ``metrics.json``, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def previous_resumes(run_dir: Path) -> list[dict]:
    """The resume history of an earlier record of this run (continued or interrupted)."""
    return list((read_record(run_dir) or {}).get("resumes") or [])


def keep_trained_hydra_files(run_dir: Path) -> None:
    """Keep a copy of the completed run's ``.hydra`` files: Hydra rewrites them whenever a job
    starts in this folder, and a refused re-run puts them back (:func:`guard_completed`)."""
    hydra_dir = run_dir / ".hydra"
    if not hydra_dir.is_dir():
        return
    keep = hydra_dir / TRAINED_HYDRA
    keep.mkdir(exist_ok=True)
    for path in hydra_dir.glob("*.yaml"):
        shutil.copy2(path, keep / path.name)


def guard_completed(run_dir: Path, record: dict | None, config: dict, resuming: bool) -> bool:
    """What to do in a folder that holds a completed run.

    ``record`` is the folder's ``metrics.json``. True (skip the job) when ``config`` would train
    the very same run; False when there is no completed run or when a resume (``resuming``) only
    trains it for longer. Anything else is a :class:`CompletedRunConflict`. When the job does
    not train, the completed run's ``.hydra`` files (which Hydra has just rewritten) are put back
    as they were when it trained.
    """
    if record is None or record.get("status") != "completed" or not record.get("config"):
        return False
    changed = changed_settings(record["config"], config)
    if changed and resuming and not not_resumable(changed):
        return False  # train on for longer: the record is rewritten when that run completes
    for path in (run_dir / ".hydra" / TRAINED_HYDRA).glob("*.yaml"):
        shutil.copy2(path, run_dir / ".hydra" / path.name)
    if not changed:
        return True
    raise CompletedRunConflict(
        f"{run_dir} holds a completed run with other settings ({describe(changed)}); it is left "
        "as it was: run into a new folder (a new sweep, or another hydra.run.dir)"
        + (f"; a resume may only change {RESUMABLE_TEXT}" if resuming else "")
    )


def write_summary(module: ClassifierModule, datamodule, path: Path) -> None:
    """Layer table with output shapes and parameter counts, into ``summary.txt`` (Lightning
    prints its own summary when ``trainer.enable_model_summary`` is on)."""
    size = datamodule.image_size
    module.example_input_array = torch.zeros(2, datamodule.in_channels, size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(ModelSummary(module, max_depth=-1)) + "\n")


def fit(trainer: L.Trainer, module, datamodule, ckpt_path: Path | None) -> None:
    """``trainer.fit``, resuming from ``ckpt_path``; another model's checkpoint is a user error."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except RuntimeError as err:
        if "state_dict" not in str(err):
            raise
        reason = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise UserError(
            f"checkpoint {ckpt_path} was made with a different model config ({reason[:160]})"
        ) from None


def record_failure(cfg: DictConfig, run_dir: Path, choices, overrides, message: str) -> None:
    has_stn = cfg.model.get("stn") is not None
    write_json_atomic(
        run_dir / "metrics.json",
        metrics_record(
            status="failed",
            seed=cfg.seed,
            choices=record_choices(choices, has_stn),
            overrides=overrides,
            error=message,
        ),
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Train one run; returns its best validation accuracy (what a sweeper should maximise;
    the test split is never used to choose anything)."""
    tune_cpu_runtime()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = dict(hydra_cfg.runtime.choices)
    overrides = list(hydra_cfg.overrides.task)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    previous = read_record(run_dir)
    # A completed run's record is never replaced by a failure (of a re-run or a continuation).
    keep_record = previous is not None and previous.get("status") == "completed"
    try:
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
        if guard_completed(run_dir, previous, resolved(cfg), resuming=bool(cfg.get("ckpt_path"))):
            log.info("%s already completed (metrics.json): skipping", run_dir)
            return previous.get("best_val_acc")
        record = train(cfg, run_dir, choices, overrides)
    except Interrupted as err:
        log.error("%s: last.ckpt and metrics.json saved; resume with ckpt_path=last", err)
        sys.exit(SIGNAL_EXIT[err.signal_name])
    except Exception as err:
        message = user_error_message(err)
        if not keep_record:
            record_failure(cfg, run_dir, choices, overrides,
                           message or f"{type(err).__name__}: {err}".splitlines()[0])  # fmt: skip
        if multirun:
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
    return record["best_val_acc"]


if __name__ == "__main__":
    if refusal := missing_plugin(sys.argv[1:]):  # before Hydra fails to compose the config
        print(f"error: {refusal}", file=sys.stderr)
        sys.exit(2)
    register_resolvers()  # before Hydra composes the run folder's name
    main()
