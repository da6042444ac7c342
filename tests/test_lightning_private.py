"""The private Lightning attribute stn_lab reads (:mod:`stn_lab.lightning_private`) still means
what stn_lab relies on: these fail when a Lightning upgrade changes it."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from stn_lab.lightning_private import VAL_PROGRESS, rerun_cut_validation, should_update_logs


class Recorder(L.LightningModule):
    """A one-layer model that notes, per training step, what the accessor said."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.said: list[tuple[int, bool]] = []

    def training_step(self, batch, batch_idx):
        self.said.append((self.global_step, should_update_logs(self.trainer)))
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
