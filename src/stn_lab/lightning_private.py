"""The one place stn_lab reads a private Lightning attribute, and why.

``tests/test_lightning_private.py`` checks it against Lightning's behaviour, so an upgrade that
changes it fails there, not silently in a run.
"""

from __future__ import annotations

import lightning as L

#: The attribute Lightning assigns the current hook's name to, before and after every hook
#: (about 40 times a training step). ``ClassifierModule`` stores it as a plain attribute, without
#: ``nn.Module``'s search of parameters, buffers and submodules.
HOOK_NAME = "_current_fx_name"


def should_update_logs(trainer: L.Trainer) -> bool:
    """Whether the loggers write this training step: every ``log_every_n_steps`` steps (skipped
    batches counted, never when it is 0) and the last step of a stopped run. Lightning has no
    public way to ask; logging only on these steps spares the module a ``self.log`` call on the
    others, which the loggers would drop anyway."""
    return trainer._logger_connector.should_update_logs


def epochs_trained(trainer: L.Trainer) -> int:
    """How many epochs have run all their training steps: what a resume from a checkpoint saved
    now counts as done. ``trainer.current_epoch`` lags it by one while the epoch-end hooks run
    (Lightning counts an epoch completed only after them), so a signal in that window would
    record one epoch fewer than the resume then trains on from."""
    return trainer.fit_loop.epoch_progress.current.processed


#: Where a checkpoint keeps the validation loop's batch counters (Lightning's loop state).
VAL_PROGRESS = ("loops", "fit_loop", "epoch_loop.val_loop.batch_progress")


def rerun_cut_validation(checkpoint: dict) -> None:
    """Make a checkpoint saved part-way through an epoch's validation (a SIGTERM between two
    validation batches) resume by validating that epoch from its first batch. Lightning reads
    such a checkpoint as saved after the epoch's last step, whose validation it then skips; its
    own "restarted mid-evaluation" state (a batch started, none since processed) runs it."""
    loops, fit, key = VAL_PROGRESS
    progress = checkpoint[loops][fit][key]
    before = progress["total"]["completed"] - progress["current"]["completed"]
    progress["total"].update(ready=before + 1, started=before + 1, processed=before,
                             completed=before)  # fmt: skip
    progress["current"].update(ready=1, started=1, processed=0, completed=0)
    progress["is_last_batch"] = False
