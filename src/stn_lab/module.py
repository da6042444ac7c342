"""ClassifierModule: the one LightningModule for STN and CNN (loop, loss, metrics, optimiser).

It follows the shape of Lightning's ``backbone_image_classifier`` example: the network is built
elsewhere and handed in; this class only trains it. The optimiser and scheduler arrive as
partials from Hydra (``_partial_: true``), so swapping Adam for SGD is a config override.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

STAGES = ("train", "val", "test")
FAULT_ACTIONS = ("stop", "skip", "off")


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
        self.skipped_batches = 0
        self.num_classes = num_classes
        # Keys get a suffix: a ModuleDict key "train" would clash with nn.Module.train.
        self.stage_metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": MetricCollection(
                    {
                        # Labels are range-checked when the data is loaded and a non-finite loss
                        # is caught before the update, so the per-step input checks (each a
                        # host sync) are off.
                        "acc": MulticlassAccuracy(
                            num_classes, average="micro", validate_args=False
                        ),
                        "loss": MeanMetric(nan_strategy="disable"),
                        # Per-class accuracy only where it is reported (keeps the train step lean).
                        **(
                            {"acc_class": MulticlassAccuracy(num_classes, average="none")}
                            if stage != "train"
                            else {}
                        ),
                    }
                )
                for stage in STAGES
            }
        )
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.test_results: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _step(self, batch, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self._update(stage, logits, y, F.cross_entropy(logits, y))

    def _update(self, stage: str, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor):
        metrics = self.stage_metrics[f"{stage}_metrics"]
        preds = logits.argmax(dim=1)
        metrics["acc"].update(preds, y)
        if "acc_class" in metrics:
            metrics["acc_class"].update(preds, y)
        metrics["loss"].update(loss.detach(), weight=len(y))
        if stage == "test":
            self.confusion.update(preds, y)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        penalty = self.network.penalty()
        total = loss if penalty is None else loss + penalty
        fault = self._fault(total)
        if fault is None:
            # Metrics see only the batches that train, so a skipped NaN batch leaves no trace.
            self._update("train", logits, y, loss)
            return total
        if self.on_fault == "stop":
            # Raising keeps the last good checkpoint: nothing is saved after this step.
            raise TrainingFault(
                f"{fault} at step {self.global_step} (epoch {self.current_epoch + 1})"
            )
        self.skipped_batches += 1
        self.log("train/skipped_batches", float(self.skipped_batches))
        return None  # Lightning skips backward and the optimiser step for this batch

    def _fault(self, loss: torch.Tensor) -> str | None:
        """What is wrong with this step, or None. Checked only when ``on_fault`` is not off."""
        if self.on_fault == "off":
            return None
        if not torch.isfinite(loss):
            return f"non-finite loss ({float(loss.detach())})"
        for kind, fraction in self.network.health().items():
            if fraction > self.degenerate_fraction:
                what = "collapsed to under a pixel" if kind == "collapsed" else "left the image"
                return f"degenerate STN: the grid {what} for {float(fraction):.0%} of the batch"
        return None

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

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
        if stage != "train":
            per_class = {f"{stage}/acc_class_{k}": v for k, v in enumerate(values["acc_class"])}
            self.log_dict(per_class, sync_dist=True)
        return values

    def on_train_epoch_end(self):
        self._log_epoch("train")

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
