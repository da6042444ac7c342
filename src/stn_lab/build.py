"""Config -> DataModule, network and LightningModule: the one place every entry point (train,
evaluate, bench) builds a run, so none of them imports another."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from stn_lab.module import ClassifierModule


def resolved(cfg: DictConfig) -> dict:
    """The whole config with every interpolation resolved, without Hydra's own node."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return config


def build(cfg: DictConfig):
    """Seeded DataModule, network and LightningModule for ``cfg`` (no trainer)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    network = OmegaConf.to_container(cfg.model, resolve=True)
    network.update(
        in_channels=datamodule.in_channels,
        image_size=datamodule.image_size,
        num_classes=datamodule.num_classes,
    )
    module = ClassifierModule(
        network=network,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True)
        if cfg.get("scheduler")
        else None,
        num_classes=datamodule.num_classes,
        on_fault=cfg.faults.on_fault,
        degenerate_fraction=cfg.faults.degenerate_fraction,
        channels_last=cfg.get("channels_last", False),
    )
    return datamodule, module.network, module
