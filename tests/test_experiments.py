"""Every named experiment runs end to end as a real Hydra multirun (fast_dev_run, tiny data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from torch import nn

from stn_lab.config_path import compose_config

TABLE1_MODELS = {
    "fcn": ("fcn", "n/a"),
    "cnn": ("cnn", "n/a"),
    "st_fcn_aff": ("st_fcn", "affine"),
    "st_fcn_proj": ("st_fcn", "projective"),
    "st_fcn_tps": ("st_fcn", "tps"),
    "st_cnn_aff": ("stn", "affine"),
    "st_cnn_proj": ("stn", "projective"),
    "st_cnn_tps": ("stn", "tps"),
}


def multirun(train_run, tmp_path: Path, args: list[str]) -> list[dict]:
    """Every job of a ``fast_dev_run`` sweep over ``args``, as its metrics.json."""
    proc = train_run(["-m", *args, "trainer.fast_dev_run=true"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    files = sorted((tmp_path / "logs" / "multiruns").glob("*/*/metrics.json"))
    return [json.loads(p.read_text()) for p in files]


@pytest.mark.slow
def test_paper_table1_every_cell_runs(tmp_path, train_run):
    records = multirun(train_run, tmp_path, ["experiment=paper_table1", "data=synthetic", "seed=0"])
    assert all(r["status"] == "completed" for r in records)
    cells = {
        (r["choices"]["model"], r["choices"]["transform"], r["choices"]["distortion"])
        for r in records
    }
    expected = {(m, t, d) for m, t in TABLE1_MODELS.values() for d in ("R", "RTS", "P", "E")}
    assert cells == expected and len(records) == 32


def test_paper_table1_follows_the_paper_schedule():
    cfg = compose_config(["experiment=paper_table1"])
    assert cfg.data.batch_size == 256 and cfg.optimizer.lr == 0.01
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.scheduler.interval == "step"
    # The schedule's length is the run's (trainer.estimated_stepping_batches): 2000 steps.
    assert cfg.trainer.max_steps == 2000 and cfg.scheduler.scheduler.total_steps is None
    assert compose_config(["experiment=paper_table1", "budget=full"]).trainer.max_steps == 150_000
    fashion = compose_config(["experiment=paper_table1", "data=fashion_mnist"]).data
    assert fashion._target_.endswith("FashionMNISTDataModule") and fashion.batch_size == 256


@pytest.mark.slow
def test_paper_cluttered_runs_on_the_60px_canvas(tmp_path, train_run):
    records = multirun(
        train_run, tmp_path, ["experiment=paper_cluttered", "data=synthetic", "seed=0"]
    )
    assert len(records) == 4 and all(r["choices"]["distortion"] == "TC" for r in records)
    assert {r["choices"]["model"] for r in records} == {"fcn", "cnn", "st_fcn", "stn"}


def choices(overrides: list[str]) -> dict:
    return dict(compose_config(overrides, return_hydra_config=True).hydra.runtime.choices)


RTS_EXPERIMENTS = ["stn_vs_cnn", "activation_leakyrelu", "localiser_coordconv"]


@pytest.mark.parametrize("experiment", RTS_EXPERIMENTS)
def test_rts_experiments_name_their_data_and_distortion(experiment):
    picked = choices([f"experiment={experiment}"])
    assert (picked["data"], picked["distortion"]) == ("mnist", "RTS")
    fashion = choices([f"experiment={experiment}", "data=fashion_mnist"])
    assert (fashion["data"], fashion["distortion"]) == ("fashion_mnist", "RTS")


def test_paper_cluttered_uses_the_tc_distortion():
    assert compose_config(["experiment=paper_cluttered"]).distortion.canvas == 60


def test_cifar10_sizes_come_from_the_experiment_not_the_data_option():
    default = choices([])
    plain = choices(["data=cifar10"])
    assert (plain["arch"], plain["localiser_size"]) == (default["arch"], default["localiser_size"])
    picked = choices(["experiment=cifar10_stn"])
    assert [picked[g] for g in ("data", "arch", "localiser_size")] == ["cifar10", "cifar", "cifar"]


def test_paper_localiser_sizes_reach_the_network():
    """The experiments set the localiser's sizes on the `localiser_size` node the model reads."""
    cfg = compose_config(["experiment=paper_table1", "paper_model=st_cnn_aff"])
    net = instantiate(cfg.model, in_channels=1, image_size=28, num_classes=10)
    convs = [m for m in net.stns[0].localiser.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [20, 20]
    light = compose_config(["localiser_size=light"]).model.stn.localiser
    assert (list(light.channels), light.input_downsample) == ([], 4)
