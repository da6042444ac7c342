"""Checkpoints a run can trust: atomic writes, ``last.ckpt`` that is always the newest state, and a
clean stop on SIGTERM (how SLURM pre-empts) or Ctrl-C.

- :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin) writes every checkpoint to a
  temporary file in the same folder and renames it, so a full disk or a kill mid-write never
  leaves a truncated file under a valid-looking name. A failed write is a
  :class:`CheckpointWriteError` (one line for the user).
- :class:`LastCheckpoint` refreshes ``last.ckpt`` every N optimiser steps, after every epoch,
  after the last step, and when the run is interrupted by a signal.
- :func:`check_readable` turns a truncated or foreign file into one line naming it.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from stn_lab.atomic import atomic_write
from stn_lab.errors import UserError, whole_number

log = logging.getLogger("stn_lab")
LAST = "last.ckpt"


class CheckpointWriteError(UserError, RuntimeError):
    """A checkpoint could not be written (full disk, no permission); nothing partial is left."""


class CheckpointReadError(UserError, ValueError):
    """A checkpoint to resume from is missing, truncated or not a checkpoint."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into memory, then one atomic write (temporary file, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            atomic_write(path, buffer.getvalue())
        except OSError as err:
            raise CheckpointWriteError(f"could not write checkpoint {path}: {err}") from None


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


class LastCheckpoint(L.Callback):
    """Keeps ``<dirpath>/last.ckpt`` as the run's newest state.

    It is written every ``every_n_train_steps`` optimiser steps (0 or ``None``: never between
    epochs), at the end of every training epoch (after its validation), after the last step, and
    when SIGTERM or SIGINT stops the run; :attr:`interrupted_by` then names the signal.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = 500):
        every = 0 if every_n_train_steps is None else every_n_train_steps
        every = whole_number("checkpoint_every_n_steps", every, 0)
        self.path = Path(dirpath) / LAST
        self.every_n_train_steps = every
        self.interrupted_by: str | None = None
        #: The run's resolved config, stored in every checkpoint (``state_dict``) so that a
        #: resume can check it trains on with the same settings.
        self.run_config: dict | None = None

    def state_dict(self) -> dict:
        return {"run_config": self.run_config}

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
        if isinstance(exception, SIGTERMException):
            self.interrupted_by = "SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            self.interrupted_by = "SIGINT"
        else:
            return
        if trainer.state.fn == TrainerFn.FITTING:  # mid-fit (training or validating): keep it
            self._save(trainer)
            step = trainer.global_step
            log.warning("%s: saved %s at step %d", self.interrupted_by, self.path, step)
