"""What the README promises of ``python -m stn_lab.train``, through the real command line: one
line and exit 2 for what cannot run as asked, the defaults it documents, and a sweep's summary."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stn_lab.module import ClassifierModule


def one_line(result) -> str:
    """The run was refused in one ``error:`` line with exit 2, and left no run folder."""
    assert result.returncode == 2, result.stdout
    lines = [line for line in result.stdout.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stdout, result.stdout
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (["model=stnn"], "error: model=stnn is not an option of model: choose one of cnn, fcn, "
                         "st_fcn, stn"),
        (["-m", "trainer=gpu,gpuu"], "error: trainer=gpuu is not an option of trainer: choose "
                                     "one of cpu, ddp, default, gpu, gpu_bf16"),
        (["experiment=stn_vs_cnn"], "error: experiment=stn_vs_cnn is a sweep: run it with -m "
                                    "(python -m stn_lab.train -m experiment=stn_vs_cnn)"),
    ],
)  # fmt: skip
def test_a_command_hydra_would_not_run_as_asked_is_one_line(tmp_path, train_run, args, expected):
    assert one_line(train_run(args)) == expected
    assert not (tmp_path / "logs").exists()


#: Settings refused before anything is built: the overrides, and the one line that says why.
REFUSED_SETTINGS = [
    (["seed=-1"], "seed must be a whole number from 0 to 4294967295, got -1"),
    (["trainer.devices=3"], "trainer.devices=3 starts several processes: use trainer=ddp"),
    (["+trainer.max_epoch=1"],
     "trainer.max_epoch is not a Lightning Trainer argument (did you mean trainer.max_epochs?)"),
    (["callbacks=[default,early_stopping]", "callbacks.early_stopping.monitor=val/accuracy"],
     "callbacks.early_stopping.monitor=val/accuracy is never logged: monitor one of "
     + ", ".join(ClassifierModule.LOGGED)),
]  # fmt: skip
REFUSED_IDS = ["seed", "devices", "typo", "monitor"]


@pytest.mark.parametrize("args, expected", REFUSED_SETTINGS, ids=REFUSED_IDS)
@pytest.mark.slow
def test_settings_that_cannot_train_as_asked_are_one_line(tmp_path, train_run, args, expected):
    run = tmp_path / "run"
    line = one_line(train_run([*args, f"hydra.run.dir={run}"]))
    assert line.endswith(f"error: {expected}") or f"error: {expected}" in line, line
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "failed" and expected in record["error"]  # the cause is kept


@pytest.mark.slow
def test_a_sweep_with_failed_jobs_exits_1_and_says_which(tmp_path, train_run):
    """Offline without MNIST every job fails: the sweep says so in one line and exits 1."""
    result = train_run(["-m", "model=cnn,fcn", "data=mnist", "data.download=false",
                        f"paths.data_dir={tmp_path / 'empty'}"])  # fmt: skip
    assert result.returncode == 1, result.stdout
    (summary,) = [line for line in result.stdout.splitlines() if "sweep: " in line]
    assert re.search(r"sweep: 2 jobs: 0 completed, 2 failed \(jobs 0, 1\) in .*multiruns", summary)


@pytest.mark.slow
def test_a_rerun_of_a_sweep_with_other_settings_keeps_its_multirun_yaml(tmp_path, train_run):
    sweep = tmp_path / "sweep"
    first = train_run(["-m", "model=cnn", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"])
    assert first.returncode == 0, first.stdout
    kept = (sweep / "multirun.yaml").read_bytes()
    again = train_run(["-m", "model=cnn", "trainer.max_epochs=1", "optimizer.lr=0.01",
                       f"hydra.sweep.dir={sweep}"])  # fmt: skip
    assert again.returncode == 1, again.stdout
    assert "sweep: 1 job: 0 completed, 0 failed, 1 refused (jobs 0)" in again.stdout
    assert (sweep / "multirun.yaml").read_bytes() == kept


@pytest.mark.slow
def test_an_epoch_that_did_not_validate_says_n_a(tmp_path, train_run):
    result = train_run(["model=cnn", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2",
                        f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    assert result.returncode == 0, result.stdout
    lines = [line for line in result.stdout.splitlines() if re.search(r"epoch \d/3 \|", line)]
    assert len(lines) == 3
    assert "val loss n/a | val acc n/a |" in lines[0] and "val loss n/a" in lines[2]
    assert re.search(r"val acc \d+\.\d\d% \|", lines[1])


@pytest.mark.slow
def test_mixed_precision_with_clipping_trains_with_an_unfused_optimiser(tmp_path, train_run):
    run = tmp_path / "run"
    result = train_run(["model=cnn", "trainer.precision=bf16-mixed",
                        "trainer.gradient_clip_val=1.0", "trainer.max_steps=3",
                        f"hydra.run.dir={run}"])  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "optimizer.fused=false: Lightning cannot clip" in result.stdout
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed" and record["config"]["optimizer"]["fused"] is False


@pytest.mark.slow
def test_data_is_read_from_one_user_cache_by_default(tmp_path, train_run, make_idx_dataset):
    home = tmp_path / "home"
    make_idx_dataset(home / ".cache" / "stn_lab" / "MNIST" / "raw")
    env = {"HOME": str(home), "STN_LAB_DATA": "", "XDG_CACHE_HOME": ""}
    result = train_run(["data=mnist", "data.download=false", "data.val_size=20", "model=cnn",
                        "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}"],
                       env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert f"mnist: reading {home / '.cache' / 'stn_lab' / 'MNIST' / 'raw'}" in result.stdout
    assert not (tmp_path / "data").exists()
    xdg = tmp_path / "xdg"
    make_idx_dataset(xdg / "stn_lab" / "MNIST" / "raw")
    result = train_run(["data=mnist", "data.download=false", "data.val_size=20", "model=cnn",
                        "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run2'}"],
                       env={**env, "XDG_CACHE_HOME": str(xdg)})  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert f"mnist: reading {xdg / 'stn_lab' / 'MNIST' / 'raw'}" in result.stdout


@pytest.mark.slow
def test_a_resume_may_leave_out_a_setting_that_equals_lightnings_default(tmp_path, train_run):
    run = tmp_path / "run"
    args = ["model=cnn", f"hydra.run.dir={run}"]
    first = train_run([*args, "trainer.max_epochs=1", "trainer.limit_train_batches=1.0"])
    assert first.returncode == 0, first.stdout
    resumed = train_run([*args, "trainer.max_epochs=2", "ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stdout
    record = json.loads((run / "metrics.json").read_text())
    assert record["epochs"] == 2 and record["resumes"][0]["changed"] == {
        "trainer.max_epochs": [1, 2]
    }


def test_refusals_before_hydra_composes_the_command_line():
    """The same checks in-process (the slow test above runs them through the real command)."""
    from stn_lab.command_line import command_refusal

    assert command_refusal(["model=stn", "seed=1"]) is None
    assert command_refusal(["-m", "model=cnn,stn", "experiment=stn_vs_cnn"]) is None
    assert command_refusal(["-m", "model=cnn,stnn"]) == (
        "model=stnn is not an option of model: choose one of cnn, fcn, st_fcn, stn"
    )
    assert command_refusal(["+experiment=stn_vs_cnn"]).startswith(
        "+experiment=stn_vs_cnn is a sweep: run it with -m"
    )
    assert command_refusal(["optimizer.lr=0.1", "hydra/launcher=basic"]) is None


@pytest.mark.parametrize(
    "env, expected",
    [  # (STN_LAB_DATA, XDG_CACHE_HOME); None: unset. An empty variable counts as unset (XDG).
        ((None, "xdg"), "xdg/stn_lab"),
        ((None, None), "home/.cache/stn_lab"),
        ((None, ""), "home/.cache/stn_lab"),
        (("", ""), "home/.cache/stn_lab"),
        (("mine", "xdg"), "mine"),
    ],
)
def test_the_user_cache_is_where_the_default_paths_point(monkeypatch, tmp_path, env, expected):
    from stn_lab.config_path import compose_config
    from stn_lab.data.sources import default_data_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in zip(["STN_LAB_DATA", "XDG_CACHE_HOME"], env, strict=True):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(tmp_path / value) if value else "")
    assert default_data_dir() == tmp_path / expected
    cfg = compose_config(["data=mnist"])
    assert Path(cfg.paths.data_dir) == Path(cfg.data.data_dir) == tmp_path / expected


@pytest.mark.parametrize(
    "script, first_line",
    [
        ("stn-train", "stn-train (python -m stn_lab.train): train one classifier, with or"),
        ("stn-evaluate", "python -m stn_lab.evaluate: score a trained checkpoint."),
        ("stn-compare", "usage: stn-compare [-h]"),
    ],
)
@pytest.mark.slow
def test_console_scripts_run_the_apps_and_explain_them(tmp_path, script, first_line):
    """``pip install -e .`` puts the three apps beside the interpreter; ``--help`` opens with a
    description of the app."""
    path = Path(sys.executable).parent / script
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(first_line)
    if script == "stn-compare":  # argparse: the usage line, then the description
        assert "\n\nAggregate finished runs over seeds, tabulate them" in result.stdout


@pytest.mark.slow
def test_stn_train_offers_hydra_tab_completion(tmp_path):
    path = Path(sys.executable).parent / "stn-train"
    result = subprocess.run([str(path), "-sc", "install=bash"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hydra_bash_completion" in result.stdout and "stn-train" in result.stdout


@pytest.mark.parametrize(
    "args, gpus, refused",
    [
        (["trainer.devices=auto"], 4, True),  # accelerator auto: Lightning takes all 4 GPUs
        (["trainer=gpu", "trainer.devices=auto"], 2, True),
        (["trainer=gpu", "trainer.devices=auto"], 1, False),
        (["trainer=cpu", "trainer.devices=auto"], 4, False),  # one CPU process
        (["trainer=ddp", "trainer.devices=auto"], 4, False),  # ddp shards every split
    ],
)
def test_devices_auto_counts_the_gpus_lightning_would_take(monkeypatch, args, gpus, refused):
    from lightning.pytorch.accelerators import CUDAAccelerator

    from stn_lab.config_path import compose_config
    from stn_lab.errors import ConfigError
    from stn_lab.settings import check_processes

    monkeypatch.setattr(CUDAAccelerator, "auto_device_count", staticmethod(lambda: gpus))
    trainer = compose_config(args).trainer
    if refused:
        with pytest.raises(ConfigError, match="trainer.devices=auto starts several processes"):
            check_processes(trainer)
    else:
        check_processes(trainer)


@pytest.mark.parametrize(
    "statuses, line",
    [
        (["completed", "skipped"], "2 jobs: 1 completed, 1 skipped, 0 failed in {}"),
        (["failed"], "1 job: 0 completed, 1 failed (jobs 0) in {}"),
        (
            ["completed", "refused", "failed"],
            "3 jobs: 1 completed, 1 failed, 1 refused (jobs 1, 2) in {}",
        ),
    ],
)
def test_a_sweep_ends_with_one_line_counting_completed_and_failed_jobs(
    tmp_path, caplog, monkeypatch, statuses, line
):
    from omegaconf import OmegaConf

    from stn_lab import sweep_summary

    monkeypatch.setattr(sweep_summary, "FAILED_JOBS", [])
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    summary = sweep_summary.SweepSummary()
    summary.on_multirun_start(config)
    for num, status in enumerate(statuses):
        sweep_summary.note_outcome(tmp_path, num, tmp_path / str(num), status)
    caplog.set_level("INFO", logger="stn_lab")
    summary.on_multirun_end(config)
    assert [r.getMessage() for r in caplog.records] == [f"sweep: {line.format(tmp_path)}"]
    bad = [str(tmp_path / str(n)) for n, s in enumerate(statuses) if s in ("failed", "refused")]
    assert sweep_summary.FAILED_JOBS == bad


@pytest.mark.parametrize(
    "args, refused",
    [
        (["seed=4294967295"], None),  # numpy's and Lightning's largest seed
        (["seed=4294967296"], "seed must be a whole number from 0 to 4294967295"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing"),
        (["trainer.max_epochs=0", "trainer.max_steps=5"], None),  # a step budget trains
        (["trainer.devices=2", "+trainer.num_nodes=2"], "starts several processes"),
    ],
)
def test_settings_at_their_edges(tmp_path, args, refused):
    """Each edge worked by hand from what Lightning and numpy accept."""
    from stn_lab.config_path import compose_config
    from stn_lab.errors import UserError
    from stn_lab.settings import process_count, settle

    cfg = compose_config(["data=synthetic", "model=cnn", *args])
    if refused is None:
        settle(cfg)
    else:
        with pytest.raises(UserError, match=refused):
            settle(cfg)
    if "+trainer.num_nodes=2" in args:
        assert process_count(cfg.trainer) == 4


@pytest.mark.parametrize("clip, fused", [(0, True), (0.0, True), (None, True), (0.5, False)])
def test_only_real_clipping_unfuses_the_optimiser_under_mixed_precision(clip, fused):
    from stn_lab.config_path import compose_config
    from stn_lab.settings import adapt_optimizer

    clip_value = "null" if clip is None else clip
    cfg = compose_config(["model=cnn", "trainer.precision=bf16-mixed", "optimizer.fused=true",
                          f"trainer.gradient_clip_val={clip_value}"])  # fmt: skip
    adapt_optimizer(cfg)
    assert cfg.optimizer.fused is fused
