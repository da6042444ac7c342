"""The one writer of a run's record: ``metrics.json``, ``predictions.npy``, the recorded Hydra
files and the artefacts handed to the loggers.

:class:`RunRecorder` is a Lightning callback that ``train`` adds to every run (it is not a config
entry, so it cannot be dropped). It writes each ending of a run the same way:

- ``completed``: the test results of the model the test scored, the best validation accuracy and
  the checkpoint it came from, per-image predictions, timings;
- ``interrupted``: SIGTERM or Ctrl-C stopped training (``last.ckpt`` is saved by its callback);
- ``failed``: the first line of the error.

It also stores the run's resolved config in every checkpoint under :data:`CHECKPOINT_KEY`, a
top-level key that no callback's name or class can hide, so a resume can check it trains on with
the same settings. A record of a completed run is never replaced by a failure, and a space of
:data:`RESERVE_BYTES` is held from the start, so that a full disk can still be recorded.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch

from stn_lab.atomic import atomic_write
from stn_lab.checkpointing import AtomicCheckpointIO, signal_name
from stn_lab.errors import UserError, first_line
from stn_lab.lightning_private import epochs_trained, rerun_cut_validation
from stn_lab.loggers import publish_artifacts
from stn_lab.run_folder import RECORDED, RUNNING, RunFolder
from stn_lab.run_record import metrics_record, record_choices

log = logging.getLogger("stn_lab")

METRICS = "metrics.json"
PREDICTIONS = "predictions.npy"
PREDICTION_DTYPE = np.dtype(
    [("index", "<i4"), ("pred", "i1"), ("label", "i1"), ("confidence", "<f2")]
)
#: The checkpoint entry that holds the run's resolved config (read by :func:`trained_config`).
CHECKPOINT_KEY = "stn_lab_run_config"
VALIDATION_CUT = "stn_lab_validation_cut"  # whether it was saved mid-validation
RESERVE = ".record_reserve"
RESERVE_BYTES = 1 << 16  # several times what a failed record needs


class RecordWriteError(UserError, OSError):
    """Part of the record could not be written (full disk, no permission)."""


def read_record(run_dir: Path) -> dict | None:
    """The folder's ``metrics.json``, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((run_dir / METRICS).read_text())
    except (OSError, ValueError):
        return None


def trained_config(checkpoint: dict) -> dict | None:
    """The resolved config a checkpoint was trained with (None for a checkpoint without one)."""
    return checkpoint.get(CHECKPOINT_KEY)


def prediction_table(columns: dict[str, torch.Tensor]) -> bytes:
    """Each test image's prediction as one structured ``.npy`` (8 bytes an image): ``index``,
    ``pred``, ``label`` and softmax ``confidence``; ``compare`` pairs runs image by image."""
    table = np.empty(len(columns["index"]), dtype=PREDICTION_DTYPE)
    for name in table.dtype.names:
        table[name] = columns[name].numpy()
    buffer = io.BytesIO()
    np.save(buffer, table)
    return buffer.getvalue()


def _moved(value, old: str, new: str):
    """``value`` with every path under the folder ``old`` moved under ``new`` (dict keys too)."""
    if isinstance(value, str) and (value == old or value.startswith(old + "/")):
        return new + value[len(old) :]
    if isinstance(value, dict):
        return {_moved(k, old, new): _moved(v, old, new) for k, v in value.items()}
    return value


def _atomic_io(trainer: L.Trainer) -> AtomicCheckpointIO | None:
    """The trainer's checkpoint writer when it is stn_lab's (it can hold back removals)."""
    checkpoint_io = trainer.strategy.checkpoint_io
    return checkpoint_io if isinstance(checkpoint_io, AtomicCheckpointIO) else None


class RunRecorder(L.Callback):
    """Writes the record of the run in ``folder``.

    Args:
        folder: the run folder.
        seed, choices, overrides: what the command asked for (choices as Hydra reports them).
        has_stn: whether the model has a spatial transformer (STN-only choices are ``n/a``
            without one).
    """

    def __init__(self, folder: RunFolder, seed, choices: dict, overrides: list[str], has_stn):
        self.folder = folder
        self.path = folder.path
        self.base = {
            "seed": seed,
            "choices": record_choices(choices, has_stn),
            "overrides": overrides,
        }
        self.previous = read_record(self.path)
        self.config: dict | None = None
        self.interrupted_by: str | None = None
        self.trained = False  # whether this job reached training (and so changed checkpoints)

    # ------------------------------------------------------------------ lifecycle
    def start(self, config: dict, debug: list[str], resumes: list[dict]) -> None:
        """The job was accepted and will train: hold the reserve, remember the settings."""
        self.config = config
        self.base.update(config=config, debug=debug, resumes=resumes)
        self.folder.keep(RUNNING)
        try:
            reserve = self.path / RESERVE
            self.path.mkdir(parents=True, exist_ok=True)
            if not reserve.exists():
                reserve.write_bytes(b"\0" * RESERVE_BYTES)
        except OSError as err:
            raise RecordWriteError(f"cannot write in {self.path}: {first_line(err)}") from None

    def previous_resumes(self) -> list[dict]:
        """The resume history of an earlier record of this run (continued or interrupted)."""
        return list((self.previous or {}).get("resumes") or [])

    @property
    def keeps_previous(self) -> bool:
        """A completed run's record is never replaced by a failure (of a re-run or a
        continuation)."""
        return (self.previous or {}).get("status") == "completed"

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self.trained = True
        self.folder.job_log(keep=True)  # the job now changes the folder: its log goes in too
        # Continuing a completed run: its record names a best checkpoint, which stays until a
        # new record replaces it (a failed continuation leaves the old record true).
        named = (self.previous or {}).get("best_checkpoint") if self.keeps_previous else None
        if named and (checkpoint_io := _atomic_io(trainer)) is not None:
            checkpoint_io.keep([self.path / named])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.config
        # Saved part-way through an epoch's validation (a signal): the resume validates it anew.
        checkpoint[VALIDATION_CUT] = bool(trainer.validating and not trainer.sanity_checking)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """A checkpoint cut mid-validation validates that epoch again. Checkpoint callbacks store
        absolute paths; a run folder that moved or was copied reads them in its new place
        (Lightning would otherwise keep only the old best path and forget its score). Runs before
        the callbacks and loops load their state."""
        if checkpoint.get(VALIDATION_CUT):
            rerun_cut_validation(checkpoint)
        old = ((trained_config(checkpoint) or {}).get("paths") or {}).get("output_dir")
        if old and Path(old) != self.path:
            states = checkpoint.get("callbacks", {})
            for keeper in trainer.checkpoint_callbacks:
                if keeper.state_key in states:
                    states[keeper.state_key] = _moved(states[keeper.state_key], old, str(self.path))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.interrupted_by = signal_name(exception) or self.interrupted_by

    # ------------------------------------------------------------------ the three endings
    def completed(self, trainer: L.Trainer, results: dict, files: dict) -> dict:
        """Write the completed record: ``results`` are :func:`metrics_record`'s keyword
        arguments, ``files`` the predictions' columns under ``predictions``."""
        record = self._record("completed", predictions=PREDICTIONS, **results)
        if trainer.is_global_zero:  # under DDP every process gets here; one file is enough
            self._write({PREDICTIONS: prediction_table(files["predictions"]),
                         METRICS: json.dumps(record, indent=2)})  # fmt: skip
            self._done()
            if (checkpoint_io := _atomic_io(trainer)) is not None:
                checkpoint_io.release()  # the old record's checkpoint, now replaced
            artefacts = [self.path / METRICS, *sorted(self.path.glob("*.png"))]
            try:
                publish_artifacts(trainer.loggers, self.path, artefacts)
            except Exception as err:  # the run completed and says so; only the copies failed
                log.error("the loggers could not store the record and pictures (they are in %s): "
                          "%s", self.path, first_line(err))  # fmt: skip
        return record

    def interrupted(self, trainer: L.Trainer, name: str) -> None:
        if trainer.is_global_zero:
            record = self._record(
                "interrupted",
                error=f"interrupted by {name}",
                step=trainer.global_step,
                epochs=epochs_trained(trainer),
            )
            self._write({METRICS: json.dumps(record, indent=2)})
            self._done()

    def failed(self, message: str) -> None:
        """Record a failure, unless the folder holds a completed run, or holds a record and this
        job failed before it trained: that record and its Hydra files then stay as they were."""
        if self.keeps_previous or (self.previous is not None and not self.trained):
            self.folder.restore(RECORDED)
            self._release()
            return
        record = self._record("failed", error=message)
        self._release()  # the reserve makes room for the failed record on a full disk
        try:
            atomic_write(self.path / METRICS, json.dumps(record, indent=2))
        except OSError as err:
            log.error("could not record the failure in %s: %s", self.path, first_line(err))
            return
        self.folder.keep(RECORDED)

    # ------------------------------------------------------------------ writing
    def _record(self, status: str, **fields) -> dict:
        """The record of this run with ``status``: what the command asked for and ``fields``."""
        return metrics_record(status=status, **self.base, **fields)

    def _write(self, files: dict[str, bytes | str]) -> None:
        """Write every file beside its old version first, then swap them all in: a failed write
        leaves the old record and predictions as they were, together."""
        staged = {name: self.path / f".{name}.new" for name in files}
        try:
            for name, data in files.items():
                atomic_write(staged[name], data)
        except OSError as err:
            for path in staged.values():
                path.unlink(missing_ok=True)
            raise RecordWriteError(
                f"could not write {self.path / name}: {first_line(err)}"
            ) from None
        for name, path in staged.items():
            path.replace(self.path / name)

    def _done(self) -> None:
        self.folder.keep(RECORDED)
        self._release()

    def _release(self) -> None:
        with contextlib.suppress(OSError):  # no reserve, or no folder to hold one
            (self.path / RESERVE).unlink()
