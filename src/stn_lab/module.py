"""ClassifierModule: the one LightningModule for STN and CNN (loop, loss, metrics, optimiser).

It follows the shape of Lightning's ``backbone_image_classifier`` example: the network is a plain
``nn.Module`` described by a Hydra config, and this class only trains it. One Lightning batch is
one optimiser step (automatic optimisation), so every Trainer flag (gradient clipping,
accumulation, ``limit_*_batches``, ``val_check_interval``, ``max_steps``) means what Lightning's
documentation says.

The constructor takes configs (plain mappings with ``_target_``), not built objects, and saves
them as hyperparameters: ``ClassifierModule.load_from_checkpoint(path)`` rebuilds the network
from any folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from stn_lab.errors import ConfigError, UserError
from stn_lab.lightning_private import HOOK_NAME, should_update_logs
from stn_lab.models.stn import step_health

FAULT_ACTIONS = ("stop", "skip", "off")
DEGENERATE = ("collapsed to under a pixel", "left the image")  # step_health's two fractions
SCHEDULER_INTERVALS = ("epoch", "step")
TRAIN_FOLD_STEPS = 64  # steps whose outputs are held before they are added to the train sums


class TrainingFault(UserError, RuntimeError):
    """Training went wrong in a way that more steps will not fix (NaN loss, runaway STN)."""


def _plain(config: Mapping | DictConfig | None) -> dict | None:
    """A config as plain containers (what a checkpoint can store and reload)."""
    if config is None or isinstance(config, dict):
        return config
    return OmegaConf.to_container(OmegaConf.create(config), resolve=True)


def _eval_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "loss": MeanMetric(nan_strategy="disable"),  # a NaN loss shows as NaN
            "acc_class": MulticlassAccuracy(num_classes, average="none"),
        }
    )


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of a network with accuracy, loss and per-class accuracy.

    Args:
        network: the network's config (``_target_`` plus its arguments, including the data's
            ``in_channels``, ``image_size`` and ``num_classes``).
        optimizer: the optimiser's config, a partial (``_partial_: true``) taking the parameter
            groups.
        num_classes: number of classes (for the metrics).
        scheduler: ``None``, or Lightning's lr-scheduler dict: ``scheduler`` (a partial taking the
            optimiser), ``interval`` (``epoch`` or ``step``), optional ``frequency`` and
            ``total_steps_arg``: the name of the scheduler argument that receives the run's
            optimiser steps (``trainer.estimated_stepping_batches``) when left unset.
        on_fault: what a non-finite loss or a degenerate STN does: ``stop`` (raise
            :class:`TrainingFault`; the last checkpoint is the last good model), ``skip`` (no
            optimiser step for that batch; counted) or ``off``.
        degenerate_fraction: the share of a batch's grids that must collapse or leave the image
            for the batch to count as degenerate.
        channels_last: convolution weights in NHWC, so oneDNN runs convolutions in that layout.
        inputs: the input transform the data was trained with, ``{"mean": [...], "std":
            [...]}`` per channel; stored in the checkpoint so that :meth:`predict` takes raw
            images.

    Logged keys: ``train/loss`` (on the steps the loggers write, every ``log_every_n_steps``),
    ``train/loss_epoch`` and ``train/acc`` per epoch, and ``<stage>/loss``, ``<stage>/acc``,
    ``<stage>/acc_class_<k>`` for ``val`` and ``test``. After testing, :attr:`test_results`
    holds what ``metrics.json`` records.
    """

    #: The keys this module logs during fit (what a callback may monitor); ``<k>`` a class.
    LOGGED = (
        "train/loss", "train/loss_epoch", "train/acc", "train/skipped_batches", "val/loss",
        "val/acc", "val/acc_class_<k>",
    )  # fmt: skip

    def __init__(
        self,
        network: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        num_classes: int,
        scheduler: Mapping[str, Any] | None = None,
        on_fault: str = "stop",
        degenerate_fraction: float = 0.5,
        channels_last: bool = False,
        inputs: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if on_fault not in FAULT_ACTIONS:
            raise ConfigError(f"faults.on_fault must be one of {FAULT_ACTIONS}, got {on_fault!r}")
        scheduler = _plain(scheduler)
        if scheduler is not None and scheduler.get("interval", "epoch") not in SCHEDULER_INTERVALS:
            raise ConfigError(
                f"scheduler.interval must be epoch or step, got {scheduler.get('interval')!r}"
            )
        self.save_hyperparameters(
            {
                "network": _plain(network),
                "optimizer": _plain(optimizer),
                "num_classes": num_classes,
                "scheduler": scheduler,
                "on_fault": on_fault,
                "degenerate_fraction": degenerate_fraction,
                "channels_last": channels_last,
                "inputs": _plain(inputs),
            },
            logger=False,  # the run's whole config is logged by train.py
        )
        self.network: nn.Module = instantiate(self.hparams.network)
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        self.skipped_batches = 0
        # Training accuracy and mean loss are running sums (loss x images, correct, images),
        # reduced across DDP processes at the epoch's end: the documented cheaper equivalent of
        # torchmetrics objects, whose per-step update machinery is a measurable share of a small
        # CPU step (bench/results.md). Same keys: train/acc, train/loss_epoch. Each step only
        # holds its detached loss, logits and labels; every TRAIN_FOLD_STEPS steps (and at the
        # epoch's end) they are added to the sums in a few batched ops instead of ~10 per step.
        self._train_sums = torch.zeros(3)
        self._train_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        # Validation and test: per-class accuracy too (synced across DDP processes).
        self.stage_metrics = nn.ModuleDict(
            {f"{stage}_metrics": _eval_metrics(num_classes) for stage in ("val", "test")}
        )
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.test_results: dict | None = None
        #: Per test image, in test-index order (after testing): ``pred``, ``label``, ``confidence``.
        self.test_predictions: dict[str, torch.Tensor] | None = None
        self._test_outputs: list[tuple[torch.Tensor, ...]] = []

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning records the hook it is in (HOOK_NAME) before and after every hook, about 40
        # times a training step. nn.Module.__setattr__ first searches the parameters, buffers
        # and submodules for the name; a string needs none of that (bench/results.md).
        if name == HOOK_NAME:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The predicted class of each raw image: ``uint8`` in 0-255 or float in [0, 1], shaped
        ``[N, C, H, W]``, ``[N, H, W]`` or one ``[H, W]`` image, of the size the model trained on.
        They are normalised as in training (the checkpoint holds the transform) and scored in
        eval mode; the module's own train/eval mode is restored afterwards."""
        inputs = self.hparams.get("inputs")
        if inputs is None:
            raise UserError("this checkpoint holds no input transform: normalise and call it")
        x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
        x = x.reshape(-1, 1, *x.shape[-2:]) if x.dim() < 4 else x
        mean, std = (torch.tensor(inputs[k], device=x.device).view(1, -1, 1, 1)
                     for k in ("mean", "std"))  # fmt: skip
        training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            return self((x.to(device) - mean.to(device)) / std.to(device)).argmax(dim=1)
        finally:
            self.train(training)

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        step_loss = loss.detach()  # one detached view for the check, the sums and the log
        penalty = self.network.penalty()
        total = loss if penalty is None else loss + penalty
        if self.hparams.on_fault != "off":
            fault = self._fault(step_loss if penalty is None else total.detach())
            if fault is not None and self.hparams.on_fault == "stop":
                raise TrainingFault(
                    f"{fault} at step {self.global_step} (epoch {self.current_epoch + 1})"
                )
            if fault is not None:
                self.skipped_batches += 1
                self.log("train/skipped_batches", float(self.skipped_batches))
                return None  # Lightning takes no optimiser step for this batch
        # Only steps that train are counted, so a skipped NaN step leaves no trace.
        self._train_outputs.append((step_loss, logits.detach(), y))
        if len(self._train_outputs) == TRAIN_FOLD_STEPS:
            self._fold_train_outputs()
        # Logged only on the steps the loggers write: each self.log call walks Lightning's result
        # collection, a measurable share of a small step (docs/performance.md).
        if should_update_logs(self.trainer):
            self.log("train/loss", step_loss, prog_bar=True)
        return total

    def _fault(self, loss: torch.Tensor) -> str | None:
        """What went wrong in this step, or None: a non-finite loss, or too many degenerate STN
        grids (one read-back for both)."""
        value, fractions = step_health(loss, self.network.health_points())
        if not math.isfinite(value):
            return f"non-finite loss ({value})"
        # Without an STN there are no fractions (strict=False).
        for what, fraction in zip(DEGENERATE, fractions, strict=False):
            if fraction > self.hparams.degenerate_fraction:
                return f"degenerate STN: the grid {what} for {fraction:.0%} of the batch"
        return None

    def _fold_train_outputs(self) -> None:
        """Add the held steps' loss x images, correct predictions and images to the sums."""
        losses, logits, labels = zip(*self._train_outputs, strict=True)
        self._train_outputs = []
        counts = torch.tensor([len(y) for y in labels], device=losses[0].device)
        labels = torch.cat(labels)
        correct = (torch.cat(logits).argmax(dim=1) == labels).sum()
        step_sums = torch.stack(
            [(torch.stack(losses).float() * counts).sum(), correct.float(), counts.sum().float()]
        )
        self._train_sums = self._train_sums.to(step_sums.device) + step_sums

    def on_train_epoch_end(self):
        if self._train_outputs:
            self._fold_train_outputs()
        # Every process takes part in the reduce, even one whose steps were all skipped.
        loss_sum, correct, count = self.trainer.strategy.reduce(self._train_sums, reduce_op="sum")
        self._train_sums = torch.zeros(3)
        if count > 0:
            self.log_dict(
                {"train/acc": correct / count, "train/loss_epoch": loss_sum / count},
                prog_bar=True,
                sync_dist=True,  # equal on every process already; silences Lightning's warning
            )

    # ------------------------------------------------------------------ evaluation
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
            confidence = logits.detach().float().softmax(dim=1).amax(dim=1)
            self._test_outputs.append((preds, y, confidence))

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
        self.test_predictions = self._gather_predictions()

    def _gather_predictions(self) -> dict[str, torch.Tensor]:
        """This process's test outputs, gathered from every process into test-index order.

        The DataModule gives process ``r`` of ``w`` the test images ``r, r + w, r + 2w, ...`` in
        order, so each process's k-th output is image ``r + k * w``.
        """
        columns = [torch.cat(c).cpu() for c in zip(*self._test_outputs, strict=True)]
        self._test_outputs = []
        world = self.trainer.world_size if self._trainer is not None else 1
        shards = [columns]
        if world > 1:
            shards = [None] * world
            torch.distributed.all_gather_object(shards, columns)
        index = torch.cat(
            [torch.arange(r, r + world * len(s[0]), world) for r, s in enumerate(shards)]
        )
        order = index.argsort()
        pred, label, confidence = (torch.cat([s[i] for s in shards])[order] for i in range(3))
        return {"index": index[order], "pred": pred, "label": label, "confidence": confidence}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        factory = instantiate(self.hparams.optimizer)
        # Each group's lr is the optimiser's lr times the group's multiplier (STN lr_mult).
        probe = _user_values("optimizer", factory, [torch.zeros(1, requires_grad=True)])
        groups = [
            {"params": g["params"], "lr": probe.defaults["lr"] * g.get("lr_mult", 1.0)}
            for g in self.network.param_groups()
        ]
        optimizer = factory(groups)
        if self.hparams.scheduler is None:
            return optimizer
        config = dict(self.hparams.scheduler)
        length_arg = config.pop("total_steps_arg", None)
        make = instantiate(config.pop("scheduler"))
        if length_arg and make.keywords.get(length_arg) is None:
            # The run's length in optimiser steps, under an epoch or a step budget alike.
            make.keywords[length_arg] = int(self.trainer.estimated_stepping_batches)
        scheduler = _user_values("scheduler", make, optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **config}}


def _user_values(group: str, make, *args):
    """``make(*args)``; torch's own checks of the group's values (``Adam(lr=-1)``) become a
    :class:`ConfigError` naming the group, shown as one line."""
    try:
        return make(*args)
    except ValueError as err:
        raise ConfigError(f"{group}: {err}") from None
