"""ClassifierModule: the one LightningModule for STN and CNN (loop, loss, metrics, optimiser).

It follows the shape of Lightning's ``backbone_image_classifier`` example: the network is built
elsewhere and handed in; this class only trains it. The optimiser and scheduler arrive as
partials from Hydra (``_partial_: true``), so swapping Adam for SGD is a config override.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from stn_lab.models.stn import step_health

FAULT_ACTIONS = ("stop", "skip", "off")
DEGENERATE = ("collapsed to under a pixel", "left the image")  # step_health's two columns


class TrainingFault(RuntimeError):
    """Training went wrong in a way that more steps will not fix (NaN loss, runaway STN)."""


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of ``network`` with accuracy, loss and per-class accuracy.

    Logged keys: ``<stage>/loss``, ``<stage>/acc`` and ``<stage>/acc_class_<k>`` for ``val`` and
    ``test``. After testing, :attr:`test_results` holds the numbers ``metrics.json`` records.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_classes: int,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        on_fault: str = "stop",
        degenerate_fraction: float = 0.5,
        step_batch_size: int | None = None,
    ):
        super().__init__()
        self.network = network
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"scheduler_interval must be epoch or step, got {scheduler_interval!r}"
            )
        self.scheduler_interval = scheduler_interval
        if on_fault not in FAULT_ACTIONS:
            raise ValueError(f"on_fault must be one of {FAULT_ACTIONS}, got {on_fault!r}")
        self.on_fault = on_fault
        self.degenerate_fraction = degenerate_fraction
        # A training batch may hold several optimiser steps' worth of images (the DataModule's
        # steps_per_batch): one step per slice of this size. None: one step per batch.
        self.step_batch_size = step_batch_size
        self.skipped_batches = 0
        self.num_classes = num_classes
        # Validation and test use torchmetrics (per-class accuracy, DDP sync), under keys
        # "<stage>_metrics".
        self.stage_metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": MetricCollection(
                    {
                        "acc": MulticlassAccuracy(num_classes, average="micro"),
                        "loss": MeanMetric(nan_strategy="disable"),  # a NaN loss shows as NaN
                        "acc_class": MulticlassAccuracy(num_classes, average="none"),
                    }
                )
                for stage in ("val", "test")
            }
        )
        # Training keeps running sums instead (a few tensor ops per step; torchmetrics' update
        # machinery cost ~1 ms per step here, 15% of a 28 px CNN step): loss * n, correct, n.
        self._train_tally: list[torch.Tensor | int] | None = None
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.test_results: dict | None = None
        # The optimiser step is written out in training_step (manual optimisation): Lightning's
        # automatic closure machinery cost ~0.4 ms per step here, 5% of a 28 px CNN step.
        # Trainer-level gradient clipping and accumulation are therefore not available.
        self.automatic_optimization = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _eval_step(self, batch, stage: str) -> None:
        """Validation or test: loss, accuracy, per-class accuracy (and the confusion matrix)."""
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metrics = self.stage_metrics[f"{stage}_metrics"]
        preds = logits.argmax(dim=1)
        metrics["acc"].update(preds, y)
        metrics["acc_class"].update(preds, y)
        metrics["loss"].update(loss.detach(), weight=len(y))
        if stage == "test":
            self.confusion.update(preds, y)

    def _tally(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        correct = (logits.argmax(dim=1) == y).sum()
        if self._train_tally is None:
            self._train_tally = [loss.detach() * len(y), correct, len(y)]
            return
        self._train_tally[0] += loss.detach() * len(y)
        self._train_tally[1] += correct
        self._train_tally[2] += len(y)

    def training_step(self, batch, batch_idx):
        x, y = batch
        size = self.step_batch_size or len(y)
        # Each slice is one optimiser step, as if it were its own batch. A step budget
        # (trainer.max_steps) ends mid-batch when it runs out there.
        budget = self.trainer.max_steps
        first_step = self.global_step
        optimizer = self.optimizers()
        checks = []  # (loss, STN health points) of each step, for on_fault=stop
        for x_step, y_step in zip(x.split(size), y.split(size), strict=True):
            if 0 <= budget <= self.global_step:
                break
            logits = self(x_step)
            loss = F.cross_entropy(logits, y_step)
            penalty = self.network.penalty()
            total = loss if penalty is None else loss + penalty
            if self.on_fault == "skip":
                fault = self._first_fault([(total.detach(), self.network.health_points())])
                if fault is not None:
                    self.skipped_batches += 1
                    self.log("train/skipped_batches", float(self.skipped_batches))
                    continue  # no backward, no optimiser step for these images
            elif self.on_fault == "stop":
                checks.append((total.detach(), self.network.health_points()))
            # Only steps that train are counted, so a skipped NaN step leaves no trace.
            self._tally(logits, y_step, loss)
            optimizer.zero_grad()
            self.manual_backward(total)
            optimizer.step()
            if self.scheduler_interval == "step":
                self._step_scheduler()
        fault = self._first_fault(checks) if checks else None
        if fault is not None:
            # Read back once per batch, not per step. Raising keeps the last good checkpoint:
            # checkpoints are only written after a batch, so the steps taken since are dropped.
            index, what = fault
            raise TrainingFault(
                f"{what} at step {first_step + index} (epoch {self.current_epoch + 1})"
            )

    def _step_scheduler(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def _first_fault(self, checks: list) -> tuple[int, str] | None:
        """The first of ``checks`` (``(loss, health points)`` per step) that went wrong, as
        ``(index, what)``, or None: a non-finite loss, or too many degenerate STN grids."""
        losses = torch.stack([loss.float() for loss, _ in checks]).unsqueeze(1)
        health = step_health([points for _, points in checks])
        table = losses if health is None else torch.cat([losses, health], dim=1)
        for index, (loss, *fractions) in enumerate(table.tolist()):  # one read-back
            if not math.isfinite(loss):
                return index, f"non-finite loss ({loss})"
            # Without an STN there are no fractions (strict=False).
            for what, fraction in zip(DEGENERATE, fractions, strict=False):
                if fraction > self.degenerate_fraction:
                    return index, f"degenerate STN: the grid {what} for {fraction:.0%} of the batch"
        return None

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _log_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        metrics = self.stage_metrics[f"{stage}_metrics"]
        values = metrics.compute()
        metrics.reset()
        # torchmetrics already synced these across DDP processes; sync_dist only silences
        # Lightning's warning (the values are equal on every process).
        self.log_dict(
            {f"{stage}/acc": values["acc"], f"{stage}/loss": values["loss"]},
            prog_bar=stage != "test",
            sync_dist=True,
        )
        per_class = {f"{stage}/acc_class_{k}": v for k, v in enumerate(values["acc_class"])}
        self.log_dict(per_class, sync_dist=True)
        return values

    def on_train_epoch_end(self):
        if self.scheduler_interval == "epoch":
            self._step_scheduler()
        # Every process takes part in the reduce, even one whose batches were all skipped.
        loss_sum, correct, count = self._train_tally or (0.0, 0, 0)
        self._train_tally = None
        totals = torch.tensor([float(loss_sum), float(correct), float(count)], device=self.device)
        # Sum over DDP processes (a no-op on one), then the same value is logged everywhere.
        loss_sum, correct, count = self.trainer.strategy.reduce(totals, reduce_op="sum")
        if count > 0:
            self.log_dict(
                {"train/acc": correct / count, "train/loss": loss_sum / count},
                prog_bar=True,
                sync_dist=True,
            )

    def on_validation_epoch_end(self):
        self._log_epoch("val")

    def on_test_epoch_end(self):
        values = self._log_epoch("test")
        self.test_results = {
            "acc": float(values["acc"]),
            "loss": float(values["loss"]),
            "acc_per_class": [float(v) for v in values["acc_class"]],
            "confusion_matrix": self.confusion.compute().long().tolist(),
        }
        self.confusion.reset()

    def configure_optimizers(self):
        # Each group's lr is the optimiser's lr times the group's multiplier (STN lr_mult).
        probe = self.optimizer_factory([torch.zeros(1, requires_grad=True)])
        base_lr = probe.defaults["lr"]
        groups = [
            {"params": g["params"], "lr": base_lr * g.get("lr_mult", 1.0)}
            for g in self.network.param_groups()
        ]
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }
