"""Every option of every Hydra config group composes and instantiates."""

from __future__ import annotations

import functools
import re

import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf

from stn_lab.build import build
from stn_lab.config_path import CONFIG_DIR, compose_config
from stn_lab.data.datamodules import ImageDataModule
from stn_lab.instantiators import build_callbacks
from stn_lab.loggers import build_loggers
from stn_lab.models.network import Network


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def test_every_group_listed_in_the_issue_has_its_options():
    assert set(options("model")) >= {"cnn", "stn"}
    assert options("localiser") == ["conv", "coordconv"]
    assert options("activation") == ["leakyrelu", "relu"]
    assert set(options("transform")) >= {"affine", "attention", "similarity"}
    assert set(options("data")) >= {
        "mnist", "mnist_distorted", "fashion_mnist", "fashion_mnist_distorted", "cifar10",
        "synthetic",
    }  # fmt: skip
    assert set(options("trainer")) >= {"cpu", "default", "gpu"}
    assert set(options("debug")) >= {"fdr", "overfit"}


def build_network(cfg) -> Network:
    return instantiate(cfg.model, in_channels=1, image_size=28, num_classes=10)


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("arch", options("arch"))
def test_model_and_arch_options_instantiate(model, arch):
    net = build_network(compose_config([f"model={model}", f"arch={arch}"]))
    assert isinstance(net, Network) and net.has_stn == model.startswith("st")
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("localiser", options("localiser"))
def test_localiser_options_instantiate(localiser):
    conv = instantiate(compose_config([f"localiser={localiser}"]).localiser)
    layer = conv(1, 4, 3)
    assert layer(torch.rand(1, 1, 8, 8)).shape == (1, 4, 6, 6)


@pytest.mark.parametrize("activation", options("activation"))
def test_activation_options_instantiate(activation):
    act = instantiate(compose_config([f"activation={activation}"]).activation)()
    out = act(torch.tensor([-1.0, 1.0]))
    assert out[1] == 1.0 and (out[0] < 0) == (activation == "leakyrelu")


def test_leakyrelu_slope_is_configurable():
    act = instantiate(
        compose_config(["activation=leakyrelu", "activation.negative_slope=0.2"]).activation
    )
    assert act()(torch.tensor([-1.0])).item() == pytest.approx(-0.2)


@pytest.mark.parametrize("transform", options("transform"))
def test_transform_options_instantiate(transform):
    family = instantiate(compose_config([f"transform={transform}"]).transform)
    theta = family.identity().unsqueeze(0)
    grid = family.grid(theta, (1, 1, 5, 5), align_corners=False)
    assert grid.shape == (1, 5, 5, 2)


@pytest.mark.parametrize("data", options("data"))
def test_data_options_instantiate(data, tmp_path):
    dm = instantiate(compose_config([f"data={data}", f"paths.data_dir={tmp_path}"]).data)
    assert isinstance(dm, ImageDataModule) and dm.num_classes == 10
    expected_size = {"mnist_distorted": 42, "fashion_mnist_distorted": 42, "cifar10": 32}
    assert dm.image_size == expected_size.get(data, 28)


def test_cifar10_switches_to_the_cifar_layer_sizes():
    cfg = compose_config(["experiment=cifar10_stn"])
    net = instantiate(cfg.model, in_channels=3, image_size=32, num_classes=10)
    fc1 = net.classifier.head[1]
    assert (fc1.in_features, fc1.out_features) == (800, 1024)
    localiser = net.stns[0].localiser
    assert (localiser.fc[0].in_features, localiser.fc[0].out_features) == (2048, 256)
    assert localiser.features[0].out_channels == 64


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_optimizer_options_instantiate(optimizer):
    factory = instantiate(compose_config([f"optimizer={optimizer}"]).optimizer)
    assert isinstance(factory, functools.partial)
    assert isinstance(factory([torch.zeros(1, requires_grad=True)]), torch.optim.Optimizer)


@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_scheduler_options_instantiate(scheduler):
    # A scheduler may size itself from the run (trainer.estimated_stepping_batches), so it is
    # built by a real Trainer: three optimiser steps.
    cfg = compose_config([f"scheduler={scheduler}", "data=synthetic", "model=cnn"])
    assert cfg.scheduler.interval in ("epoch", "step")
    _, _, module = build(cfg)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)  # fmt: skip
    trainer.fit(module, datamodule=instantiate(cfg.data))
    (config,) = trainer.lr_scheduler_configs
    assert isinstance(config.scheduler, torch.optim.lr_scheduler.LRScheduler)
    assert config.interval == cfg.scheduler.interval


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options_instantiate(trainer):
    cfg = compose_config([f"trainer={trainer}"]).trainer
    assert (cfg.accelerator == "gpu") == trainer.startswith("gpu")
    if trainer.startswith("gpu") and not torch.cuda.is_available():
        with pytest.raises(InstantiationException, match="No supported gpu backend"):
            instantiate(cfg, logger=False)
    else:
        built = instantiate(cfg, logger=False)
        assert isinstance(built, L.Trainer)
        assert built.precision == str(cfg.get("precision", "32-true"))


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_options_instantiate(debug):
    cfg = compose_config([f"debug={debug}", "data=synthetic"])
    trainer = instantiate(cfg.trainer, logger=False)
    if debug == "fdr":
        assert trainer.fast_dev_run
    else:
        assert trainer.overfit_batches > 0


def test_paths_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STN_LAB_DATA", str(tmp_path / "d"))
    cfg = compose_config(["data=mnist"])
    assert cfg.paths.data_dir == str(tmp_path / "d") and cfg.data.data_dir == str(tmp_path / "d")


def test_run_directories_are_unique_per_job():
    # A timestamp alone collides for jobs started in the same second; a random suffix does not.
    hydra_cfg = compose_config(return_hydra_config=True).hydra
    assert re.fullmatch(r"logs/runs/[0-9_-]+_[0-9a-f]{6}", hydra_cfg.run.dir)
    assert re.fullmatch(r"logs/multiruns/[0-9_-]+_[0-9a-f]{6}", hydra_cfg.sweep.dir)
    assert OmegaConf.to_yaml(hydra_cfg).count("subdir: ${hydra.job.num}") == 1


def check_optimiser(module, cfg) -> None:
    """``configure_optimizers`` gives the config's optimiser over every network parameter once,
    the classifier's at ``optimizer.lr`` and the STNs' at that times ``model.stn.lr_mult``."""
    optimizer = module.configure_optimizers()
    assert type(optimizer).__name__ == cfg.optimizer._target_.rsplit(".", 1)[1]
    lr = cfg.optimizer.lr
    network = module.network
    expected = {id(p): lr for p in network.classifier.parameters()}
    if network.has_stn:
        expected |= {id(p): lr * cfg.model.stn.lr_mult for p in network.stns.parameters()}
    got = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert len(got) == sum(len(group["params"]) for group in optimizer.param_groups)  # once
    assert set(got) == {id(p) for p in network.parameters()} and got == pytest.approx(expected)


def test_build_seeds_before_building():
    cfg = compose_config(["data=synthetic"])
    first = build(cfg)[1].state_dict()
    second = build(cfg)[1].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


GROUPS = sorted(
    p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment")
)
ALL_OPTIONS = [(g, o) for g in GROUPS for o in options(g)]


@pytest.mark.parametrize("group, option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_of_every_group_builds_a_whole_run(group, option, tmp_path):
    defaults = {"data": "synthetic", "budget": "short"}  # tiny data; thirds needs a step budget
    defaults[group] = option
    overrides = [f"{g}={o}" for g, o in defaults.items()] + [f"paths.data_dir={tmp_path}"]
    cfg = compose_config(overrides)
    datamodule, network, module = build(cfg)
    size, channels = datamodule.image_size, datamodule.in_channels
    assert network(torch.rand(2, channels, size, size)).shape == (2, 10)
    if group != "scheduler":  # schedulers are built by a Trainer: test_scheduler_options_...
        check_optimiser(module, cfg)
    if not (group == "trainer" and option.startswith("gpu")):  # see test_trainer_options_...
        # (no GPU here: those Trainers fail to build, which that test checks)
        assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)
    cfg.paths.output_dir, cfg.paths.log_dir = str(tmp_path), str(tmp_path / "logs")
    callbacks = build_callbacks(cfg.callbacks)
    assert callbacks and all(isinstance(c, L.Callback) for c in callbacks)
    # Resolved first, as build_trainer does: the entries read ${paths.*}.
    loggers = build_loggers(OmegaConf.to_container(cfg.logger, resolve=True))
    assert loggers and all(isinstance(lg, Logger) for lg in loggers)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_builds(experiment):
    cfg = compose_config([f"experiment={experiment}", "data=synthetic"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params, "experiments are sweeps"
    module = build(cfg)[2]
    if cfg.get("scheduler") is None:  # else a Trainer builds it: test_scheduler_options_...
        check_optimiser(module, cfg)
