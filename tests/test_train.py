"""End to end: the train entry point on tiny data, in-process and as a real subprocess."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from stn_lab.build import build
from stn_lab.config_path import CONFIG_DIR, compose_config
from stn_lab.train import train

TRANSFORMS = sorted(p.stem for p in (CONFIG_DIR / "transform").glob("*.yaml"))
# Every STN combination; the baselines ignore localiser/activation/transform, so they run once
# (st_fcn has no conv in its localiser, so only its transform varies).
ALL_COMBINATIONS = [
    *itertools.product(["stn"], ["conv", "coordconv"], ["relu", "leakyrelu"], TRANSFORMS),
    *itertools.product(["st_fcn"], ["conv"], ["leakyrelu"], TRANSFORMS),
    ("cnn", "coordconv", "leakyrelu", "tps"),
    ("fcn", "conv", "relu", "affine"),
]
# The fast set runs each transform, localiser, activation and model once; the slow set the rest.
FAST = {("stn", "conv", "relu", t) for t in TRANSFORMS} | {
    ("stn", "coordconv", "leakyrelu", "affine"), ("st_fcn", "conv", "leakyrelu", "affine"),
    ("cnn", "coordconv", "leakyrelu", "tps"), ("fcn", "conv", "relu", "affine"),
}  # fmt: skip
COMBINATIONS = [
    c if c in FAST else pytest.param(*c, marks=pytest.mark.slow) for c in ALL_COMBINATIONS
]
CHOICES = {"model", "localiser", "activation", "transform", "data"}


def run_in_process(tmp_path: Path, overrides: list[str]) -> dict:
    overrides = ["data=synthetic", "trainer.enable_progress_bar=false", *overrides]
    cfg = compose_config(overrides)
    choices = {
        k: v.split("=")[1] for k, v in ((o.split("=")[0], o) for o in overrides) if k in CHOICES
    }
    return train(cfg, tmp_path, choices, overrides)


@pytest.mark.parametrize("model, localiser, activation, transform", COMBINATIONS)
def test_fast_dev_run_every_combination(tmp_path, model, localiser, activation, transform):
    overrides = [
        f"model={model}", f"localiser={localiser}", f"activation={activation}",
        f"transform={transform}", "trainer.fast_dev_run=true", "trainer.enable_model_summary=false",
    ]  # fmt: skip
    record = run_in_process(tmp_path, overrides)
    assert record["status"] == "completed" and 0.0 <= record["test"]["acc"] <= 1.0
    assert json.loads((tmp_path / "metrics.json").read_text()) == record
    if not model.startswith("st"):
        assert record["params"]["stn"] == 0
        assert all(record["choices"][g] == "n/a" for g in ("localiser", "activation", "transform"))
    else:
        assert record["params"]["stn"] > 0 and record["choices"]["localiser"] == localiser


def test_cnn_ignores_localiser_and_activation_choices():
    counts = {
        build(
            compose_config(["model=cnn", "data=synthetic", f"localiser={loc}", f"activation={act}"])
        )[1].parameter_counts()["total"]
        for loc in ("conv", "coordconv")
        for act in ("relu", "leakyrelu")
    }
    assert len(counts) == 1


def test_stn_learning_rate_multiplier_gets_its_own_group():
    cfg = compose_config(["data=synthetic", "model.stn.lr_mult=0.1", "optimizer.lr=0.002"])
    _, network, module = build(cfg)
    optimizer = module.configure_optimizers()
    lrs = sorted(group["lr"] for group in optimizer.param_groups)
    assert lrs == pytest.approx([0.0002, 0.002])
    stn_group = min(optimizer.param_groups, key=lambda g: g["lr"])
    assert sum(p.numel() for p in stn_group["params"]) == network.parameter_counts()["stn"]


def test_sgd_and_scheduler_are_config_options():
    cfg = compose_config(
        ["data=synthetic", "optimizer=sgd", "optimizer.momentum=0.9", "scheduler=step"]
    )
    config = build(cfg)[2].configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD)
    assert config["optimizer"].defaults["momentum"] == 0.9
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def fit_quietly(overrides: list[str]):
    """Build from ``overrides`` on synthetic data and fit with no validation or logging:
    (trainer, network, module)."""
    cfg = compose_config(["data=synthetic", *overrides])
    datamodule, network, module = build(cfg)
    trainer = instantiate(
        cfg.trainer, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    return trainer, network, module


@pytest.mark.parametrize(
    "overrides, expected_lr",
    [
        # Per epoch: StepLR(step_size=1, gamma=0.5) stepped after each of 2 epochs.
        (["scheduler=step", "scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=0.5",
          "trainer.max_epochs=2"], 0.25),
        # Per step: the thirds schedule divides by 10 at 1/3 and 2/3 of 6 steps.
        # Per step: the thirds schedule divides by 10 at 1/3 and 2/3 of a 6-step budget,
        # from scheduler=thirds alone (its total_steps is the run's length).
        (["scheduler=thirds", "trainer.max_steps=6", "trainer.max_epochs=-1"], 0.01),
        # ... and of an epoch budget: 2 epochs of 4 steps.
        (["scheduler=thirds", "trainer.max_epochs=2"], 0.01),
        # Cosine over a step budget reaches 0 at its last step (T_max = the run's steps).
        (["scheduler=cosine", "trainer.max_steps=6", "trainer.max_epochs=-1"], 0.0),
    ],
)  # fmt: skip
def test_schedulers_step_during_training(overrides, expected_lr):
    # Lightning steps the scheduler at the interval its config option names.
    _, _, module = fit_quietly(["model=cnn", "data.num_train=256", "optimizer.lr=1.0", *overrides])
    lrs = [group["lr"] for group in module.optimizers().optimizer.param_groups]
    assert lrs == pytest.approx([expected_lr] * len(lrs))


def test_limit_train_batches_counts_optimiser_steps():
    trainer, _, _ = fit_quietly(["model=cnn", "trainer.limit_train_batches=5",
                                 "trainer.max_epochs=1"])  # fmt: skip
    assert trainer.global_step == 5


def test_val_check_interval_counts_steps(tmp_path):
    # 540 training images in steps of 64: 9 steps; every 4 steps validates twice.
    run_in_process(tmp_path, [
        "model=cnn", "data.num_train=600", "trainer.max_epochs=1",
        "trainer.val_check_interval=4", "trainer.enable_model_summary=false",
    ])  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert sum(1 for row in rows if row.get("val/acc")) == 2


def test_short_training_writes_checkpoints_log_lines_and_metrics(tmp_path, caplog):
    caplog.set_level("INFO", logger="stn_lab")
    record = run_in_process(
        tmp_path, ["trainer.max_epochs=3", "trainer.enable_model_summary=false"]
    )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3 | train loss ")
    assert all(k in lines[-1] for k in ("val loss", "val acc", "%", " s"))
    assert record["epochs"] == 3 and len(record["seconds_per_epoch"]) == 3
    assert record["best_checkpoint"].startswith("checkpoints/epoch")
    assert (tmp_path / record["best_checkpoint"]).is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    test = record["test"]
    assert len(test["acc_per_class"]) == 10 and len(test["confusion_matrix"]) == 10
    assert sum(map(sum, test["confusion_matrix"])) == 256  # the synthetic test split
    assert test["acc"] > 0.5  # the synthetic classes are easy: 3 epochs must learn them
    assert record["schema_version"] == 2 and record["seed"] == 0
    assert record["class_names"][0] == "class_0"


@pytest.mark.slow
def test_cli_fast_dev_run_writes_metrics(tmp_path, train_run):
    proc = train_run(["data=synthetic", "trainer.fast_dev_run=true"])
    assert proc.returncode == 0, proc.stdout[-2000:]
    (metrics,) = (tmp_path / "logs" / "runs").glob("*/metrics.json")
    record = json.loads(metrics.read_text())
    assert record["status"] == "completed" and record["choices"]["model"] == "stn"
    assert record["choices"]["data"] == "synthetic"
    assert (metrics.parent / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_cli_missing_data_is_one_clear_line(tmp_path, train_run):
    proc = train_run(["data=mnist", "data.download=false", f"paths.data_dir={tmp_path}"])
    assert proc.returncode == 2
    output = proc.stdout
    assert "error: mnist not found" in output and "Traceback" not in output
    (metrics,) = (tmp_path / "logs" / "runs").glob("*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "failed"


@pytest.mark.slow
def test_cli_bad_value_is_one_clear_line(tmp_path, train_run):
    proc = train_run(["data=mnist_distorted", "distortion.scale=[0,1.2]"])
    assert proc.returncode == 2
    assert "error: distortion.scale must be > 0" in proc.stdout
    assert "Traceback" not in proc.stdout


@pytest.mark.slow
def test_cli_unknown_option_lists_valid_choices(tmp_path, train_run):
    proc = train_run(["model=resnet"])
    assert proc.returncode == 2
    assert proc.stdout.strip() == (
        "error: model=resnet is not an option of model: choose one of cnn, fcn, st_fcn, stn"
    )


@pytest.mark.slow
def test_cli_multirun_jobs_get_their_own_folders(tmp_path, train_run):
    proc = train_run(["-m", "data=synthetic", "model=stn,cnn", "trainer.fast_dev_run=true"])
    assert proc.returncode == 0, proc.stdout[-2000:]
    records = sorted((tmp_path / "logs" / "multiruns").glob("*/*/metrics.json"))
    assert [json.loads(p.read_text())["choices"]["model"] for p in records] == ["stn", "cnn"]
