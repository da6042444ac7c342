"""Issue 13, points 1-3: every Trainer flag counts optimiser steps, loggers and callbacks are
config groups, checkpoints load anywhere; and issue 12 point 6: an Optuna sweep tunes on
validation accuracy. Each test runs the real entry point (``train()`` in-process, or the
command line as a subprocess) on tiny synthetic data and checks what the run wrote.

Tiny data: 256 synthetic images, 10% for validation (26), so 230 training images in batches of
64 = 4 optimiser steps an epoch (the last batch holds 38); 64 test images.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning_utilities.core.imports import RequirementCache
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from stn_lab.build import build
from stn_lab.config_path import CONFIG_DIR, compose_config
from stn_lab.errors import user_error_message
from stn_lab.instantiators import MissingExtra, build_callbacks
from stn_lab.lightning_private import HOOK_NAME
from stn_lab.loggers import build_loggers
from stn_lab.module import ClassifierModule
from stn_lab.train import train

TESTS = Path(__file__).parent
TINY = [
    "data=synthetic", "data.num_train=256", "data.num_test=64", "model=cnn",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
]  # fmt: skip
STEPS_PER_EPOCH = 4
NO_PICTURES = "~callbacks.artefacts"  # a faster run where the pictures are not under test
PROBE = "+callbacks.probe._target_=test_lightning_native.GradientProbe"


class GradientProbe(L.Callback):
    """Records, after each optimiser step, the gradients the optimiser used (after clipping):
    the largest absolute value and the total 2-norm, into ``<run dir>/gradients.json``."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Lightning zeroes the gradients in the next step: these are the ones this step used.
        grads = [p.grad.detach().flatten() for p in pl_module.parameters() if p.grad is not None]
        flat = torch.cat(grads)
        self.rows.append({"max_abs": flat.abs().max().item(), "norm": flat.norm().item()})

    def on_train_end(self, trainer, pl_module):
        path = Path(trainer.default_root_dir) / "gradients.json"
        path.write_text(json.dumps(self.rows))


class StepLosses(L.Callback):
    """Records each optimiser step's loss and batch size into ``<run dir>/steps.json``."""

    def __init__(self):
        self.rows: list[tuple[float, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((outputs["loss"].item(), len(batch[1])))

    def on_train_end(self, trainer, pl_module):
        (Path(trainer.default_root_dir) / "steps.json").write_text(json.dumps(self.rows))


class MarkedEnvironment(LightningEnvironment):
    """Lightning's default cluster environment under another name, to see that it was used."""


class PluginProbe(L.Callback):
    """Writes the Trainer's cluster environment class into ``<run dir>/environment.json``."""

    def on_train_start(self, trainer, pl_module):
        name = type(trainer._accelerator_connector.cluster_environment).__name__
        (Path(trainer.default_root_dir) / "environment.json").write_text(json.dumps(name))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every run's log dir (and so the MLflow store) under tmp_path; W&B never online."""
    monkeypatch.setenv("STN_LAB_LOGS", str(tmp_path / "logs"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def run(tmp_path: Path, overrides: list[str], name: str = "run") -> tuple[dict, Path]:
    """``train()`` in-process on tiny data: (the metrics.json record, the run folder)."""
    overrides = [*TINY, *overrides]
    run_dir = tmp_path / name
    return train(compose_config(overrides), run_dir, {}, overrides), run_dir


def csv_rows(run_dir: Path, key: str) -> list[dict]:
    """The rows of ``csv/metrics.csv`` that hold ``key``."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as fh:
        return [row for row in csv.DictReader(fh) if row.get(key)]


@pytest.fixture
def cli(train_run):
    """``python -m stn_lab.train`` as a user runs it (``train_run``), with the tests folder
    importable for the probe callbacks."""

    def run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
        return train_run(args, env={"PYTHONPATH": str(TESTS), **(env or {})})

    return run


def cli_run_dir(cwd: Path) -> Path:
    (metrics,) = (cwd / "logs" / "runs").glob("*/metrics.json")
    return metrics.parent


# ------------------------------------------------------------------ 1. the optimiser step
@pytest.mark.parametrize("algorithm", ["norm", pytest.param("value", marks=pytest.mark.slow)])
def test_gradient_clipping_bounds_the_gradients_each_step(tmp_path, algorithm):
    # Same seed, same first batch: unclipped its gradients are above the bound, clipped not.
    steps = ["trainer.max_steps=3", NO_PICTURES, PROBE]
    _, free = run(tmp_path, steps, "free")
    clip = ["trainer.gradient_clip_val=0.01", f"trainer.gradient_clip_algorithm={algorithm}"]
    record, clipped = run(tmp_path, [*steps, *clip], "clipped")
    key = "norm" if algorithm == "norm" else "max_abs"
    free_rows = json.loads((free / "gradients.json").read_text())
    rows = json.loads((clipped / "gradients.json").read_text())
    assert record["status"] == "completed" and len(rows) == 3
    assert free_rows[0][key] > 0.01  # without clipping the bound would be exceeded
    assert all(row[key] <= 0.01 * (1 + 1e-4) for row in rows)
    assert record["config"]["trainer"]["gradient_clip_val"] == 0.01


def test_train_sums_fold_held_outputs_into_loss_correct_and_count():
    module = ClassifierModule(
        network={"_target_": "torch.nn.Identity"}, optimizer={"_target_": "torch.optim.SGD"},
        num_classes=3,
    )  # fmt: skip
    logits = torch.tensor([[2.0, 0, 0], [0, 2, 0], [0, 0, 2], [2, 0, 0], [0, 2, 0]])
    labels = torch.tensor([0, 1, 0, 1, 1])
    module._train_outputs = [
        (torch.tensor(0.5), logits[:3], labels[:3]),  # 2 of 3 right
        (torch.tensor(2.0), logits[3:], labels[3:]),  # 1 of 2 right
    ]
    module._fold_train_outputs()
    assert module._train_outputs == []
    assert module._train_sums.tolist() == [0.5 * 3 + 2.0 * 2, 3.0, 5.0]


def test_a_lightning_step_updates_the_network_exactly_as_a_plain_loop_does():
    # The same batches (prepared once), the same seeded STN and the same optimiser groups: three
    # steps of Lightning's loop with the module's training step (fault check, held outputs,
    # logging) against zero_grad / forward / cross-entropy / backward / step written out.
    overrides = [*TINY, "model=stn", "arch.classifier.dropout=0.0", "distortion=RTS"]
    cfg = compose_config(overrides)
    datamodule, _, module = build(cfg)
    _, plain_network, plain_module = build(cfg)  # the same seed: the same initial weights
    datamodule.setup()
    batches = [
        (datamodule.prepare_images(x, train=True), y)
        for x, y in itertools.islice(datamodule.train_dataloader(), 3)
    ]
    trainer = L.Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    optimizer = plain_module.configure_optimizers()
    plain_network.train()
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(plain_network(x), y).backward()
        optimizer.step()
    trained, plain = module.network.state_dict(), plain_network.state_dict()
    assert trainer.global_step == 3 and trained.keys() == plain.keys()
    for name, value in plain.items():
        torch.testing.assert_close(trained[name], value, rtol=0, atol=0, msg=name)


def test_hook_name_is_a_plain_attribute_and_other_assignments_still_register():
    module = ClassifierModule(
        network={"_target_": "torch.nn.Identity"}, optimizer={"_target_": "torch.optim.SGD"},
        num_classes=3,
    )  # fmt: skip
    setattr(module, HOOK_NAME, "training_step")  # what Lightning assigns around every hook
    assert module.__dict__[HOOK_NAME] == "training_step"
    module.extra = torch.nn.Linear(2, 2)  # nn.Module's bookkeeping for everything else
    module.scale = torch.nn.Parameter(torch.ones(1))
    assert "extra" in module._modules and "scale" in module._parameters
    assert "extra" not in module.__dict__ and "scale" not in module.__dict__


def test_train_loss_epoch_is_the_image_weighted_mean_of_the_steps_across_folds(
    tmp_path, monkeypatch
):
    # Folding every 3 steps: one fold mid-epoch and the rest at the epoch's end (4 steps, the
    # last of 38 images instead of 64).
    monkeypatch.setattr("stn_lab.module.TRAIN_FOLD_STEPS", 3)
    recorder = "+callbacks.steps._target_=test_lightning_native.StepLosses"
    monkeypatch.syspath_prepend(str(TESTS))
    record, run_dir = run(tmp_path, ["trainer.max_epochs=1", NO_PICTURES, recorder])
    steps = json.loads((run_dir / "steps.json").read_text())
    assert [n for _, n in steps] == [64, 64, 64, 38]
    expected = sum(loss * n for loss, n in steps) / sum(n for _, n in steps)
    (row,) = csv_rows(run_dir, "train/loss_epoch")
    assert float(row["train/loss_epoch"]) == pytest.approx(expected, rel=1e-5)
    correct = float(row["train/acc"]) * 230  # right answers among all 230 training images
    assert correct == pytest.approx(round(correct), abs=1e-3) and record["status"] == "completed"


def test_accumulate_grad_batches_halves_the_optimiser_steps(tmp_path):
    record, run_dir = run(
        tmp_path, ["trainer.max_epochs=2", "trainer.accumulate_grad_batches=2", NO_PICTURES]
    )
    assert record["epochs"] == 2
    assert record["step"] == 2 * STEPS_PER_EPOCH // 2  # 8 batches, 4 optimiser steps


def test_log_every_n_steps_and_val_check_interval_count_optimiser_steps(tmp_path):
    # 600 images: 540 for training = 9 steps. A train/loss row every 2 steps (a step-level
    # loss curve), a validation after steps 4 and 8 (csv `step` is the step index, from 0).
    record, run_dir = run(tmp_path, [
        "data.num_train=600", "trainer.max_epochs=1", "trainer.log_every_n_steps=2",
        "trainer.val_check_interval=4", NO_PICTURES,
    ])  # fmt: skip
    assert record["step"] == 9
    assert [int(r["step"]) for r in csv_rows(run_dir, "train/loss")] == [1, 3, 5, 7]
    assert [int(r["step"]) for r in csv_rows(run_dir, "val/acc")] == [3, 7]


def test_log_every_n_steps_zero_logs_no_step_loss_and_trains(tmp_path):
    # Lightning accepts 0 (no step-level logging); the module follows Lightning's own test.
    record, run_dir = run(tmp_path, ["trainer.max_steps=3", "trainer.log_every_n_steps=0",
                                     NO_PICTURES])  # fmt: skip
    assert record["status"] == "completed" and record["step"] == 3
    assert not csv_rows(run_dir, "train/loss")


@pytest.mark.slow
def test_check_val_every_n_epoch(tmp_path):
    record, run_dir = run(
        tmp_path, ["trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2", NO_PICTURES]
    )
    assert record["step"] == 4 * STEPS_PER_EPOCH
    assert [int(r["epoch"]) for r in csv_rows(run_dir, "val/acc")] == [1, 3]


@pytest.mark.slow
def test_overfit_batches_trains_on_that_many_steps_an_epoch(tmp_path):
    record, run_dir = run(tmp_path, ["trainer.max_epochs=3", "trainer.overfit_batches=2",
                                     NO_PICTURES])  # fmt: skip
    assert record["step"] == 3 * 2 and record["debug"] == ["overfit_batches=2"]
    assert [int(r["step"]) for r in csv_rows(run_dir, "val/acc")] == [1, 3, 5]


@pytest.mark.parametrize("scheduler", ["thirds", pytest.param("cosine", marks=pytest.mark.slow)])
def test_step_schedulers_decay_within_a_step_budget_and_lr_monitor_logs_each_step(
    tmp_path, scheduler
):
    # max_steps=6 stops in the second epoch; the scheduler's length is those 6 steps.
    record, run_dir = run(tmp_path, [
        f"scheduler={scheduler}", "trainer.max_steps=6", "trainer.max_epochs=-1",
        "callbacks=[default,lr_monitor]", "trainer.log_every_n_steps=1", NO_PICTURES,
    ])  # fmt: skip
    assert record["step"] == 6
    lrs = [float(r["lr-Adam"]) for r in csv_rows(run_dir, "lr-Adam")]
    if scheduler == "thirds":  # / 10 at 1/3 and 2/3 of the run
        expected = [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5]
    else:  # T_max = the run's 6 steps
        expected = [0.5e-3 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert [int(r["step"]) for r in csv_rows(run_dir, "lr-Adam")] == list(range(6))
    assert lrs == pytest.approx(expected, rel=1e-5)


def test_every_scheduler_option_carries_its_interval():
    for path in sorted((CONFIG_DIR / "scheduler").glob("*.yaml")):
        cfg = compose_config([f"scheduler={path.stem}"])
        assert cfg.scheduler.interval in ("step", "epoch"), path.name


# ------------------------------------------------------------------ 2. loggers
def test_csv_is_the_only_default_logger(tmp_path):
    record, run_dir = run(tmp_path, ["trainer.max_steps=2", NO_PICTURES])
    assert list(record["config"]["logger"]) == ["csv"]
    assert csv_rows(run_dir, "test/acc") and (run_dir / "metrics.json").is_file()
    assert not {"tensorboard", "wandb"} & {p.name for p in run_dir.iterdir()}
    assert not (tmp_path / "logs" / "mlruns").exists()


def test_tensorboard_event_files_hold_the_metrics(tmp_path):
    record, run_dir = run(tmp_path, ["trainer.max_epochs=2", "logger=[csv,tensorboard]",
                                     NO_PICTURES])  # fmt: skip
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    events = EventMultiplexer().AddRunsFromDirectory(str(run_dir / "tensorboard")).Reload()
    scalars = {
        tag: [e.value for run in events.Runs() if tag in events.Runs()[run]["scalars"]
              for e in events.Scalars(run, tag)]
        for tag in ("val/acc", "test/acc")
    }  # fmt: skip
    assert max(scalars["val/acc"]) == pytest.approx(record["best_val_acc"])
    assert scalars["test/acc"] == [pytest.approx(record["test"]["acc"])]
    assert csv_rows(run_dir, "test/acc")  # both loggers at once


def test_checkpoint_saves_log_nothing_about_weights_only(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    record, run_dir = run(tmp_path, ["trainer.max_epochs=1", NO_PICTURES])
    assert record["status"] == "completed" and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "weights_only" not in caplog.text


def test_a_run_without_the_csv_logger_says_why_it_has_no_curves(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    record, run_dir = run(tmp_path, ["trainer.max_epochs=1", "logger=tensorboard"])
    assert record["status"] == "completed" and (run_dir / "confusion_matrix.png").is_file()
    assert not (run_dir / "curves.png").exists()
    assert "curves.png not drawn: it reads the CSV logger's metrics.csv" in caplog.text


@pytest.mark.slow
def test_mlflow_store_is_read_back_by_mlflows_own_client(tmp_path):
    from mlflow.tracking import MlflowClient  # (not at the top: mlflow takes 1 s to import)

    # With csv: curves.png is drawn from csv/metrics.csv.
    record, run_dir = run(tmp_path, ["trainer.max_epochs=2", "logger=[csv,mlflow]"])
    store = tmp_path / "logs" / "mlflow.db"
    assert store.is_file()  # under the log dir; opened with no MLFLOW_ALLOW_FILE_STORE flag
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "stn_lab"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.status == "FINISHED"
    metrics = mlrun.data.metrics
    assert metrics["test/acc"] == pytest.approx(record["test"]["acc"])
    val = [m.value for m in client.get_metric_history(mlrun.info.run_id, "val/acc")]
    assert len(val) == 2 and max(val) == pytest.approx(record["best_val_acc"])
    params = mlrun.data.params  # the resolved config, flattened
    assert params["optimizer/lr"] == "0.001" and params["seed"] == "0"
    assert params["model/_target_"] == record["config"]["model"]["_target_"]
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"metrics.json", "curves.png", "confusion_matrix.png"} <= artifacts
    local = client.download_artifacts(mlrun.info.run_id, "metrics.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == record


# Lightning's own availability flags, made false: what a missing package looks like.
MISSING = {
    "tensorboard": ("lightning.pytorch.loggers.TensorBoardLogger",
                    ["lightning.fabric.loggers.tensorboard._TENSORBOARD_AVAILABLE",
                     "lightning.fabric.loggers.tensorboard._TENSORBOARDX_AVAILABLE"]),
    "mlflow": ("lightning.pytorch.loggers.MLFlowLogger",
               ["lightning.pytorch.loggers.mlflow._MLFLOW_AVAILABLE"]),
    "wandb": ("lightning.pytorch.loggers.WandbLogger",
              ["lightning.pytorch.loggers.wandb._WANDB_AVAILABLE"]),
    "rich": ("lightning.pytorch.callbacks.RichProgressBar",
             ["lightning.pytorch.callbacks.progress.rich_progress._RICH_AVAILABLE"]),
}  # fmt: skip


@pytest.mark.parametrize("extra", sorted(MISSING))
def test_a_missing_package_is_one_line_naming_its_extra(tmp_path, monkeypatch, extra):
    target, flags = MISSING[extra]
    for flag in flags:
        monkeypatch.setattr(flag, RequirementCache(f"{flag.rsplit('_', 2)[-2].lower()}>=999"))
    with pytest.raises(MissingExtra) as err:
        if extra == "rich":
            build_callbacks({"rich_progress_bar": {"_target_": target}})
        else:
            build_loggers({extra: {"_target_": target, "save_dir": str(tmp_path)}})
    group = "callback 'rich_progress_bar'" if extra == "rich" else f"logger {extra!r}"
    assert user_error_message(err.value) == (
        f"{group} needs the {extra!r} extra: pip install -e '.[{extra}]'"
    )


# ------------------------------------------------------------------ 2. callbacks
def test_early_stopping_stops_the_run(tmp_path):
    # lr=0: validation accuracy never improves, so patience 1 stops after the second epoch.
    record, _ = run(tmp_path, [
        "trainer.max_epochs=6", "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=1", "optimizer.lr=0", NO_PICTURES,
    ])  # fmt: skip
    assert record["status"] == "completed"
    assert record["epochs"] == 2 and record["step"] == 2 * STEPS_PER_EPOCH


def test_trainer_callbacks_and_logger_overrides_are_honoured(tmp_path):
    # Lightning's own way: a list of callbacks, one logger; added to the groups' entries.
    record, run_dir = run(tmp_path, [
        "trainer.max_epochs=6", "optimizer.lr=0", NO_PICTURES,
        "+trainer.callbacks=[{_target_:lightning.pytorch.callbacks.EarlyStopping,"
        "monitor:'val/acc',mode:max,patience:1}]",
        "+trainer.logger={_target_:lightning.pytorch.loggers.CSVLogger,"
        "save_dir:'${paths.output_dir}',name:extra_csv,version:''}",
    ])  # fmt: skip
    assert record["epochs"] == 2  # the EarlyStopping callback ran
    assert (run_dir / "extra_csv" / "metrics.csv").is_file()  # the logger logged
    assert (run_dir / "csv" / "metrics.csv").is_file()  # next to the group's csv


@pytest.mark.slow
def test_one_more_callback_from_the_command_line(tmp_path):
    record, run_dir = run(tmp_path, [
        "trainer.max_steps=3", "trainer.log_every_n_steps=1", NO_PICTURES,
        "+callbacks.extra._target_=lightning.pytorch.callbacks.LearningRateMonitor",
    ])  # fmt: skip
    # LearningRateMonitor's default interval: at the epoch's start and at every step.
    assert [int(r["step"]) for r in csv_rows(run_dir, "lr-Adam")] == [0, 0, 1, 2]


@pytest.mark.parametrize(
    "override, message",
    [
        ("+trainer.logger=false",
         "trainer.logger=False cannot be honoured: give a config with a _target_"),
        ("+trainer.callbacks=lr_monitor",
         "trainer.callbacks='lr_monitor' cannot be honoured: give a config with a _target_"),
        ("+callbacks.extra._target_=lightning.pytorch.callbacks.NoSuchCallback",
         "callback 'extra': cannot import 'lightning.pytorch.callbacks.NoSuchCallback'"),
    ],
)  # fmt: skip
def test_an_override_that_cannot_be_honoured_is_refused_in_one_line(tmp_path, override, message):
    with pytest.raises(Exception) as err:
        run(tmp_path, ["trainer.max_steps=1", override])
    assert user_error_message(err.value).startswith(message)


def test_trainer_plugins_override_is_honoured(tmp_path):
    env = "test_lightning_native.MarkedEnvironment"
    run(tmp_path, [
        "trainer.max_steps=1", NO_PICTURES, f"+trainer.plugins=[{{_target_:{env}}}]",
        "+callbacks.probe._target_=test_lightning_native.PluginProbe",
    ])  # fmt: skip
    assert json.loads((tmp_path / "run" / "environment.json").read_text()) == "MarkedEnvironment"


def test_trainer_default_root_dir_override_is_refused_in_one_line(tmp_path):
    with pytest.raises(Exception) as err:
        run(tmp_path, ["trainer.max_steps=1", f"+trainer.default_root_dir={tmp_path / 'x'}"])
    assert user_error_message(err.value) == (
        "trainer.default_root_dir cannot be overridden: it is the run folder: "
        "set hydra.run.dir (or hydra.sweep.dir) instead"
    )


def test_documented_trainer_flags_override_without_a_plus():
    cfg = compose_config([
        "trainer.gradient_clip_val=0.5", "trainer.gradient_clip_algorithm=value",
        "trainer.accumulate_grad_batches=2", "trainer.check_val_every_n_epoch=2",
    ])  # fmt: skip
    assert cfg.trainer.gradient_clip_val == 0.5 and cfg.trainer.check_val_every_n_epoch == 2


# ------------------------------------------------------------------ 3. checkpoints
def test_load_from_checkpoint_in_another_folder_predicts_as_the_run_did(tmp_path, monkeypatch):
    overrides = ["model=stn", "trainer.max_epochs=1", NO_PICTURES]
    record, run_dir = run(tmp_path, overrides)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = ClassifierModule.load_from_checkpoint(run_dir / record["best_checkpoint"])
    model.eval()
    assert model.network.has_stn
    datamodule = build(compose_config([*TINY, *overrides]))[0]
    datamodule.setup("test")
    preds, labels = [], []
    with torch.no_grad():
        for x, y in datamodule.test_dataloader():
            logits = model(datamodule.prepare_images(x, train=False))
            assert logits.shape == (len(x), 10)
            preds.append(logits.argmax(1))
            labels.append(y)
    # The same predictions as the run's test: its confusion matrix, image for image.
    confusion = torch.zeros(10, 10, dtype=torch.long)
    for y, p in zip(torch.cat(labels), torch.cat(preds), strict=True):
        confusion[y, p] += 1
    assert confusion.tolist() == record["test"]["confusion_matrix"]


# ------------------------------------------------------------------ the command line
@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, check",
    [
        (["trainer.gradient_clip_val=0.01", "trainer.gradient_clip_algorithm=value",
          "trainer.max_steps=3", PROBE], "clipped"),
        (["trainer.accumulate_grad_batches=2", "trainer.max_epochs=2"], "accumulated"),
        (["data.num_train=600", "trainer.limit_train_batches=5", "trainer.max_epochs=1",
          "trainer.log_every_n_steps=1"], "limited"),
    ],
    ids=["gradient_clip_val", "accumulate_grad_batches", "limit_train_batches"],
)  # fmt: skip
def test_cli_trainer_flags(tmp_path, flags, check, cli):
    proc = cli([*TINY, NO_PICTURES, *flags])
    assert proc.returncode == 0, proc.stdout[-3000:]
    run_dir = cli_run_dir(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    if check == "clipped":
        rows = json.loads((run_dir / "gradients.json").read_text())
        assert len(rows) == 3 and all(row["max_abs"] <= 0.01 for row in rows)
    elif check == "accumulated":
        assert record["epochs"] == 2 and record["step"] == STEPS_PER_EPOCH
    else:  # 5 optimiser steps of the 9 an epoch holds, each with its loss row
        assert record["step"] == 5
        assert [int(r["step"]) for r in csv_rows(run_dir, "train/loss")] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_cli_early_stopping_and_one_more_callback(tmp_path, cli):
    proc = cli([
        *TINY, "trainer.max_epochs=6", "optimizer.lr=0", "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=1", "trainer.log_every_n_steps=1",
        "+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    run_dir = cli_run_dir(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["epochs"] == 2 and record["step"] == 2 * STEPS_PER_EPOCH
    lr_steps = [int(r["step"]) for r in csv_rows(run_dir, "lr-Adam")]
    assert sorted(set(lr_steps)) == list(range(2 * STEPS_PER_EPOCH))  # every optimiser step


@pytest.mark.slow
def test_cli_every_logger_at_once_writes_what_its_tool_reads(tmp_path, monkeypatch, cli):
    from mlflow.tracking import MlflowClient

    loggers = ["tensorboard", "mlflow", "wandb"]  # all installed by the dev extra
    proc = cli([*TINY, "trainer.max_epochs=2", f"logger=[csv,{','.join(loggers)}]"],
               env={"WANDB_API_KEY": "", "WANDB_SILENT": "true"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    run_dir = cli_run_dir(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert set(record["config"]["logger"]) == {"csv", *loggers}
    assert csv_rows(run_dir, "val/acc")
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "stn_lab"]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.data.metrics["test/acc"] == pytest.approx(record["test"]["acc"])
    val = client.get_metric_history(mlrun.info.run_id, "val/acc")
    assert max(m.value for m in val) == pytest.approx(record["best_val_acc"])
    # W&B offline without a key: a local run to `wandb sync` later.
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb"))
    saved = json.loads((offline / "files" / "metrics.json").read_text())
    assert saved == record


BLOCK = """\
import importlib.metadata as md, os, sys
blocked = set(os.environ["BLOCKED_PACKAGES"].split(","))
def _block(real):
    def check(name, *args, **kwargs):
        if name in blocked:
            raise md.PackageNotFoundError(name)
        return real(name, *args, **kwargs)
    return check
md.version, md.distribution = _block(md.version), _block(md.distribution)
for name in blocked:
    sys.modules[name] = None
"""


@pytest.mark.slow
def test_cli_missing_logger_package_is_one_line_and_exit_2(tmp_path, cli):
    # The wandb package made invisible (metadata and import), as if never installed.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK)
    env = {"PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{TESTS}", "BLOCKED_PACKAGES": "wandb"}
    proc = cli([*TINY, "trainer.max_steps=1", "logger=[csv,wandb]"], env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert errors[0].endswith(
        "error: logger 'wandb' needs the 'wandb' extra: pip install -e '.[wandb]'"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, tables",
    [
        (["trainer.enable_model_summary=false"], 0),
        (["trainer.enable_model_summary=true"], 1),
        (["trainer.enable_model_summary=false", "callbacks=[default,rich]",
          "trainer.enable_progress_bar=true"], 0),
        (["trainer.enable_model_summary=true", "callbacks=[default,rich]",
          "trainer.enable_progress_bar=true"], 1),
    ],
    ids=["off", "on", "rich-off", "rich-on"],
)  # fmt: skip
def test_cli_model_summary_is_printed_once_or_not_at_all(tmp_path, flags, tables, cli):
    proc = cli([*TINY, "trainer.max_steps=2", NO_PICTURES, *flags])
    assert proc.returncode == 0, proc.stdout[-3000:]
    output = proc.stdout + proc.stderr
    assert output.count("Total params") == tables
    assert (cli_run_dir(tmp_path) / "summary.txt").is_file()  # the full table, on file


@pytest.mark.slow
def test_cli_rich_progress_bar_with_the_bar_disabled_is_one_line(tmp_path, cli):
    proc = cli([*TINY, "trainer.max_steps=1", "callbacks=[default,rich]"])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output
    assert "error: Trainer was configured with `enable_progress_bar=False`" in output


# ------------------------------------------------------------------ Optuna (issue 12, 6)
@pytest.mark.slow
def test_cli_optuna_sweep_maximises_validation_accuracy_past_a_failed_trial(tmp_path, cli):
    # The optuna extra is not in dev; CI installs it, and there this skip fails (the no-skip rule).
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    # tune_lr's sampler is seeded: trial 0 draws max_epochs=0, a one-line user error (the job
    # returns None); trials 1 and 2 train. The sweep goes on and ranks the two that trained,
    # then exits 1 saying that one job was refused.
    proc = cli([
        "-m", "hydra/sweeper=tune_lr", "hydra.sweeper.n_trials=3", "trainer.max_epochs=choice(0,1)",
        *TINY, NO_PICTURES,
    ])  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:]
    output = proc.stdout + proc.stderr
    assert "sweep: 3 jobs: 2 completed, 0 failed, 1 refused (jobs 0)" in output
    assert "Failed experiment: Return value must be float-castable. Got 'None'." in output
    (sweep,) = (tmp_path / "logs" / "multiruns").iterdir()
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    records = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(3)]
    assert [r["status"] for r in records] == ["failed", "completed", "completed"]
    trained = records[1:]
    lrs = [r["config"]["optimizer"]["lr"] for r in trained]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs) and lrs[0] != lrs[1]
    best = max(trained, key=lambda r: r["best_val_acc"])
    # The sweep maximised each job's best validation accuracy, never its test accuracy.
    assert result["best_value"] == pytest.approx(best["best_val_acc"], abs=1e-9)
    assert result["best_params"] == {
        "optimizer.lr": pytest.approx(best["config"]["optimizer"]["lr"]),
        "trainer.max_epochs": 1,
    }
    job = sweep / str(records.index(best))
    assert best["best_val_acc"] == max(float(r["val/acc"]) for r in csv_rows(job, "val/acc"))
