"""Config -> DataModule, network and LightningModule: the one place every entry point (train,
evaluate, bench) builds a run, so none of them imports another."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


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
    scheduler = cfg.get("scheduler")
    module = instantiate(cfg.module)(
        network=network,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(scheduler, resolve=True) if scheduler else None,
        num_classes=datamodule.num_classes,
    )
    return datamodule, module.network, module
