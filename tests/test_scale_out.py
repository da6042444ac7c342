"""Scale-out on existing engines: DDP, Hydra launchers, and the Docker image's install."""

from __future__ import annotations

import importlib.machinery
import importlib.util
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
    # The joblib extra is not in dev; CI installs it, and there this skip fails (the no-skip rule).
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    jobs = records(train_run, tmp_path, [
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=stn,cnn",
        "trainer.fast_dev_run=true",
    ])  # fmt: skip
    assert sorted(r["choices"]["model"] for r in jobs) == ["cnn", "stn"]


def test_slurm_launcher_is_available():
    # The slurm extra is not in dev; CI installs it, and there this skip fails (the no-skip rule).
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


@pytest.mark.slow
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


@pytest.mark.parametrize("choice", sorted(PLUGINS), ids="{0[0]}={0[1]}".format)
def test_every_plugin_choice_names_an_extra_the_package_declares(monkeypatch, choice):
    (group, option), (module, extra) = choice, PLUGINS[choice]
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is not in Python 3.10)
    assert f"\n{extra} = [" in pyproject  # an entry of [project.optional-dependencies]
    assert module.startswith("hydra_plugins."), choice
    overrides = [f"hydra/{group}={option}", "model=stn"]
    real = importlib.util.find_spec

    def find_spec(hidden: bool):  # the plugin's module hidden, or present, whatever is here
        present = importlib.machinery.ModuleSpec(module, None)
        return lambda name, *a: (None if hidden else present) if name == module else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec(hidden=True))
    assert missing_plugin(overrides) == (
        f"hydra/{group}={option} needs the {extra!r} extra: pip install -e '.[{extra}]'"
    )
    monkeypatch.setattr(importlib.util, "find_spec", find_spec(hidden=False))
    assert missing_plugin(overrides) is None


def test_choices_without_a_plugin_are_never_refused(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # nothing installed
    assert missing_plugin(["model=stn", "hydra.sweeper.n_trials=3", "hydra/launcher=basic"]) is None
    assert (ROOT / "conf/hydra/sweeper/tune_lr.yaml").exists()  # the project's own option


# ------------------------------------------------------------------ the no-skip rule
GENERATED = """
import pytest

def test_optional_engine():  # ray is in no extra CI installs: its skip stays a skip
    pytest.importorskip("hydra_plugins.hydra_ray_launcher_missing")

def test_dev_package():
    pytest.importorskip("statsmodels.no_such_module")

def test_other_reason():
    pytest.skip("glibc's mallopt (an enriched reason)")

@pytest.mark.skipif(True, reason="needs wandb")
def test_marked():
    pass

@pytest.mark.xfail(reason="wandb is flaky", run=False)
def test_expected_failure():
    pass
"""
MODULE_LEVEL = """
import pytest

pytest.importorskip("hydra_plugins.hydra_joblib_launcher.missing")

def test_never_collected():
    pass
"""


@pytest.mark.parametrize(
    "rule, outcomes",
    [
        ("", dict(skipped=5, xfailed=1)),  # no rule (a laptop's make test): skips stay skips
        # statsmodels (dev) fails; wandb's mark (at setup) and the joblib launcher (at
        # collection) are errors; ray's and glibc's skips stay skips.
        ("dev,joblib", dict(skipped=2, failed=1, errors=2, xfailed=1)),
    ],
)
def test_a_skip_for_a_package_the_run_installs_fails_under_the_rule(
    pytester, monkeypatch, rule, outcomes
):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_generated=GENERATED, test_module_level=MODULE_LEVEL)
    monkeypatch.setenv("STN_LAB_NO_SKIPS", rule)
    result = pytester.runpytest("-rs", "--continue-on-collection-errors")
    result.assert_outcomes(**outcomes)
    assert result.ret == (pytest.ExitCode.TESTS_FAILED if rule else pytest.ExitCode.OK)
    output = result.stdout.str()
    for name in ("statsmodels", "wandb", "hydra_plugins.hydra_joblib_launcher"):
        message = f"STN_LAB_NO_SKIPS=dev,joblib: this run must have {name!r}"
        assert (message in output) == bool(rule), name


def test_the_rule_covers_each_extra_and_refuses_one_not_installed(monkeypatch):
    from importlib import metadata

    from conftest import forbidden_skip, no_skip_names

    names = no_skip_names.__wrapped__("dev,optuna,arch")
    assert {"tensorboard", "mlflow", "wandb", "rich", "statsmodels", "rliable"} <= names
    assert "hydra_plugins.hydra_optuna_sweeper" in names and "arch" in names  # a plain name
    assert "optuna" in names  # the package the optuna extra is named after (a dependency)
    assert "hydra_plugins" not in names and "tests" not in names  # too broad to mean a package
    assert forbidden_skip("could not import 'mlflow.tracking': no", names) == "mlflow"
    assert forbidden_skip("could not import 'hydra_plugins.hydra_ray_launcher'", names) is None
    real = metadata.distribution
    monkeypatch.setattr(  # an install without the Optuna sweeper
        metadata, "distribution",
        lambda name: (_ for _ in ()).throw(metadata.PackageNotFoundError(name))
        if name == "hydra-optuna-sweeper" else real(name),
    )  # fmt: skip
    with pytest.raises(pytest.UsageError, match=r"not installed: hydra-optuna-sweeper \(extra"):
        no_skip_names.__wrapped__("dev,optuna")


def test_ci_forbids_skips_for_every_extra_it_installs():
    script = (ROOT / ".ci" / "run").read_text()
    extras = re.search(r"^EXTRAS=(\S+)$", script, re.MULTILINE).group(1).split(",")
    assert "dev" in extras and re.search(r"^make install EXTRAS=\$EXTRAS\b", script, re.M)
    rule = re.search(r'^export STN_LAB_NO_SKIPS="(\S+)"$', script, re.MULTILINE).group(1)
    assert rule.split(",")[0] == "$EXTRAS"  # every extra CI installs, then plain names
    # The rule is exported before the tests run, and both halves of the suite run.
    # Exported before both halves of the suite run, the fast half listing its slowest tests.
    commands = [line.split("#")[0].strip() for line in script.splitlines()]
    commands = [c for c in commands if c.startswith(("export", "make"))]
    assert [c.split(" ||")[0] for c in commands[-3:]] == [
        f'export STN_LAB_NO_SKIPS="{rule}"', 'make test PYTEST_ARGS="--durations=15"',
        "make test-slow",
    ]  # fmt: skip
