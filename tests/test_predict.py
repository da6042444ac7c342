"""A trained checkpoint predicts on raw images: it holds the input transform it was trained with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stn_lab.build import build
from stn_lab.config_path import compose_config
from stn_lab.module import ClassifierModule
from stn_lab.train import train

TINY = ["data=synthetic", "data.num_train=256", "data.num_test=64", "model=stn",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "~callbacks.artefacts"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    record = train(compose_config(TINY), run_dir, {"model": "stn"}, TINY)
    return run_dir, record


def test_raw_test_images_get_the_predictions_the_run_recorded(trained):
    run_dir, record = trained
    module = ClassifierModule.load_from_checkpoint(run_dir / record["best_checkpoint"])
    datamodule = build(compose_config(TINY))[0]
    datamodule.setup("test")
    images, _ = datamodule.splits["test"].tensors  # uint8, as the files hold them
    recorded = np.load(run_dir / record["predictions"])
    assert module.hparams.inputs == {"mean": [0.1], "std": [0.25]}  # SyntheticDataModule.mean, .std
    assert module.predict(images).tolist() == recorded["pred"].tolist()
    # Scaled to [0, 1], or without the channel axis: the same classes.
    assert module.predict(images.float() / 255).tolist() == recorded["pred"].tolist()
    assert module.predict(images[:, 0]).tolist() == recorded["pred"].tolist()
    one = module.predict(images[5, 0])  # a single [H, W] image: a batch of one class
    assert one.tolist() == [int(recorded["pred"][5])]
    assert module.training  # its own mode is restored


def test_normalised_inputs_would_predict_otherwise(trained):
    """The transform matters: feeding already normalised images changes the predictions, so the
    test above could not pass by accident."""
    run_dir, record = trained
    module = ClassifierModule.load_from_checkpoint(run_dir / record["best_checkpoint"])
    datamodule = build(compose_config(TINY))[0]
    datamodule.setup("test")
    images, _ = datamodule.splits["test"].tensors
    recorded = np.load(run_dir / record["predictions"])["pred"]
    shifted = module.predict(images.float() / 255 * 2 - 1)
    assert not torch.equal(shifted, torch.as_tensor(recorded, dtype=shifted.dtype))
