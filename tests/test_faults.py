"""Runs that survive: bad input, training faults, resume after a kill, determinism, sweeps."""

from __future__ import annotations

import csv
import json
import math
import signal
import time
from pathlib import Path

import pytest
import torch

from stn_lab.build import build
from stn_lab.config_path import compose_config
from stn_lab.data import sources
from stn_lab.data.datamodules import MNISTDataModule, SyntheticDataModule
from stn_lab.data.sources import DataError
from stn_lab.models.transforms.affine import Affine
from stn_lab.models.transforms.attention import Attention
from stn_lab.module import TrainingFault
from stn_lab.run_record import changed_settings
from stn_lab.train import train

TINY = [
    "data=synthetic", "data.num_train=256", "data.num_test=64",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
]  # fmt: skip


def run(tmp_path: Path, overrides: list[str], network_hook=None) -> dict:
    cfg = compose_config([*TINY, *overrides])
    return train(cfg, tmp_path, {"model": "stn"}, overrides)


def collapse_stn(cfg_overrides: list[str]):
    """A real runaway transform: the affine scale driven to zero, as in a collapsed run."""
    cfg = compose_config([*TINY, *cfg_overrides])
    datamodule, network, module = build(cfg)
    with torch.no_grad():
        network.stns[0].head.bias.copy_(torch.tensor([1e-4, 0, 0, 0, 1e-4, 0]))
    return cfg, datamodule, module


def fit(cfg, datamodule, module, tmp_path):
    import lightning as L
    from hydra.utils import instantiate

    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=datamodule)
    return trainer


def test_collapsed_stn_stops_the_run_naming_the_step(tmp_path):
    cfg, datamodule, module = collapse_stn(["trainer.max_epochs=1", "model.stn.lr_mult=1e-9"])
    with pytest.raises(TrainingFault, match=r"degenerate STN: the grid collapsed .* at step 0"):
        fit(cfg, datamodule, module, tmp_path)


def test_collapsed_stn_batches_can_be_skipped_and_counted(tmp_path):
    overrides = ["trainer.max_epochs=1", "model.stn.lr_mult=1e-9", "faults.on_fault=skip"]
    cfg, datamodule, module = collapse_stn(overrides)
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    fit(cfg, datamodule, module, tmp_path)
    # Every optimiser step's images are skipped.
    steps = math.ceil(len(datamodule.splits["train"]) / datamodule.batch_size)
    assert module.skipped_batches == steps > 1
    after = module.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no step was taken


def test_non_finite_loss_stops_the_run(tmp_path):
    cfg = compose_config([*TINY, "trainer.max_epochs=1", "model=cnn"])
    datamodule, network, module = build(cfg)
    with torch.no_grad():
        network.classifier.head[-1].bias.fill_(float("nan"))
    with pytest.raises(TrainingFault, match=r"non-finite loss \(nan\) at step 0"):
        fit(cfg, datamodule, module, tmp_path)


def test_grid_leaving_the_image_is_detected():
    from stn_lab.models.stn import lattice_points, step_health

    inside = Affine().grid(Affine().identity().unsqueeze(0), (1, 1, 8, 8), False)
    loss = torch.tensor(0.25)
    value, fractions = step_health(loss, [(lattice_points(torch.cat([inside, inside + 5])), 8)])
    assert value == 0.25 and fractions == [0.0, 0.5]  # collapsed, outside


def test_health_is_the_worst_over_the_stns():
    from stn_lab.models.stn import lattice_points, step_health

    good = Affine().grid(Affine().identity().expand(4, -1), (4, 1, 8, 8), False)
    away, tiny = good + 5, good * 0.01  # off the image; collapsed to under a pixel
    step = lambda *grids: step_health(  # noqa: E731
        torch.tensor(float("nan")), [(lattice_points(g), 8) for g in grids]
    )[1]
    assert step(good, good) == [0.0, 0.0]
    assert step(torch.cat([good, away[:1]]), good[:2]) == pytest.approx([0.0, 0.2])  # 1 of 5
    assert step(good, tiny) == [1.0, 0.0]  # the second STN collapsed
    value, fractions = step_health(torch.tensor(float("nan")), [])  # no STN: the loss alone
    assert math.isnan(value) and fractions == []


def test_lattice_points_are_the_grid_at_the_lattice_corners_included():
    from stn_lab.models.stn import HEALTH_POINTS, lattice_points

    grid = torch.randn(3, 42, 42, 2)
    points = lattice_points(grid)  # coordinate-major: every x, then every y
    assert points.shape == (3, 2, HEALTH_POINTS**2)
    index = torch.linspace(0, 41, HEALTH_POINTS).round().long()
    expected = grid[:, index][:, :, index].reshape(3, -1, 2).transpose(1, 2)
    torch.testing.assert_close(points, expected, rtol=0, atol=0)
    assert torch.equal(points[:, :, -1], grid[:, -1, -1])  # the last corner, x and y


def test_bounded_transforms_stay_near_the_identity():
    theta = torch.tensor([[100.0, -50.0, 30.0, 0.0, 1.0, -9.0]])
    grid = Affine(bounded=True).grid(theta, (1, 1, 5, 5), False)
    # Each entry within 0.9 of the identity: |x'| <= |a| + |b| + |t| <= 1.9 + 0.9 + 0.9.
    assert grid.abs().max() <= 3.7 + 1e-5
    assert Affine().grid(theta, (1, 1, 5, 5), False).abs().max() > 100  # unbounded runs away
    attention = Attention(bounded=True).grid(torch.tensor([[-10.0, 0, 0]]), (1, 1, 5, 5), False)
    assert attention.abs().max() >= 0.1 * 0.8 - 1e-6  # scale >= 0.1; grid points reach 0.8


def test_identity_penalty_is_added_to_the_loss():
    cfg = compose_config([*TINY, "model.stn.identity_weight=2.0"])
    _, network, _ = build(cfg)
    with torch.no_grad():
        network.stns[0].head.bias.add_(torch.tensor([0.5, 0, 0, 0, 0, 0]))
    network(torch.rand(4, 1, 28, 28))
    assert network.penalty().item() == pytest.approx(2.0 * 0.25 / 6)


def test_same_seed_gives_identical_metrics_on_cpu(tmp_path):
    records = [run(tmp_path / str(i), ["trainer.max_epochs=2"]) for i in range(2)]
    configs = [record.pop("config") for record in records]
    for record in records:
        record.pop("seconds_per_epoch")
    assert records[0] == records[1]
    assert changed_settings(*configs) == {}  # only the run folders differ


def test_unwritable_data_root_is_one_clear_error(tmp_path, make_idx_dataset):
    system = make_idx_dataset(tmp_path / "system", n_train=20, n_test=10)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    from stn_lab.data.datamodules import FashionMNISTDataModule

    dm = FashionMNISTDataModule(
        data_dir=blocker / "root", download=False, system_dirs=[str(system)]
    )
    with pytest.raises(sources.DataError, match="cannot copy .* into the data root"):
        dm.setup()


def test_labels_beyond_num_classes_are_a_mismatch(tmp_path, make_idx_dataset, write_idx):
    folder = make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=20, n_test=10)

    write_idx(folder / "t10k-labels-idx1-ubyte", torch.full((10,), 12, dtype=torch.uint8).numpy())
    with pytest.raises(DataError, match="num_classes mismatch: mnist test labels run from 12"):
        MNISTDataModule(data_dir=tmp_path, val_size=5, download=False).setup()


def test_unsupported_transform_is_rejected():
    cfg = compose_config([*TINY, "transform._target_=torch.nn.Identity", "~transform.bounded"])
    with pytest.raises(Exception, match="not supported by the STN"):
        build(cfg)


@pytest.mark.slow
def test_checkpoint_of_another_model_is_one_clear_error(tmp_path, train_cli):
    first = train_cli(["trainer.max_epochs=1", "hydra.run.dir=a"])
    assert first.wait(timeout=300) == 0, first.stdout.read()[-2000:]
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    second = train_cli(
        ["trainer.max_epochs=1", "model=cnn", f"ckpt_path={ckpt}", "hydra.run.dir=b"]
    )
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 2 and "Traceback" not in output
    assert f"error: cannot resume {ckpt} with other settings (model." in output


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(tmp_path, train_cli):
    args = ["trainer.max_epochs=8", "checkpoint_every_n_steps=2", "data.num_train=4096",
            "hydra.run.dir=run"]  # fmt: skip
    proc = train_cli(args)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # let it get a little further into training, then kill it without warning
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert last.exists() and not (tmp_path / "run" / "metrics.json").exists()
    resumed = train_cli([*args, "ckpt_path=last"])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-2000:]
    assert f"Restored all states from the checkpoint at {last}" in output  # (not the test's)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 8
    # The history survives the kill: every epoch's time (the killed one counts the time up to
    # its last checkpoint plus the time after the resume) and the first epochs' metric rows.
    assert len(record["seconds_per_epoch"]) == 8 and max(record["seconds_per_epoch"]) < 120
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    assert sorted({int(r["epoch"]) for r in rows if r.get("val/acc")}) == list(range(8))
    again = train_cli([*args, "ckpt_path=last"])  # a finished job is skipped, not redone
    assert "already completed" in again.communicate(timeout=300)[0] and again.returncode == 0


@pytest.mark.slow
def test_failing_sweep_job_keeps_the_others(tmp_path, train_cli):
    proc = train_cli(["-m", "trainer.fast_dev_run=true", "distortion=RTS",
                "distortion.scale=[0.5,1],[0,1]"])  # fmt: skip
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, output  # the sweep went on, then says a job failed
    assert "sweep: 2 jobs: 1 completed, 1 failed (jobs 1)" in output
    records = [
        json.loads(p.read_text()) for p in sorted(tmp_path.glob("logs/multiruns/*/*/metrics.json"))
    ]
    assert [r["status"] for r in records] == ["completed", "failed"]
    assert records[1]["error"] == "distortion.scale must be > 0, got [0.0, 1.0]"


def test_synthetic_module_rejects_bad_sizes():
    with pytest.raises(ValueError, match="val_size"):
        SyntheticDataModule(num_train=10, val_size=20).setup()
