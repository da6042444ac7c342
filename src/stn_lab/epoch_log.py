"""EpochSummary: one readable log line per epoch, and the epoch timings ``metrics.json`` records.

The line for an epoch is written once its metrics exist. Lightning calls a callback's
``on_train_epoch_end`` before the LightningModule's (where the train metrics are computed), so
the line is written at the start of the next epoch, or at the end of training for the last one
(or when a signal stops training).

The timings travel in the checkpoint (``state_dict``): a run resumed after a kill keeps the
epochs before it, and the interrupted epoch counts the time before the kill (up to the last
checkpoint) plus the time after the resume.
"""

from __future__ import annotations

import logging
import math
import time

import lightning as L

log = logging.getLogger("stn_lab")


class EpochSummary(L.Callback):
    """Logs ``epoch 3/10 | train loss 0.412 | val loss 0.388 | val acc 87.21% | 12.3 s``.

    With a step budget (``trainer.max_steps``) the epoch reads ``epoch 3 (step 645/2000)``. An
    epoch that did not validate (``trainer.check_val_every_n_epoch=2``) shows ``n/a``.
    """

    def __init__(self):
        self.seconds_per_epoch: list[float] = []
        self._start: float | None = None
        self._resumed_elapsed = 0.0
        self._pending: tuple[int, float] | None = None
        self._validated_epoch: int | None = None  # the last epoch whose validation finished

    def state_dict(self) -> dict:
        elapsed = 0.0 if self._start is None else time.perf_counter() - self._start
        return {"seconds_per_epoch": list(self.seconds_per_epoch), "elapsed": elapsed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seconds_per_epoch = list(state_dict["seconds_per_epoch"])
        self._resumed_elapsed = float(state_dict["elapsed"])

    def on_train_start(self, trainer, pl_module):
        # A resume mid-epoch gets no on_train_epoch_start: the clock starts here, with the time
        # the interrupted epoch had already run (0 after a clean epoch end).
        self._start = time.perf_counter() - self._resumed_elapsed
        self._resumed_elapsed = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._flush(trainer)
        if self._start is None:  # else the clock started in on_train_start
            self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer, pl_module):
        seconds = time.perf_counter() - self._start
        self.seconds_per_epoch.append(seconds)
        self._start = None
        self._pending = (trainer.current_epoch, seconds)

    def on_train_end(self, trainer, pl_module):
        self._flush(trainer)

    def on_exception(self, trainer, pl_module, exception):
        self._flush(trainer)  # a signal after an epoch's end: its line is still due

    def _flush(self, trainer) -> None:
        if self._pending is None:
            return
        epoch, seconds = self._pending
        self._pending = None
        metrics = trainer.callback_metrics
        validated = self._validated_epoch == epoch  # else val/* are an earlier epoch's numbers

        def value(key: str, scale: float = 1.0, digits: int = 4, unit: str = "") -> str:
            v = metrics.get(key) if validated or not key.startswith("val/") else None
            if v is None or math.isnan(float(v)):
                return "n/a"
            return f"{float(v) * scale:.{digits}f}{unit}"

        if trainer.max_steps and trainer.max_steps > 0:  # a step budget: show where in it we are
            where = f"epoch {epoch + 1} (step {trainer.global_step}/{trainer.max_steps})"
        else:
            where = f"epoch {epoch + 1}/{trainer.max_epochs}"
        log.info(
            "%s | train loss %s | val loss %s | val acc %s | %.1f s",
            where,
            value("train/loss_epoch"),
            value("val/loss"),
            value("val/acc", 100.0, 2, "%"),
            seconds,
        )
