"""Locates the Hydra ``conf/`` folder (inside the package for a wheel, the repo root otherwise)
and composes configs from it outside ``@hydra.main`` (tests, the benchmark, notebooks)."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

_PACKAGED = Path(__file__).resolve().parent / "conf"
CONFIG_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def compose_config(
    overrides: list[str] | None = None, return_hydra_config: bool = False
) -> DictConfig:
    """The composed ``config.yaml`` with ``overrides``, as ``python -m stn_lab.train`` sees it."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=overrides or [], return_hydra_config=return_hydra_config)
