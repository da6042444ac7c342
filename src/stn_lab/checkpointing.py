"""Checkpoints a run can trust: atomic writes, ``last.ckpt`` that is always the newest state, and a
clean stop on SIGTERM (how SLURM pre-empts) or Ctrl-C.

- :class:`AtomicCheckpointIO` is Lightning's atomic ``TorchCheckpointIO`` whose failed write (a
  full disk, no permission) is a :class:`CheckpointWriteError` (one line for the user).
- :class:`LastCheckpoint` refreshes ``last.ckpt`` every N optimiser steps, after every epoch,
  after the last step, and when the run is interrupted by a signal.
- :class:`CtrlC` makes Ctrl-C during ``fit`` stop where SIGTERM does, at a step's end.
- :func:`check_readable` turns a truncated or foreign file into one line naming it.
"""

from __future__ import annotations

import logging
import signal
import threading
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from stn_lab.errors import UserError, first_line, whole_number

log = logging.getLogger("stn_lab")
LAST = "last.ckpt"


class CheckpointWriteError(UserError, RuntimeError):
    """A checkpoint could not be written (full disk, no permission); nothing partial is left."""


class CheckpointReadError(UserError, ValueError):
    """A checkpoint to resume from is missing, truncated or not a checkpoint."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's own writer (atomic already: in memory, then one move into place). What it
    lacks: a one-line error when the write fails, instead of a traceback; and :meth:`keep`, which
    holds back the removal of checkpoints a record still names until :meth:`release`."""

    def __init__(self) -> None:
        super().__init__()
        self._kept: set[Path] = set()
        self._held: list[Path] = []

    def keep(self, paths) -> None:
        """Do not remove these files until :meth:`release` (a new best replacing them)."""
        self._kept = {Path(p).resolve() for p in paths}

    def release(self) -> None:
        """Remove the kept files whose removal was held back."""
        for path in self._held:
            super().remove_checkpoint(path)
        self._held, self._kept = [], set()

    def remove_checkpoint(self, path) -> None:
        if Path(path).resolve() in self._kept:
            self._held.append(Path(path))
        else:
            super().remove_checkpoint(path)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        try:
            super().save_checkpoint(checkpoint, path, storage_options)
        except OSError as err:
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {first_line(err)}"
            ) from None


def check_readable(path: str | Path) -> Path:
    """``path`` if it is a complete checkpoint file, else :class:`CheckpointReadError`.

    ``torch.save`` writes a zip archive whose directory sits at the end of the file, so a
    truncated file fails this cheap check without loading anything.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise CheckpointReadError(
            f"checkpoint {path} is truncated or not a checkpoint: resume from another one "
            "(the checkpoints/ folder holds the best model too) or start afresh"
        )
    return path


def signal_name(exception: BaseException) -> str | None:
    """``SIGTERM`` or ``SIGINT`` when ``exception`` is how Lightning stops on that signal."""
    if isinstance(exception, SIGTERMException):
        return "SIGTERM"
    return "SIGINT" if isinstance(exception, KeyboardInterrupt) else None


class LastCheckpoint(L.Callback):
    """Keeps ``<dirpath>/last.ckpt`` as the run's newest state.

    It is written every ``every_n_train_steps`` optimiser steps (0 or ``None``: never between
    epochs), at the end of every training epoch (after its validation), after the last step, and
    when SIGTERM or SIGINT stops the run. What Lightning's ``ModelCheckpoint(save_last=True,
    save_on_exception=True)`` lacks: it saves on *every* exception, so a training fault (a NaN
    loss) would overwrite the last good state; this saves on the two signals only.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = 500):
        every = 0 if every_n_train_steps is None else every_n_train_steps
        every = whole_number("checkpoint_every_n_steps", every, 0)
        self.path = Path(dirpath) / LAST
        self.every_n_train_steps = every

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        # The whole state (optimiser, loops, callbacks): last.ckpt is what a resume reads. Saying
        # so also keeps Lightning from logging its default on every save.
        trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        every = self.every_n_train_steps
        if every and trainer.global_step % every == 0 and trainer.global_step > 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._save(trainer)

    def on_train_end(self, trainer, pl_module):
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception):
        mid_fit = trainer.state.fn == TrainerFn.FITTING  # while testing, last.ckpt is already final
        if signal_name(exception) is not None and mid_fit:
            self._save(trainer)
            log.warning("interrupted: saved %s at step %d", self.path, trainer.global_step)


class CtrlC:
    """While ``trainer.fit`` runs, a first Ctrl-C stops training where SIGTERM does: Lightning
    checks after each training step, between validation batches and after each epoch, and
    ``last.ckpt`` saved there resumes as if the run had never stopped. Python's own Ctrl-C raises
    wherever the signal lands; between an epoch's last step and its validation, Lightning then
    resumes past that epoch, never validating it or ending it (no epoch line, no epoch-end
    hooks). A second Ctrl-C stops at once. ``pressed`` says whether this was the way out."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous = None

    def __enter__(self) -> CtrlC:
        # Only the main thread may set handlers; an ignored SIGINT (nohup, a background job)
        # stays ignored.
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._press)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _press(self, signum, frame) -> None:
        stop = signal.getsignal(signal.SIGTERM)  # Lightning's while it fits: note, stop at a check
        if self.pressed or not callable(stop):  # pressed again, or before Lightning set it
            raise KeyboardInterrupt
        self.pressed = True
        log.warning("Ctrl-C: stopping after this step (Ctrl-C again stops at once)")
        notes = logging.getLogger(type(stop).__module__)  # its "Received SIGTERM" would mislead
        was = notes.disabled
        notes.disabled = True
        try:
            stop(signal.SIGTERM, frame)
        finally:
            notes.disabled = was
