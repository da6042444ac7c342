"""The settings a run may train with: what Lightning and torch would only reject mid-run (with a
traceback), or accept and then do something else than asked, is refused here in one line before
anything is built. One combination is adapted rather than refused, and the log says so."""

from __future__ import annotations

import difflib
import inspect
import logging
import re

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator
from omegaconf import DictConfig, open_dict

from stn_lab.errors import ConfigError, UserError
from stn_lab.module import ClassifierModule

log = logging.getLogger("stn_lab")

SEED_RANGE = (0, 2**32 - 1)  # what numpy's and Lightning's seeding accept
MIXED_PRECISION = ("16-mixed", "bf16-mixed", "16", "bf16")
#: trainer.* entries that are stn_lab's, not Trainer arguments.
NOT_TRAINER_ARGS = ("_target_", "callbacks", "logger", "plugins")


def settle(cfg: DictConfig) -> None:
    """Check ``cfg``'s settings, refusing in one line what cannot train as asked; adapt the
    optimiser when mixed precision and gradient clipping are asked for together."""
    trainer = cfg.trainer
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if epochs == 0 and not (steps and steps > 0):
        raise UserError(
            "trainer.max_epochs=0 trains nothing: give max_epochs >= 1 "
            "(or max_epochs=-1 with trainer.max_steps > 0)"
        )
    seed = cfg.get("seed")
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        raise ConfigError(f"seed must be a whole number from {low} to {high}, got {seed!r}")
    check_trainer_arguments(trainer)
    check_processes(trainer)
    check_monitors(cfg)
    adapt_optimizer(cfg)


def check_trainer_arguments(trainer: DictConfig) -> None:
    """Every ``trainer.<key>`` must be a ``lightning.Trainer`` argument (a typo such as
    ``+trainer.max_epoch=1`` names the argument it was probably meant to be)."""
    known = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    for key in trainer:
        if key in known or key in NOT_TRAINER_ARGS:
            continue
        near = difflib.get_close_matches(str(key), sorted(known), n=1)
        hint = f" (did you mean trainer.{near[0]}?)" if near else ""
        raise ConfigError(f"trainer.{key} is not a Lightning Trainer argument{hint}")


def process_count(trainer: DictConfig) -> int | None:
    """How many processes ``trainer.devices`` and ``trainer.num_nodes`` start (None: one per
    device Lightning finds, ``devices=-1``)."""
    devices = trainer.get("devices", 1)
    if devices in (-1, "-1"):
        return None
    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else devices
        devices = auto_devices(trainer.get("accelerator", "auto")) if devices == "auto" else devices
    if isinstance(devices, str):
        devices = int(devices) if devices.isdigit() else 1
    count = len(devices) if not isinstance(devices, int) else devices
    return count * int(trainer.get("num_nodes") or 1)


def auto_devices(accelerator) -> int:
    """The devices ``devices=auto`` takes, as Lightning counts them: every CUDA GPU where the
    accelerator is or may be one, else one."""
    if str(accelerator) in ("gpu", "cuda", "auto"):
        return max(CUDAAccelerator.auto_device_count(), 1)
    return 1


def check_processes(trainer: DictConfig) -> None:
    """Several processes only with ``trainer=ddp``, whose data shards count every image once
    (Lightning's own sampler would leave each process a part of every split)."""
    count = process_count(trainer)
    if (count is None or count > 1) and trainer.get("use_distributed_sampler", True) is not False:
        asked = f"trainer.devices={trainer.get('devices')}"
        raise ConfigError(
            f"{asked} starts several processes: use trainer=ddp ({asked} trainer=ddp), which "
            "shards every split so that each image counts once"
        )


def monitored(cfg: DictConfig) -> dict[str, str]:
    """``{where: key}`` for every callback config that monitors a logged key."""
    found = {}
    for name, entry in (cfg.get("callbacks") or {}).items():
        if entry is not None and entry.get("monitor") is not None:
            found[f"callbacks.{name}.monitor"] = entry.monitor
    extra = cfg.trainer.get("callbacks") or []
    for i, entry in enumerate([extra] if isinstance(extra, DictConfig) else extra):
        if isinstance(entry, DictConfig) and entry.get("monitor") is not None:
            found[f"trainer.callbacks[{i}].monitor"] = entry.monitor
    return found


def check_monitors(cfg: DictConfig) -> None:
    """A callback that monitors a key the module never logs would stop the run mid-fit."""
    patterns = [re.escape(k).replace(re.escape("<k>"), r"\d+") for k in ClassifierModule.LOGGED]
    for where, key in monitored(cfg).items():
        if not any(re.fullmatch(p, str(key)) for p in [*patterns, r"lr-.*"]):
            raise ConfigError(
                f"{where}={key} is never logged: monitor one of "
                f"{', '.join(ClassifierModule.LOGGED)} (or lr-* with callbacks=lr_monitor)"
            )


def adapt_optimizer(cfg: DictConfig) -> None:
    """Lightning cannot clip the gradients of a fused optimiser under mixed precision: with both
    asked for, the optimiser runs unfused (the record says ``optimizer.fused: false``)."""
    precision = str(cfg.trainer.get("precision"))
    clipping = cfg.trainer.get("gradient_clip_val") not in (None, 0, 0.0)
    if precision in MIXED_PRECISION and clipping and cfg.optimizer.get("fused"):
        with open_dict(cfg):
            cfg.optimizer.fused = False
        log.info(
            "optimizer.fused=false: Lightning cannot clip a fused optimiser's gradients under "
            "trainer.precision=%s",
            precision,
        )
