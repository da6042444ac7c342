"""Lightning callback that writes a run's picture and table artefacts.

:class:`RunArtefacts` keeps STN snapshots of a fixed set of test images during training and, on
rank zero, writes into ``out_dir``:

* after ``fit``: ``stn.png`` and ``stn_epochs.png`` (STN models only) and ``curves.png``
  (from the ``CSVLogger``'s ``metrics.csv``; skipped when there is none, with a log line
  saying why unless it is a ``fast_dev_run``);
* after ``test``: ``confusion_matrix.png``, ``confusion_matrix.csv`` (from
  ``pl_module.test_results``) and ``gradcam.png`` (Grad-CAM of the classifier's last conv layer).

It relies on this interface: ``pl_module.network`` with ``has_stn``, ``transform_input(x)``,
``gradcam_layer()`` and ``classifier``; ``trainer.datamodule.fixed_batch(stage, n)`` and
``.class_names``; ``pl_module.test_results`` with a ``confusion_matrix`` after testing.

An STN counts as an *input* STN when ``transform_input(x)`` returns a new tensor. When it
returns ``x`` itself (no STN, or an STN that works on feature maps inside the classifier) there
are no STN pictures and Grad-CAM runs on the whole network over the raw input. Outputs of
parallel STNs stacked along channels are drawn one view per STN; Grad-CAM is drawn over the
first STN's view.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from stn_lab.viz.confusion import plot_confusion_matrix, write_confusion_csv
from stn_lab.viz.curves import plot_curves
from stn_lab.viz.gradcam import GradCAM, eval_mode, plot_gradcam
from stn_lab.viz.stn_grid import plot_stn_epochs, plot_stn_grid, split_views

__all__ = ["ARTEFACT_FILES", "RunArtefacts"]

log = logging.getLogger("stn_lab")

#: Every file :class:`RunArtefacts` may write, with what it shows.
ARTEFACT_FILES: dict[str, str] = {
    "stn.png": "fixed test images vs their final STN transform (STN only)",
    "stn_epochs.png": "the same images transformed at each snapshot epoch (STN only)",
    "curves.png": "train loss (epoch mean), val loss, train and val accuracy per epoch",
    "confusion_matrix.png": "row-normalised test confusion matrix",
    "confusion_matrix.csv": "raw test confusion counts",
    "gradcam.png": "Grad-CAM of the classifier's last conv on the fixed test images",
}


class RunArtefacts(L.Callback):
    """Write STN grids, training curves, confusion matrix and Grad-CAM pictures for a run.

    Args:
        out_dir: folder for the files (created when first needed).
        snapshot_epochs: 1-based epochs after which the STN transform of the fixed images is kept
            for ``stn_epochs.png``; the last trained epoch is always kept too.
        num_images: how many fixed test images to draw.
    """

    def __init__(
        self,
        out_dir: str | Path,
        snapshot_epochs: Iterable[int] = (1, 5, 10, 20, 40, 50),
        num_images: int = 16,
    ) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.snapshot_epochs = frozenset(int(e) for e in snapshot_epochs)
        self.num_images = int(num_images)
        #: 1-based epoch -> STN output (CPU) for the fixed images, filled during fit.
        self.snapshots: dict[int, Tensor] = {}
        self._last_snapshot: tuple[int, Tensor] | None = None
        self._fixed: tuple[Tensor, Tensor] | None = None
        self._test_pending = False
        self._feature_stn_logged = False

    # ------------------------------------------------------------------ helpers
    def _fixed_batch(self, trainer: L.Trainer) -> tuple[Tensor, Tensor] | None:
        """The datamodule's fixed test images and labels (cached, CPU), or None if unavailable."""
        if self._fixed is None:
            dm = getattr(trainer, "datamodule", None)
            if dm is None or not hasattr(dm, "fixed_batch"):
                log.warning("RunArtefacts: no datamodule with fixed_batch(); skipping pictures")
                return None
            x, y = dm.fixed_batch(stage="test", n=self.num_images)
            self._fixed = (x.detach().cpu(), torch.as_tensor(y).detach().cpu())
        return self._fixed

    def _write(self, kind: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Call ``fn(*args, path, **kwargs)`` for ``out_dir / kind`` and log the file written."""
        path = self.out_dir / kind
        try:
            fn(*args, path, **kwargs)
        except Exception as err:  # a picture that cannot be drawn must not fail a finished run
            log.warning("could not write %s: %s", path, f"{type(err).__name__}: {err}"[:200])
            return
        log.info("wrote %s", path)

    @staticmethod
    def _class_names(trainer: L.Trainer, n: int) -> list[str]:
        names = getattr(getattr(trainer, "datamodule", None), "class_names", None)
        return [str(c) for c in names] if names is not None else [str(i) for i in range(n)]

    # ------------------------------------------------------------------ fit
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.snapshots = {}
        self._last_snapshot = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        network = pl_module.network
        if not trainer.is_global_zero or not getattr(network, "has_stn", False):
            return
        fixed = self._fixed_batch(trainer)
        if fixed is None:
            return
        epoch = trainer.current_epoch + 1
        x = fixed[0].to(pl_module.device)
        with torch.no_grad(), eval_mode(network):
            out = network.transform_input(x)
        if out is x:  # the STN works on feature maps: nothing to draw in image space
            if not self._feature_stn_logged:
                log.info("RunArtefacts: transform_input() is the identity; no STN pictures")
                self._feature_stn_logged = True
            return
        out = out.detach().cpu()
        # Kept every epoch so the final one is drawn however training stops (early stopping).
        self._last_snapshot = (epoch, out)
        if epoch in self.snapshot_epochs or epoch == trainer.max_epochs:
            self.snapshots[epoch] = out

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self._last_snapshot is not None:
            epoch, out = self._last_snapshot
            self.snapshots.setdefault(epoch, out)
            inputs = self._fixed[0] if self._fixed is not None else None
            if inputs is not None:
                self._write("stn.png", plot_stn_grid, inputs, out)
                self._write("stn_epochs.png", plot_stn_epochs, inputs, self.snapshots)
        metrics_csv = self._metrics_csv(trainer)
        if metrics_csv is not None:
            self._write("curves.png", plot_curves, metrics_csv)
        elif not trainer.fast_dev_run:  # fast_dev_run has no loggers by design: nothing to say
            log.info(
                "curves.png not drawn: it reads the CSV logger's metrics.csv, and this run has "
                "no CSV logger (keep it beside another, e.g. logger=[csv,tensorboard])"
            )

    @staticmethod
    def _metrics_csv(trainer: L.Trainer) -> Path | None:
        """The CSV logger's ``metrics.csv`` after flushing it, or None if there is none."""
        for logger in trainer.loggers:
            log_dir = getattr(logger, "log_dir", None)
            if log_dir is None:
                continue
            try:
                logger.save()
            except Exception as err:  # a logger that cannot save must not break the run
                log.debug("RunArtefacts: %s.save() failed: %s", type(logger).__name__, err)
            path = Path(log_dir) / "metrics.csv"
            if path.is_file():
                return path
        return None

    # ------------------------------------------------------------------ test
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if getattr(pl_module, "test_results", None) is None:
            # Callbacks' on_test_end runs before the module's: retry in teardown.
            self._test_pending = True
            return
        self._write_test_artefacts(trainer, pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "test" and self._test_pending:
            self._test_pending = False
            if getattr(pl_module, "test_results", None) is None:
                log.warning("RunArtefacts: pl_module.test_results not set; no confusion matrix")
            self._write_test_artefacts(trainer, pl_module)

    def _write_test_artefacts(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        results = getattr(pl_module, "test_results", None)
        if results is not None and results.get("confusion_matrix") is not None:
            matrix = results["confusion_matrix"]
            names = self._class_names(trainer, len(matrix))
            self._write("confusion_matrix.png", plot_confusion_matrix, matrix, names)
            self._write("confusion_matrix.csv", write_confusion_csv, matrix, names)
        fixed = self._fixed_batch(trainer)
        if fixed is None:
            return
        try:
            self._write_gradcam(trainer, pl_module, *fixed)
        except Exception as err:  # as in _write: a finished run must not fail on a picture
            msg = f"{type(err).__name__}: {err}"[:200]
            log.warning("could not write %s: %s", self.out_dir / "gradcam.png", msg)

    def _write_gradcam(
        self, trainer: L.Trainer, pl_module: L.LightningModule, x: Tensor, y: Tensor
    ) -> None:
        network = pl_module.network
        x = x.to(pl_module.device)
        shown, model = x, network
        if getattr(network, "has_stn", False):
            with torch.no_grad(), eval_mode(network):
                transformed = network.transform_input(x)
            if transformed is not x:  # input STN: explain the classifier on what it sees
                shown, model = transformed, network.classifier
        with GradCAM(model, network.gradcam_layer()) as cam:
            heat = cam(shown)
            pred = cam.logits.argmax(dim=1).cpu()
        names = self._class_names(trainer, int(max(int(y.max()), int(pred.max())) + 1))

        def name(i: int) -> str:
            return names[i] if 0 <= i < len(names) else str(i)

        titles = [
            f"true: {name(int(t))}\npred: {name(int(p))}"
            for t, p in zip(y.tolist(), pred.tolist(), strict=True)
        ]
        background = split_views(shown.detach().cpu(), x.shape[1])[0]
        self._write("gradcam.png", plot_gradcam, background, heat.cpu(), titles=titles)
