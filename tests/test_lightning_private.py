"""The private Lightning attribute stn_lab reads (:mod:`stn_lab.lightning_private`) still means
what stn_lab relies on: these fail when a Lightning upgrade changes it."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from stn_lab.lightning_private import (
    HOOK_NAME,
    VAL_PROGRESS,
    epochs_trained,
    rerun_cut_validation,
    should_update_logs,
)


class Recorder(L.LightningModule):
    """A one-layer model that notes, per training step, what the accessor said."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.said: list[tuple[int, bool]] = []
        self.hooks: list[str] = []

    def training_step(self, batch, batch_idx):
        self.said.append((self.global_step, should_update_logs(self.trainer)))
        self.hooks.append(getattr(self, HOOK_NAME))
        self.log("loss", 0.0)
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(log_every_n_steps: int, steps: int, tmp_path) -> list[tuple[int, bool]]:
    data = DataLoader(TensorDataset(torch.zeros(steps, 2)), batch_size=1)
    module = Recorder()
    trainer = L.Trainer(
        max_epochs=1, log_every_n_steps=log_every_n_steps, default_root_dir=tmp_path,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        logger=L.pytorch.loggers.CSVLogger(tmp_path), accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, data)
    return module.said


def test_it_is_true_exactly_on_every_nth_step(tmp_path):
    said = fit(3, 10, tmp_path)
    # Lightning's rule: the step about to be taken (global_step + 1) is a multiple of N.
    assert said == [(step, (step + 1) % 3 == 0) for step in range(10)]


def test_it_is_never_true_when_logging_every_zero_steps(tmp_path):
    assert not any(update for _, update in fit(0, 5, tmp_path))


def test_checkpoints_keep_the_validation_counters_where_rerun_cut_validation_edits_them(tmp_path):
    data = DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=1)
    module = Recorder()
    module.validation_step = lambda batch, batch_idx: None
    trainer = L.Trainer(
        max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, data, data)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    checkpoint = torch.load(tmp_path / "c.ckpt", weights_only=False)
    progress = checkpoint
    for key in VAL_PROGRESS:
        progress = progress[key]
    counters = {"ready", "started", "processed", "completed"}
    assert counters <= set(progress["total"]) and counters <= set(progress["current"])
    assert progress["total"]["completed"] == 4  # the epoch's four validation batches
    rerun_cut_validation(checkpoint)
    assert progress["current"] == {"ready": 1, "started": 1, "processed": 0, "completed": 0}


class SaveAtSecondEpochEnd(L.Callback):
    """Saves a checkpoint in the second epoch's end hooks, as a signal there would, and notes
    what the trainer and the accessor say then."""

    def __init__(self, path):
        self.path, self.said = path, None

    def on_train_epoch_end(self, trainer, pl_module):
        if self.said is None and trainer.fit_loop.epoch_progress.current.processed == 2:
            self.said = (trainer.current_epoch, epochs_trained(trainer))
            trainer.save_checkpoint(self.path)


def test_epochs_trained_counts_an_epoch_whose_end_hooks_run_as_the_resume_does(tmp_path):
    data = DataLoader(TensorDataset(torch.zeros(3, 2)), batch_size=1)
    settings = dict(
        default_root_dir=tmp_path, enable_checkpointing=False, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    saver = SaveAtSecondEpochEnd(tmp_path / "end.ckpt")
    L.Trainer(max_epochs=2, callbacks=[saver], **settings).fit(Recorder(), data)
    # current_epoch still says 1 here; the checkpoint resumes with two epochs done.
    assert saver.said == (1, 2)
    module = Recorder()
    L.Trainer(max_epochs=4, **settings).fit(module, data, ckpt_path=tmp_path / "end.ckpt")
    assert len(module.said) == 2 * 3  # epochs 3 and 4 trained, three steps each


def test_lightning_names_the_hook_it_is_in_through_hook_name(tmp_path):
    """If Lightning renamed the attribute, ClassifierModule's fast path would silently stop
    applying: here the attribute would no longer say "training_step"."""
    data = DataLoader(TensorDataset(torch.zeros(3, 2)), batch_size=1)
    module = Recorder()
    trainer = L.Trainer(
        max_epochs=1, default_root_dir=tmp_path, enable_checkpointing=False, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, data)
    assert module.hooks == ["training_step"] * 3
