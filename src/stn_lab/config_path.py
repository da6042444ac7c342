"""Locates the Hydra ``conf/`` folder: inside the package for a wheel, the repo root otherwise."""

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "conf"
CONFIG_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "conf"
