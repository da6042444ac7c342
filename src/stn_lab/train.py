"""Train one model (or, with ``-m``, a sweep): ``python -m stn_lab.train model=stn data=...``.

Flow: compose (check the settings and any resume) -> build (seeded DataModule, module and
Trainer, :mod:`stn_lab.build`) -> fit -> test the model the checkpoint callback kept -> record
(:class:`stn_lab.record.RunRecorder`, the one writer of ``metrics.json``). Everything lands in
the run's Hydra output directory (``logs/runs/...`` or ``logs/multiruns/.../<job>``), which one
job at a time holds (:mod:`stn_lab.run_folder`).

What the record says is what trained: ``metrics.json`` holds the resolved config; a finished
run's folder is never rewritten with other settings; a resume may only change how long to train,
and says so. SIGTERM and Ctrl-C save ``last.ckpt`` and record the run as ``interrupted``. A
refused command leaves the folder's record, Hydra files and checkpoints as they were.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, open_dict

from stn_lab.build import build, build_trainer, resolved, trainer_settings
from stn_lab.checkpointing import LAST, CtrlC, check_readable
from stn_lab.command_line import command_refusal
from stn_lab.config_path import CONFIG_DIR, register_resolvers
from stn_lab.cpu_runtime import tune_cpu_runtime
from stn_lab.epoch_log import EpochSummary
from stn_lab.errors import UserError, first_line, user_error_message
from stn_lab.loggers import log_config, restore_history
from stn_lab.module import ClassifierModule
from stn_lab.record import RunRecorder, trained_config
from stn_lab.run_folder import RunFolder
from stn_lab.run_record import (
    RESUMABLE,
    debug_flags,
    identity_changes,
    length_fitted_schedule,
    not_resumable,
)
from stn_lab.settings import settle
from stn_lab.sweep_summary import FAILED_JOBS, note_outcome

log = logging.getLogger("stn_lab")

#: Exit codes of a run stopped by a signal (the shell's 128 + signal number).
SIGNAL_EXIT = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
RESUMABLE_TEXT = " and ".join(RESUMABLE)  # what a resume may change, for the refusals


class CompletedRunConflict(UserError):
    """The run folder holds a completed run with other settings; it is left untouched."""


class Interrupted(Exception):
    """SIGTERM or Ctrl-C stopped the run; ``last.ckpt`` and ``metrics.json`` are written."""

    def __init__(self, signal_name: str):
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> tuple[Path | None, dict]:
    """The checkpoint to resume from (``ckpt_path``: ``last`` or a path) and what it holds of
    the run so far: ``step`` and the ``config`` it trained with (when recorded)."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return None, {}
    path = check_readable(run_dir / "checkpoints" / LAST if ckpt == "last" else Path(ckpt))
    # Memory-mapped: only the small entries read here leave the disk (Lightning loads it again).
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return path, {"step": int(state.get("global_step", 0)), "config": trained_config(state)}


def check_resume(path: Path, trained: dict, config: dict) -> dict:
    """Refuse a resume that would train with other settings than the checkpoint's (the record
    would then say one thing and the model another). Returns the allowed changes."""
    if trained.get("config") is None:
        return {}
    changed = identity_changes(trained["config"], config)
    refused = not_resumable(changed)
    if refused:
        raise UserError(
            f"cannot resume {path} with other settings ({describe(refused)}); only "
            f"{RESUMABLE_TEXT} may change on resume: start a new run for the rest"
        )
    if changed and (fitted := length_fitted_schedule(config)):
        raise UserError(
            f"cannot resume {path} with {describe(changed)}: the scheduler's {fitted} is the "
            "run's length in steps, so the resumed run would follow neither its schedule nor a "
            f"new run's: start a new run (a fixed scheduler.scheduler.{fitted} can be continued)"
        )
    return changed


def describe(changed: dict[str, tuple]) -> str:
    """The first few changed settings, as ``key: old -> new``."""
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:3])


def compose(cfg: DictConfig, run_dir: Path) -> dict:
    """Settle ``cfg`` for a run in ``run_dir`` (:func:`stn_lab.settings.settle`, which may
    refuse or adapt it) and return its resolved form, as the record keeps it. Repeating it on
    the same ``cfg`` changes nothing."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    settle(cfg)
    return resolved(cfg)


def train(
    cfg: DictConfig,
    run_dir: Path,
    choices: dict,
    overrides: list[str],
    recorder: RunRecorder | None = None,
) -> dict:
    """Run one training job in ``run_dir`` and return its ``metrics.json`` record: compose the
    settings, build, fit, test, record."""
    config = compose(cfg, run_dir)
    recorder = recorder or RunRecorder(RunFolder(run_dir), cfg.seed, choices, overrides,
                                       cfg.model.get("stn") is not None)  # fmt: skip
    ckpt_path, trained = checkpoint_to_resume(cfg, run_dir)
    changes = check_resume(ckpt_path, trained, config) if ckpt_path else {}
    resumes = recorder.previous_resumes()
    if ckpt_path is not None:
        resumes.append(
            {"step": trained["step"], "changed": {k: list(v) for k, v in changes.items()}}
        )
    recorder.start(config, debug_flags(trainer_settings(cfg)), resumes)

    datamodule, network, module = build(cfg)
    trainer = build_trainer(cfg, run_dir, extra_callbacks=[recorder])
    counts = network.parameter_counts()
    log.info("run dir: %s", run_dir)
    log.info("model: %d parameters (%d in the STN)", counts["total"], counts["stn"])
    if trainer.is_global_zero:
        write_summary(module, datamodule, run_dir / "summary.txt")
        if ckpt_path is not None:
            restore_history(trainer.loggers, trained["step"])
    log_config(trainer.loggers, config, resuming=ckpt_path is not None)

    ctrl_c = CtrlC()
    try:
        with ctrl_c:
            fit(trainer, module, datamodule, ckpt_path)
        # Read before testing: loading the best checkpoint restores the callbacks' state too.
        best = tested_model(trainer, module, datamodule)
        summary = next((c for c in trainer.callbacks if isinstance(c, EpochSummary)), None)
        seconds = [round(s, 3) for s in summary.seconds_per_epoch] if summary else []
        trainer.test(module, datamodule=datamodule, ckpt_path=best["path"], verbose=False)
    except SystemExit as err:  # Lightning's way out on SIGTERM and Ctrl-C
        name = "SIGINT" if ctrl_c.pressed else recorder.interrupted_by  # Ctrl-C stops as SIGTERM
        if name is None:
            raise
        recorder.interrupted(trainer, name)
        raise Interrupted(name) from err

    results = module.test_results
    diverged = is_diverged(results["loss"], datamodule.num_classes, cfg.faults)
    if trainer.is_global_zero:
        log.info("test acc %.2f%% | test loss %.4f", 100 * results["acc"], results["loss"])
        if diverged:
            log.warning("diverged: test loss %.3g is far above chance; check the learning rate",
                        results["loss"])  # fmt: skip
    return recorder.completed(
        trainer,
        results=dict(
            class_names=list(datamodule.class_names),
            test=results,
            epochs=trainer.current_epoch,
            step=trainer.global_step,
            seconds_per_epoch=seconds,
            skipped_batches=module.skipped_batches,
            params=counts,
            best_checkpoint=relative(best["path"], run_dir),
            selection={k: best[k] for k in ("monitor", "mode", "score", "tested")},
            best_val_acc=best["val_acc"],
            diverged=diverged,
        ),
        files={"predictions": module.test_predictions},
    )


def relative(path: str | None, run_dir: Path) -> str | None:
    """``path`` relative to the run folder (a record stays true when the folder moves)."""
    if not path:
        return None
    path = Path(path)
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


def tested_model(trainer: L.Trainer, module, datamodule) -> dict:
    """Which model the test scores, and why: the model kept by the run's checkpoint callback
    (Lightning's ``trainer.checkpoint_callback``, the first ``ModelCheckpoint`` configured),
    whatever it monitors, or the last weights when there is none (Lightning's default one
    monitors nothing) or it kept nothing.

    A run that never validated (a step budget shorter than an epoch) is validated once here,
    so that every completed run has a validation accuracy.
    """
    if "val/acc" not in trainer.callback_metrics and trainer.limit_val_batches != 0:
        log.info("no validation ran during training: validating the last weights once")
        trainer.validate(module, datamodule=datamodule, verbose=False)
    val_acc = trainer.callback_metrics.get("val/acc")
    best = {"path": None, "monitor": None, "mode": None, "score": None, "tested": "last",
            "val_acc": None if val_acc is None else float(val_acc)}  # fmt: skip
    keeper = trainer.checkpoint_callback
    kept = kept_checkpoint(keeper) if isinstance(keeper, ModelCheckpoint) else None
    if kept is not None and keeper.monitor:
        score = keeper.best_model_score
        best.update(path=str(kept), monitor=keeper.monitor, mode=keeper.mode,
                    score=None if score is None else float(score), tested="best")  # fmt: skip
        if keeper.monitor == "val/acc" and score is not None:
            best["val_acc"] = float(score)
        log.info("testing the checkpoint with the best %s (mode %s): %s",
                 keeper.monitor, keeper.mode, kept.name)  # fmt: skip
    else:
        reason = (
            "no ModelCheckpoint callback" if keeper is None
            else "the checkpoint callback monitors nothing" if not keeper.monitor
            else "no checkpoint was kept"
        )  # fmt: skip
        log.info("testing the last weights (%s)", reason)
    return best


def kept_checkpoint(keeper: ModelCheckpoint) -> Path | None:
    """The best checkpoint the callback kept, if its file is there (a resume from another run's
    checkpoint names files that this folder does not have)."""
    path = Path(keeper.best_model_path) if keeper.best_model_path else None
    return path if path is not None and path.is_file() else None


def is_diverged(test_loss: float, num_classes: int, faults: DictConfig) -> bool:
    """A run whose loss exploded but stayed finite: far above the loss of guessing."""
    factor = faults.get("diverged_loss_factor", 10)
    return not math.isfinite(test_loss) or test_loss > factor * math.log(num_classes)


def guard_completed(folder: RunFolder, record: dict | None, config: dict, resuming: bool) -> bool:
    """What to do in a folder that holds a completed run.

    ``record`` is the folder's ``metrics.json``. True (skip the job) when ``config`` would train
    the very same run (same seed too); False when there is no completed run or when a resume
    (``resuming``) only trains it for longer. Anything else is a :class:`CompletedRunConflict`.
    """
    if record is None or record.get("status") != "completed" or not record.get("config"):
        return False
    changed = identity_changes(record["config"], config)
    if changed and resuming and not not_resumable(changed):
        return False  # train on for longer: the record is rewritten when that run completes
    if not changed:
        return True
    raise CompletedRunConflict(
        f"{folder.path} holds a completed run with other settings ({describe(changed)}); it is "
        "left as it was: run into a new folder (a new sweep, or another hydra.run.dir)"
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


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Train one run; returns its best validation accuracy (what a sweeper should maximise;
    the test split is never used to choose anything)."""
    tune_cpu_runtime()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    status = "failed"
    try:
        best_val_acc, status = run_job(cfg, hydra_cfg, run_dir)
        return best_val_acc
    finally:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            note_outcome(hydra_cfg.sweep.dir, hydra_cfg.job.num, run_dir, status)


def run_job(cfg: DictConfig, hydra_cfg, run_dir: Path) -> tuple[float | None, str]:
    """One job in its folder: ``(best validation accuracy, outcome)``; the outcome is
    ``completed``, ``skipped`` (the same run is already complete), ``failed`` or ``refused``
    (nothing in the folder changed). A single run ends with exit 2 on a user error."""
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    folder = RunFolder(run_dir)
    has_stn = cfg.model.get("stn") is not None
    choices, overrides = dict(hydra_cfg.runtime.choices), list(hydra_cfg.overrides.task)
    recorder = RunRecorder(folder, cfg.seed, choices, overrides, has_stn)
    try:
        folder.lock()
        config = compose(cfg, run_dir)  # what settle adapts is part of what the guard compares
        if guard_completed(folder, recorder.previous, config, bool(cfg.get("ckpt_path"))):
            folder.restore()
            log.info("%s already completed (metrics.json): skipping", run_dir)
            return recorder.previous.get("best_val_acc"), "skipped"
        record = train(cfg, run_dir, recorder.base["choices"], recorder.base["overrides"], recorder)
    except Interrupted as err:
        log.error("%s: last.ckpt and metrics.json saved; resume with ckpt_path=last", err)
        sys.exit(SIGNAL_EXIT[err.signal_name])
    except Exception as err:
        message = user_error_message(err)
        refused = recorder.config is None  # before it started: the folder stays as it was
        if not refused or (recorder.previous is None and not folder.held_by_other):
            recorder.failed(message or first_line(err))  # started, or a new folder
        else:
            folder.restore()
        if message is None:
            if not multirun:
                raise  # a bug: keep the traceback
            log.exception("job failed with an unexpected error")
        else:
            log.error("error: %s", message)
        if not multirun:
            sys.exit(2)
        # One bad job must not stop the sweep; the sweep's summary and exit status count it.
        return None, "refused" if refused else "failed"
    finally:
        folder.unlock()
    return record["best_val_acc"], "completed"


def cli() -> None:
    """``python -m stn_lab.train`` and ``stn-train``: the command-line checks Hydra cannot make
    (one line, exit 2), then the Hydra app; exit 1 when any job of a sweep failed."""
    if refusal := command_refusal(sys.argv[1:]):  # before Hydra fails to compose the config
        print(f"error: {refusal}", file=sys.stderr)
        sys.exit(2)
    register_resolvers()  # before Hydra composes the run folder's name
    main()
    if FAILED_JOBS:
        sys.exit(1)


if __name__ == "__main__":
    cli()
