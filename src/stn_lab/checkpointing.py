"""Checkpoints a run can trust: atomic writes, ``last.ckpt`` that is always the newest state, and a
clean stop on SIGTERM (how SLURM pre-empts) or Ctrl-C.

- :class:`AtomicCheckpointIO` is Lightning's atomic ``TorchCheckpointIO`` whose failed write (a
  full disk, no permission) is a :class:`CheckpointWriteError` (one line for the user).
- :class:`LastCheckpoint` refreshes ``last.ckpt`` every N optimiser steps, after every epoch,
  after the last step, and when the run is interrupted by a signal.
- :func:`check_readable` turns a truncated or foreign file into one line naming it.
"""

from __future__ import annotations

import logging
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
        signal = signal_name(exception)
        if signal is not None and trainer.state.fn == TrainerFn.FITTING:  # mid-fit: keep it
            self._save(trainer)
            log.warning("%s: saved %s at step %d", signal, self.path, trainer.global_step)
