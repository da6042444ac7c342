"""Scale-out on existing engines: DDP, Hydra launchers, and the Docker image's install."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stn_lab.config_path import compose_config
from stn_lab.plugin_extras import PLUGINS, missing_plugin

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


def test_a_missing_launcher_or_sweeper_plugin_is_one_line_naming_its_extra(tmp_path):
    # The Optuna plugin hidden from this process, as in an install without the extra.
    hide = (
        "import importlib.util as u, runpy, sys; real = u.find_spec; "
        "u.find_spec = lambda name, *a: None if 'optuna' in name else real(name, *a); "
        "sys.argv = ['stn_lab.train', '-m', 'hydra/sweeper=tune_lr', 'model=stn']; "
        "runpy.run_module('stn_lab.train', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", hide], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "error: hydra/sweeper=tune_lr needs the 'optuna' extra: pip install -e '.[optuna]'\n"
    )
    assert not (tmp_path / "logs").exists()  # refused before Hydra made a run folder


def test_every_plugin_choice_names_an_extra_the_package_declares():
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is not in Python 3.10)
    for (group, option), (module, extra) in PLUGINS.items():
        declared = f"\n{extra} = [" in pyproject  # an entry of [project.optional-dependencies]
        assert declared and module.startswith("hydra_plugins."), (group, option)
        assert missing_plugin([f"hydra/{group}={option}", "model=stn"]) in (
            None,  # installed here
            f"hydra/{group}={option} needs the {extra!r} extra: pip install -e '.[{extra}]'",
        )
    assert missing_plugin(["model=stn", "hydra.sweeper.n_trials=3"]) is None
    assert (ROOT / "conf/hydra/sweeper/tune_lr.yaml").exists()  # the project's own option
