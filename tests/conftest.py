"""Shared test fixtures: small datasets written in the real file formats, and the training
command line on tiny data; and the no-skip rule (``STN_LAB_NO_SKIPS``, see docs/testing.md)."""

from __future__ import annotations

import functools
import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["pytester"]  # the no-skip rule is tested on generated test files


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


# ------------------------------------------------------------------ the no-skip rule
#: Comma-separated extras of stn_lab (``dev,joblib``) and import names (``arch``). A test that
#: skips for a package they install fails instead: CI installs them, so such a skip means a
#: broken install or a broken import, never an optional package that is absent.
NO_SKIPS = "STN_LAB_NO_SKIPS"
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
#: Names that some distributions install but that say nothing in a skip's reason (a stray
#: top-level ``tests`` package, pytest itself and its ``py`` shim).
_GENERIC = {"tests", "test", "docs", "examples", "py", "pytest", "_pytest"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extra_distributions(extra: str, requires: list[str], seen: set[str]) -> set[str]:
    """The distributions that ``pip install stn_lab[extra]`` adds (``stn_lab[...]`` followed)."""
    from packaging.requirements import Requirement

    seen.add(extra)
    found = set()
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker is None or not requirement.marker.evaluate({"extra": extra}):
            continue  # a base dependency, or another extra's
        if _normalise(requirement.name) == "stn-lab":
            for inner in requirement.extras - seen:
                found |= _extra_distributions(inner, requires, seen)
        else:
            found.add(requirement.name)
    return found


def _import_names(distribution) -> set[str]:
    """The top-level modules a distribution installs (``mlflow`` for ``mlflow-skinny``); in a
    namespace package the next level (``hydra_plugins.hydra_joblib_launcher``)."""
    names = {_normalise(distribution.metadata["Name"]).replace("-", "_")}
    files = {f.as_posix() for f in distribution.files or []}
    for path in files:
        parts = path.split("/")
        top = parts[0]
        if top in ("..", "__pycache__") or top.endswith((".dist-info", ".egg-info", ".data")):
            continue
        if len(parts) == 1:
            if top.endswith((".py", ".so", ".pyd")):
                names.add(top.split(".")[0])
        elif f"{top}/__init__.py" in files:
            names.add(top)
        elif len(parts) > 2 or parts[1].endswith(".py"):  # a namespace package's module
            names.add(f"{top}.{parts[1].split('.')[0]}")
    return names


@functools.cache
def no_skip_names(value: str) -> frozenset[str]:
    """The import names a ``STN_LAB_NO_SKIPS`` value protects: each extra's distributions'
    modules (and the package an extra is named after, if installed), and each other entry as it
    is. An extra whose distribution is not installed is a usage error: the run could not honour
    the rule."""
    from importlib import metadata

    requires = metadata.distribution("stn_lab").requires or []
    extras = set(metadata.distribution("stn_lab").metadata.get_all("Provides-Extra") or [])
    names, missing = set(), []
    for entry in filter(None, (e.strip() for e in value.split(","))):
        if entry not in extras:
            names.add(entry)
            continue
        for name in sorted(_extra_distributions(entry, requires, set())):
            try:
                names |= _import_names(metadata.distribution(name))
            except metadata.PackageNotFoundError:
                missing.append(f"{name} (extra {entry!r})")
        try:  # an extra named after a package installs it (optuna, through its Hydra plugin)
            names |= _import_names(metadata.distribution(entry))
        except metadata.PackageNotFoundError:
            pass
    if missing:
        raise pytest.UsageError(f"{NO_SKIPS}={value}: not installed: {', '.join(missing)}")
    return frozenset(names - _GENERIC)


def forbidden_skip(reason: str, names: frozenset[str]) -> str | None:
    """The first protected name that ``reason`` mentions (``statsmodels`` in ``could not
    import 'statsmodels.stats.power'``), or None. Whole dotted names only: ``rich`` is not in
    ``enriched``, nor ``hydra_plugins.hydra_ray_launcher`` in ``hydra_plugins.hydra_joblib_...``."""
    for token in _DOTTED.findall(reason):
        parts = token.split(".")
        for end in range(1, len(parts) + 1):
            if ".".join(parts[:end]) in names:
                return ".".join(parts[:end])
    return None


def _fail_forbidden_skip(report) -> None:
    value = os.environ.get(NO_SKIPS, "")
    if not value or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    name = forbidden_skip(reason, no_skip_names(value))
    if name is not None:
        report.outcome = "failed"
        report.longrepr = (
            f"{reason}\n{NO_SKIPS}={value}: this run must have {name!r}, so this test may "
            "not skip for it (a broken install or import?)"
        )


def pytest_configure(config):
    if os.environ.get(NO_SKIPS):
        no_skip_names(os.environ[NO_SKIPS])  # an impossible rule fails before any test runs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_forbidden_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level importorskip skips the whole file here
    _fail_forbidden_skip(outcome.get_result())
