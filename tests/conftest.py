"""Shared test fixtures: small datasets written in the real file formats, and the training
command line on tiny data."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, exactly as the MNIST distribution does."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.tobytes())


def _make_idx_dataset(folder: Path, n_train: int = 120, n_test: int = 40, size: int = 28, seed=0):
    """Four IDX files (train/test images and labels) with random pixels and balanced labels."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, size, size)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return folder


def _make_cifar_dataset(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
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
def write_idx():
    """``write_idx(path, array)``: one IDX file."""
    return _write_idx


@pytest.fixture
def make_idx_dataset():
    """``make_idx_dataset(folder, n_train, n_test, size, seed)``: the four MNIST IDX files."""
    return _make_idx_dataset


@pytest.fixture
def make_cifar_dataset():
    """``make_cifar_dataset(root, per_batch, seed)``: ``cifar-10-batches-py`` pickles."""
    return _make_cifar_dataset


#: Overrides that make a training run tiny and quiet (synthetic data, no progress bar).
_TINY_RUN = [
    "data=synthetic", "data.num_train=256", "data.num_test=64",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
]  # fmt: skip


@pytest.fixture
def tiny_run() -> list[str]:
    """Overrides for a tiny, quiet training run on synthetic data."""
    return list(_TINY_RUN)


@pytest.fixture
def train_cli(tmp_path):
    """``start(args)``: ``python -m stn_lab.train`` in ``tmp_path`` (runs under
    ``tmp_path/logs``), as a ``Popen`` with stdout and stderr merged. The tiny-run overrides
    come first, less those whose group ``args`` choose (``data=mnist`` drops ``data.*``);
    Hydra's flags (``-m``) go before the overrides."""

    def start(args: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
        env = {
            **os.environ, "STN_LAB_LOGS": str(tmp_path / "logs"), "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }  # fmt: skip
        flags = [a for a in args if a.startswith("-")]
        chosen = {a.split("=")[0] for a in args if "=" in a}
        tiny = [o for o in _TINY_RUN if o.split("=")[0].split(".")[0] not in chosen]
        return subprocess.Popen(
            [sys.executable, "-m", "stn_lab.train", *flags, *tiny,
             *(a for a in args if a not in flags)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            **kwargs,
        )  # fmt: skip

    return start


@pytest.fixture
def train_run(train_cli):
    """``run(args)``: :func:`train_cli` run to its end, as a ``CompletedProcess`` whose
    ``stdout`` holds the merged output."""

    def run(args: list[str], timeout: int = 600, env: dict | None = None):
        proc = train_cli(args, env=env)
        output = proc.communicate(timeout=timeout)[0]
        return subprocess.CompletedProcess(proc.args, proc.returncode, output, "")

    return run
