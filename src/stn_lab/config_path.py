"""Locates the Hydra ``conf/`` folder (inside the package for a wheel, the repo root otherwise)
and composes configs from it outside ``@hydra.main`` (tests, the benchmark, notebooks)."""

import uuid
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

_PACKAGED = Path(__file__).resolve().parent / "conf"
CONFIG_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def register_resolvers() -> None:
    """``${run_id:}``: a short random id, so run folders of jobs started in the same second
    never collide; ``${data_cache:}``: where datasets live unless told otherwise
    (:func:`stn_lab.data.sources.default_data_dir`: an empty ``$XDG_CACHE_HOME`` counts as
    unset there, as the XDG rules say, where ``oc.env`` would give ``/stn_lab``). Registered
    once, by the entry point (or :func:`compose_config`)."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: uuid.uuid4().hex[:6], use_cache=True)
    if not OmegaConf.has_resolver("data_cache"):
        OmegaConf.register_new_resolver("data_cache", _data_cache)


def _data_cache() -> str:
    from stn_lab.data.sources import default_data_dir  # torch: only when a config asks

    return str(default_data_dir())


def compose_config(
    overrides: list[str] | None = None, return_hydra_config: bool = False
) -> DictConfig:
    """The composed ``config.yaml`` with ``overrides``, as ``python -m stn_lab.train`` sees it."""
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=overrides or [], return_hydra_config=return_hydra_config)
