"""Scale-out on existing engines: DDP, Hydra launchers, and the Docker image's install."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from stn_lab.config_path import compose_config

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["data.num_train=512", "data.num_test=256"]


def records(train_run, tmp_path: Path, args: list[str]) -> list[dict]:
    """Train on the sizes above (``train_run``'s tiny data); every metrics.json it wrote."""
    proc = train_run([*SIZES, *args])
    assert proc.returncode == 0, proc.stdout[-3000:]
    return [json.loads(p.read_text()) for p in sorted(tmp_path.glob("**/metrics.json"))]


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_matches_one_process(tmp_path, train_run):
    for folder, extra in (("one", []), ("ddp", ["trainer=ddp", "trainer.devices=2"])):
        records(train_run, tmp_path, [*extra, "trainer.max_epochs=4", f"hydra.run.dir={folder}"])
    single, ddp = (json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("one", "ddp"))
    # Two processes see the same epochs in half the steps (the global batch doubles), so allow
    # for noise; both must learn the easy synthetic classes.
    assert single["test"]["acc"] > 0.6 and ddp["test"]["acc"] > 0.6
    assert abs(single["test"]["acc"] - ddp["test"]["acc"]) < 0.2
    assert sum(map(sum, ddp["test"]["confusion_matrix"])) == 256  # every test image, once


@pytest.mark.slow
def test_ddp_on_three_processes_counts_every_test_image_once(tmp_path, train_run):
    # 100 test images do not split evenly 3 ways: a padded shard would count 102.
    (record,) = records(train_run, tmp_path, [
        "model=cnn", "trainer=ddp", "trainer.devices=3", "trainer.max_epochs=1",
        "data.num_train=96", "data.num_test=100",
    ])  # fmt: skip
    assert sum(map(sum, record["test"]["confusion_matrix"])) == 100


@pytest.mark.slow
def test_joblib_launcher_runs_sweep_jobs_in_parallel(tmp_path, train_run):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    jobs = records(train_run, tmp_path, [
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=stn,cnn",
        "trainer.fast_dev_run=true",
    ])  # fmt: skip
    assert sorted(r["choices"]["model"] for r in jobs) == ["cnn", "stn"]


def test_slurm_launcher_is_available():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    hydra = compose_config(["hydra/launcher=submitit_slurm"], return_hydra_config=True).hydra
    assert hydra.launcher._target_.endswith("SlurmLauncher")


def make_install_commands() -> list[str]:
    out = subprocess.run(["make", "-n", "install"], cwd=ROOT, capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def test_dockerfile_installs_with_the_makefile_commands():
    dockerfile = (ROOT / "Dockerfile").read_text()
    runs = re.findall(r"^RUN (.+)$", dockerfile, flags=re.MULTILINE)
    assert "make install" in runs  # the image runs exactly the Makefile's install recipe
    commands = make_install_commands()
    assert any(re.search(r"-m pip install -e '\.\[dev\]'", c) for c in commands), commands
    assert any("python3 -m venv .venv" in c for c in commands)
    python = re.search(r"^PY \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    assert f'ENTRYPOINT ["{python}", "-m", "stn_lab.train"]' in dockerfile
    copied = " ".join(re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.MULTILINE))
    assert all(name in copied for name in ("pyproject.toml", "src", "conf", "Makefile"))
