"""Shared test helpers: compose Hydra configs, and write small datasets in the real file formats."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stn_lab.config_path import compose_config as compose_cfg  # noqa: F401 (used by the tests)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, exactly as the MNIST distribution does."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.tobytes())


def make_idx_dataset(folder: Path, n_train: int = 120, n_test: int = 40, size: int = 28, seed=0):
    """Four IDX files (train/test images and labels) with random pixels and balanced labels."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, size, size)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return folder


def make_cifar_dataset(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """``cifar-10-batches-py`` with five train batches and a test batch of ``per_batch`` images."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    return folder


@pytest.fixture
def quiet_trainer_overrides() -> list[str]:
    return ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


#: Overrides that make a training run tiny and quiet (synthetic data, no progress bar).
TINY_RUN = [
    "data=synthetic", "data.num_train=256", "data.num_test=64",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
]  # fmt: skip


@pytest.fixture
def train_cli(tmp_path):
    """``start(args)``: ``python -m stn_lab.train`` on tiny data in ``tmp_path`` (runs under
    ``tmp_path/logs``), as a ``Popen`` with stdout and stderr merged; Hydra's flags (``-m``) go
    before the overrides."""

    def start(args: list[str], **kwargs) -> subprocess.Popen:
        env = {**os.environ, "STN_LAB_LOGS": str(tmp_path / "logs"), "PYTHONUNBUFFERED": "1"}
        flags = [a for a in args if a.startswith("-")]
        overrides = [*TINY_RUN, *(a for a in args if a not in flags)]
        return subprocess.Popen(
            [sys.executable, "-m", "stn_lab.train", *flags, *overrides], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs,
        )  # fmt: skip

    return start
