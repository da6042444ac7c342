"""Lightning's cost: stn_lab's Lightning path (ClassifierModule and a Trainer from
:func:`stn_lab.build.build_trainer`, one optimiser step per batch, metrics and fault checks
included) against the plain loop on a fresh copy of the same model over the same batches, and
Lightning's floor (a training step that only computes the loss)."""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch.nn.functional as F

from stn_lab.benchmarks.workloads import BATCH, CHUNK, WARMUP, PlainLoop, setup
from stn_lab.build import build_trainer
from stn_lab.module import ClassifierModule

# Lightning/plain workloads: (model, raw px, distortion); RTS places 28 px on a 42 px canvas.
OVERHEAD_WORKLOADS = [("stn", 28, "none"), ("cnn", 28, "none"),
                      ("stn", 28, "RTS"), ("cnn", 28, "RTS")]  # fmt: skip
# The Lightning/plain targets: the default workload (STN, RTS) and the cheapest model (CNN).
OVERHEAD_TARGETS = {("stn", "RTS"): 0.95, ("cnn", "none"): 0.85}


# The override that puts LossOnlyModule in the run's place.
LOSS_ONLY = "module._target_=stn_lab.benchmarks.overhead.LossOnlyModule"


class _Interleave(L.Callback):
    """Runs the plain loop between Lightning's batches and times both.

    Every ``CHUNK`` Lightning batches the plain loop takes ``CHUNK`` steps. Lightning's time is
    that from the end of one plain turn to the start of the next: ``CHUNK`` whole turns of its
    loop (data, hooks, training_step, backward, optimiser, logging) and nothing of the plain
    loop. Alternating turn by turn makes the machine's slow phases hit both paths alike.
    """

    def __init__(self, plain: PlainLoop):
        self.plain = plain
        self.lightning_seconds: list[float] = []
        self.plain_seconds: list[float] = []
        self.last_end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step < WARMUP or trainer.global_step % CHUNK:
            return
        begin = time.perf_counter()
        if self.last_end is not None:
            self.lightning_seconds.append(begin - self.last_end)
        self.plain_seconds.append(sum(self.plain() for _ in range(CHUNK)))
        self.last_end = time.perf_counter()


class LossOnlyModule(ClassifierModule):
    """Lightning's own loop at its cheapest: a training step that computes the loss and
    nothing else (no training metrics, fault check or logging). Timed against the same plain
    loop, it is the floor that Lightning/plain can reach under automatic optimisation."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)


def lightning_vs_plain(model: str, size: int, distortion: str, turns: int) -> dict:
    """Lightning/plain throughput over ``turns`` alternating turns of ``CHUNK`` steps each (after
    ``WARMUP`` untimed Lightning steps and one untimed plain turn), for fresh copies of one
    model on the same images; with each path's median ms per step. For the workloads with a
    target, the same again with :class:`LossOnlyModule` gives Lightning's floor.

    The Trainer is the run's own (``cfg.trainer``, built by :func:`build_trainer`) with only the
    timing callback: no loggers, checkpoints, progress bar, summary or validation.
    """
    row = {"model": model, "distortion": distortion}
    floor = (model, distortion) in OVERHEAD_TARGETS
    n_train = BATCH * (WARMUP + CHUNK * (turns + 2))
    for path in ("lightning", "floor") if floor else ("lightning",):
        floor_module = [LOSS_ONLY] if path == "floor" else []
        cfg, datamodule, _, module = setup(model, size, n_train, distortion, floor_module)
        _, plain_data, plain_network, _ = setup(model, size, n_train, distortion)
        timer = _Interleave(PlainLoop(cfg, plain_data, plain_network))
        trainer = build_trainer(
            cfg, max_epochs=-1, max_steps=WARMUP + CHUNK * turns + 1, limit_val_batches=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0,
        )  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        # Turn k of Lightning follows plain turn k (plain turn 0 warmed the plain loop's caches).
        plain, light = timer.plain_seconds[1:], timer.lightning_seconds
        row["px"] = datamodule.image_size
        row[f"{path}_ratio"] = statistics.median(p / x for p, x in zip(plain, light, strict=True))
        if path == "lightning":
            row["plain_ms"] = 1000 * statistics.median(plain) / CHUNK
            row["lightning_ms"] = 1000 * statistics.median(light) / CHUNK
    return row
