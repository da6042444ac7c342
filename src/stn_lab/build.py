"""Config -> DataModule, network, LightningModule and Trainer: the one place every entry point
(train, evaluate, bench) builds a run, so none of them imports another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from stn_lab.checkpointing import AtomicCheckpointIO
from stn_lab.instantiators import build_callbacks, build_plugins, refuse_reserved
from stn_lab.loggers import build_loggers


def resolved(cfg: DictConfig) -> dict:
    """The whole config with every interpolation resolved, without Hydra's own node."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return config


def build_datamodule(data: DictConfig) -> L.LightningDataModule:
    """The DataModule of a ``data`` config (its distortion built with it)."""
    return instantiate(data)


def build(cfg: DictConfig):
    """Seeded DataModule, network and LightningModule for ``cfg`` (no trainer)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data)
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
        inputs={"mean": list(datamodule.mean), "std": list(datamodule.std)},
    )
    return datamodule, module.network, module


def trainer_settings(cfg: DictConfig) -> dict:
    """``cfg.trainer`` as plain values, without the entries given the Trainer's own way
    (``+trainer.callbacks``, ``+trainer.logger``, ``+trainer.plugins``): what the run trains
    with, for the record and its debug flags."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in ("callbacks", "logger", "plugins"):
        settings.pop(key, None)
    return settings


def build_trainer(
    cfg: DictConfig,
    run_dir: str | Path | None = None,
    extra_callbacks: list[L.Callback] = (),
    **overrides: Any,
) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with the ``callbacks`` and ``logger`` groups' entries (and any
    given as ``trainer.callbacks``/``trainer.logger``/``trainer.plugins``) plus
    ``extra_callbacks``, writing checkpoints atomically, rooted at ``run_dir``. ``overrides``
    replace Trainer arguments; a ``callbacks`` or ``logger`` override also replaces the group's
    entries, which are then never built."""
    extra = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings = trainer_settings(cfg)
    refuse_reserved(settings)
    if "callbacks" not in overrides:
        overrides["callbacks"] = build_callbacks(cfg.get("callbacks"), extra.get("callbacks"))
    overrides["callbacks"] = [*overrides["callbacks"], *extra_callbacks]
    if "logger" not in overrides:
        resuming = bool(cfg.get("ckpt_path"))
        group = cfg.get("logger")  # resolved here: its entries read ${paths.*}
        group = OmegaConf.to_container(group, resolve=True) if group is not None else None
        loggers = build_loggers(group, extra.get("logger"), resuming)
        overrides["logger"] = loggers or False
    overrides.setdefault("plugins", [AtomicCheckpointIO(), *build_plugins(extra.get("plugins"))])
    if run_dir is not None:
        overrides.setdefault("default_root_dir", str(run_dir))
    return instantiate(settings, **overrides)


def scoring_trainer(accelerator: str | None = None) -> L.Trainer:
    """A quiet one-device Trainer that only scores (``evaluate`` and robustness curves), on
    Lightning's ``accelerator`` (``cpu``, ``gpu``, ``auto``; None: the CPU)."""
    return L.Trainer(
        accelerator=accelerator or "cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[],
    )  # fmt: skip
