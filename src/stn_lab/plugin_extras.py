"""Hydra launcher and sweeper choices that need an optional extra.

``hydra/sweeper=tune_lr`` or ``hydra/launcher=joblib`` without its plugin installed fails inside
Hydra's config composition, before stn_lab runs, with "Could not load 'hydra/sweeper/optuna'"
and a list of what is installed. The train entry point reads those overrides first and refuses
a choice whose plugin is missing in one line that names the extra to install.
"""

from __future__ import annotations

import importlib.util
import re

#: option of ``hydra/launcher`` or ``hydra/sweeper`` -> (the plugin's module, the pip extra).
PLUGINS = {
    ("launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    ("launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("launcher", "ray"): ("hydra_plugins.hydra_ray_launcher", "ray"),
    ("launcher", "ray_aws"): ("hydra_plugins.hydra_ray_launcher", "ray"),
    ("sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("sweeper", "tune_lr"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),  # conf/hydra/sweeper
}
_CHOICE = re.compile(r"^\+{0,2}hydra/(launcher|sweeper)=(\w+)$")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # not even the hydra_plugins namespace
        return False


def missing_plugin(overrides: list[str]) -> str | None:
    """The one-line refusal for the first launcher or sweeper choice in ``overrides`` (command
    line arguments) whose plugin is not installed, or ``None``."""
    for override in overrides:
        match = _CHOICE.match(override)
        module, extra = PLUGINS.get(match.groups(), (None, None)) if match else (None, None)
        if module is not None and not _installed(module):
            return f"{override} needs the {extra!r} extra: pip install -e '.[{extra}]'"
    return None
