"""What a run records is what trained: folders of finished runs are never rewritten with other
settings, resumes keep their history, checkpoints are atomic and ``last.ckpt`` is the newest
model, signals leave a resumable run, and bad settings end with one line (issue: runs you can
trust). Each test runs the real command line on tiny synthetic data."""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from stn_lab.config_path import compose_config
from stn_lab.record import RESERVE_BYTES


def finish(proc, timeout: int = 300) -> str:
    return proc.communicate(timeout=timeout)[0]


def record(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "error:" in line or "Error" in line]


def one_line_error(proc, output: str, *expected: str) -> None:
    """Exit 2, no traceback, and one error line holding every ``expected`` text."""
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    (line,) = error_lines(output)
    assert all(text in line for text in expected), line


@pytest.mark.slow
def test_rerun_with_other_settings_into_a_completed_folder_is_refused(train_cli, tmp_path):
    args = ["trainer.max_epochs=1", "hydra.run.dir=run"]
    assert train_cli(args).wait(timeout=300) == 0
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in [run / "metrics.json", *run.glob(".hydra/*.yaml")]}
    proc = train_cli([*args, "optimizer.lr=0.5"])
    output = finish(proc)
    one_line_error(proc, output, "holds a completed run with other settings", "optimizer.lr")
    after = {p.name: p.read_bytes() for p in [run / "metrics.json", *run.glob(".hydra/*.yaml")]}
    assert after == before  # the record and the Hydra files say what trained
    same = train_cli(args)  # the very same job is skipped
    assert "already completed" in finish(same) and same.returncode == 0


@pytest.mark.parametrize(
    "scheduler, refused",
    [(["scheduler=cosine"], "T_max"), (["scheduler=thirds"], "total_steps"),
     (["scheduler=cosine", "scheduler.scheduler.T_max=50"], None), (["scheduler=step"], None),
     ([], None)],
)  # fmt: skip
def test_a_resume_may_not_change_the_length_of_a_schedule_fitted_to_it(
    tmp_path, tiny_run, scheduler, refused
):
    """Lengthening a cosine run whose T_max was its length keeps the old T_max (the scheduler's
    state holds it): measured, its rate climbs back to the start by the new end. Refused; a
    schedule of fixed length, or none, continues."""
    from stn_lab.config_path import compose_config
    from stn_lab.errors import UserError
    from stn_lab.train import check_resume, compose

    def config(epochs: int) -> dict:
        overrides = [*tiny_run, "model=cnn", *scheduler, f"trainer.max_epochs={epochs}"]
        return compose(compose_config(overrides), tmp_path)

    last = tmp_path / "last.ckpt"
    if refused is None:
        assert check_resume(last, {"config": config(1)}, config(2)) == {
            "trainer.max_epochs": (1, 2)
        }
    else:
        with pytest.raises(UserError, match=rf"the scheduler's {refused} is the run's length"):
            check_resume(last, {"config": config(1)}, config(2))
    assert check_resume(last, {"config": config(1)}, config(1)) == {}  # an interrupted run resumes


@pytest.mark.slow
def test_resume_with_a_changed_hyperparameter_is_refused(train_cli, tmp_path):
    args = ["trainer.max_epochs=1", "hydra.run.dir=run", "checkpoint_every_n_steps=1"]
    assert train_cli([*args, "trainer.max_steps=2"]).wait(timeout=300) == 0
    (tmp_path / "run" / "metrics.json").unlink()  # as if it had been killed after step 2
    proc = train_cli([*args, "ckpt_path=last", "optimizer.lr=1e6"])
    one_line_error(proc, finish(proc), "cannot resume", "optimizer.lr: 0.001 -> 1000000.0")


@pytest.mark.slow
def test_a_completed_run_trains_on_and_keeps_its_history(train_cli, tmp_path):
    args = ["hydra.run.dir=run", "checkpoint_every_n_steps=0"]
    assert train_cli([*args, "trainer.max_epochs=1"]).wait(timeout=300) == 0
    proc = train_cli([*args, "trainer.max_epochs=3", "ckpt_path=last"])
    output = finish(proc)
    assert proc.returncode == 0, output[-3000:]
    done = record(tmp_path / "run")
    assert done["status"] == "completed" and done["epochs"] == 3
    assert done["resumes"] == [{"step": 4, "changed": {"trainer.max_epochs": [1, 3]}}]
    assert len(done["seconds_per_epoch"]) == 3 and max(done["seconds_per_epoch"]) < 60
    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    epochs_with_val = sorted({int(r["epoch"]) for r in rows if r.get("val/acc")})
    assert epochs_with_val == [0, 1, 2]  # the first run's rows survive the resume


@pytest.mark.slow
def test_last_ckpt_is_the_final_model_whatever_the_step_interval(train_cli, tmp_path):
    # 4 steps an epoch, 2 epochs; a step interval of 3 never lands on the last step (8).
    proc = train_cli(["trainer.max_epochs=2", "checkpoint_every_n_steps=3", "hydra.run.dir=run"])
    assert proc.wait(timeout=300) == 0
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == record(tmp_path / "run")["step"] == 8
    assert last["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 2


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_partial_file(train_cli, tmp_path):
    # Files under the limit are written (the record's reserve among them); a classifier with a
    # 1024-unit hidden layer has a checkpoint of about 4 MB, which is not.
    limit = 2_000_000
    assert RESERVE_BYTES < limit

    def small_files():  # writes past the limit fail (EFBIG) instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = ["trainer.max_epochs=1", "arch.classifier.hidden=1024", "hydra.run.dir=run"]
    proc = train_cli(args, preexec_fn=small_files)
    one_line_error(proc, finish(proc), "could not write checkpoint", "checkpoints/")
    folder = tmp_path / "run" / "checkpoints"
    assert list(folder.iterdir()) == []  # nothing half-written
    assert record(tmp_path / "run")["status"] == "failed"


@pytest.mark.slow
def test_truncated_last_checkpoint_on_resume_is_one_line_naming_it(train_cli, tmp_path):
    args = ["trainer.max_epochs=1", "hydra.run.dir=run"]
    assert train_cli(args).wait(timeout=300) == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (tmp_path / "run" / "metrics.json").unlink()
    proc = train_cli([*args, "ckpt_path=last"])
    one_line_error(proc, finish(proc), f"checkpoint {last} is truncated")


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_last_ckpt_records_interrupted_and_resumes(train_cli, tmp_path, signum, code):
    args = ["trainer.max_epochs=200", "checkpoint_every_n_steps=0", "hydra.run.dir=run"]
    # The run handles the signal as a shell's foreground job does, even where the suite runs in
    # the background (where the shell has it start with SIGINT ignored).
    proc = train_cli(args, preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    csv_file = tmp_path / "run" / "csv" / "metrics.csv"
    deadline = time.time() + 120
    while not csv_file.exists() and time.time() < deadline:  # the first epoch has ended
        time.sleep(0.2)
    proc.send_signal(signum)
    output = finish(proc)
    assert proc.returncode == code, output[-3000:]
    interrupted = record(tmp_path / "run")
    assert interrupted["status"] == "interrupted" and interrupted["step"] > 0
    assert interrupted["error"] == f"interrupted by {signal.Signals(signum).name}"
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == interrupted["step"]
    # Resume with a budget two epochs past the epoch it stopped in: there is always more to
    # train, however far the signal let the run get.
    budget = interrupted["epochs"] + 2
    resumed = train_cli([f"trainer.max_epochs={budget}", *args[1:], "ckpt_path=last"])
    output = finish(resumed)
    assert resumed.returncode == 0, output[-3000:]
    last_path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"Restored all states from the checkpoint at {last_path}" in output
    # It trains on from the epoch the signal stopped (one line an epoch), not from the start.
    epochs = [int(e) for e in re.findall(rf"epoch (\d+)/{budget} \|", output)]
    assert epochs == list(range(interrupted["epochs"] + 1, budget + 1))
    done = record(tmp_path / "run")
    assert done["status"] == "completed" and done["epochs"] == budget
    assert done["step"] == budget * 4  # 4 optimiser steps an epoch: none lost, none repeated
    assert done["resumes"] == [
        {"step": interrupted["step"], "changed": {"trainer.max_epochs": [200, budget]}}
    ]


@pytest.fixture
def ctrl_c_raises():
    """Python's own Ctrl-C handler for the test (a process started in the background, as some
    CI runners start the suite, inherits an ignored SIGINT), then the one before."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_an_ignored_ctrl_c_stays_ignored():
    from stn_lab.checkpointing import CtrlC

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # nohup, a background job
    try:
        with CtrlC():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with CtrlC() as ctrl_c:
            assert signal.getsignal(signal.SIGINT) == ctrl_c._press
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


class CtrlCAt(L.Callback):
    """Presses Ctrl-C (a real SIGINT to this process) once, in the second epoch, at ``hook``
    (``on_train_batch_end`` at that epoch's ``batch``)."""

    def __init__(self, hook: str, batch: int | None = None):
        self.hook, self.batch, self.pressed = hook, batch, False

    def _press(self, hook, trainer, batch_idx=None):
        if (hook, batch_idx) == (self.hook, self.batch) and trainer.current_epoch == 1:
            if not (self.pressed or trainer.sanity_checking):
                self.pressed = True
                os.kill(os.getpid(), signal.SIGINT)

    def on_train_epoch_start(self, trainer, pl_module):
        self._press("on_train_epoch_start", trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._press("on_train_batch_end", trainer, batch_idx)

    def on_validation_start(self, trainer, pl_module):
        self._press("on_validation_start", trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._press("on_train_epoch_end", trainer)


@pytest.mark.parametrize(
    "hook, batch",
    [
        ("on_train_batch_end", 3),  # the epoch's last step, before its validation
        ("on_train_batch_end", 0),  # mid-epoch
        ("on_validation_start", None),
        ("on_train_epoch_end", None),
        ("on_train_epoch_start", None),
    ],
)
def test_ctrl_c_anywhere_in_an_epoch_resumes_with_every_epoch_once(
    tmp_path, tiny_run, monkeypatch, caplog, ctrl_c_raises, hook, batch
):
    """Wherever Ctrl-C lands, the interrupted run and its resume together train and validate
    every epoch exactly once, and the record counts the epochs the resume then skips."""
    import stn_lab.train as train_module
    from stn_lab.train import Interrupted, train

    caplog.set_level("INFO", logger="stn_lab")
    build_trainer = train_module.build_trainer
    ctrl_c = CtrlCAt(hook, batch)

    def with_ctrl_c(cfg, run_dir=None, extra_callbacks=(), **kw):
        return build_trainer(cfg, run_dir, [*extra_callbacks, ctrl_c], **kw)

    monkeypatch.setattr(train_module, "build_trainer", with_ctrl_c)
    run = [*tiny_run, "model=cnn", "checkpoint_every_n_steps=0", "trainer.max_epochs=50"]
    with pytest.raises(Interrupted, match="interrupted by SIGINT"):
        train(compose_config(run), tmp_path, {}, run)
    assert ctrl_c.pressed and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    interrupted = record(tmp_path)
    assert interrupted["status"] == "interrupted"
    budget = interrupted["epochs"] + 2
    before = epoch_lines(caplog.messages, 50)
    assert [e for e, _ in before] == list(range(1, interrupted["epochs"] + 1))

    caplog.clear()
    monkeypatch.setattr(train_module, "build_trainer", build_trainer)
    resume = [*run[:-1], f"trainer.max_epochs={budget}", "ckpt_path=last"]
    done = train(compose_config(resume), tmp_path, {}, resume)
    after = epoch_lines(caplog.messages, budget)
    assert [e for e, _ in after] == list(range(interrupted["epochs"] + 1, budget + 1))
    assert all(acc != "n/a" for _, acc in before + after)  # every epoch validated
    assert done["epochs"] == budget and done["step"] == budget * 4  # 256 images, batch 64


def epoch_lines(messages: list[str], budget: int) -> list[tuple[int, str]]:
    """(epoch, val acc) of each epoch's log line."""
    pattern = rf"epoch (\d+)/{budget} \|.*val acc (\S+?)%? \|"
    return [(int(m[1]), m[2]) for m in map(re.compile(pattern).search, messages) if m]


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, expected",
    [
        ("checkpoint_every_n_steps=-5", "checkpoint_every_n_steps must be a whole number >= 0"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 trains nothing"),
        ("trainer.accelerator=gpu", "gpu"),
        ("optimizer.lr=-1", "optimizer: Invalid learning rate: -1"),
    ],
)
def test_settings_that_cannot_work_end_with_one_line(train_cli, override, expected):
    proc = train_cli([override])
    one_line_error(proc, finish(proc), expected)


def test_an_exploding_but_finite_loss_is_flagged_as_diverged(tmp_path, caplog, tiny_run):

    from stn_lab.train import train

    caplog.set_level("WARNING", logger="stn_lab")
    overrides = [*tiny_run, "model=cnn", "optimizer.lr=1e6", "trainer.max_epochs=1",
                 "faults.on_fault=off"]  # fmt: skip
    done = train(compose_config(overrides), tmp_path, {"model": "cnn"}, overrides)
    assert done["status"] == "completed" and done["diverged"] is True
    assert any("diverged" in r.getMessage() for r in caplog.records)
    calm_run = [*tiny_run, "model=cnn", "trainer.max_epochs=1"]
    calm = train(compose_config(calm_run), tmp_path / "calm", {}, [])
    assert calm["diverged"] is False


def test_user_errors_are_one_line_and_other_errors_keep_their_traceback():
    from stn_lab.errors import ConfigError, user_error_message

    assert user_error_message(ConfigError("data.batch_size must be ...\nmore")) == (
        "data.batch_size must be ..."
    )
    assert user_error_message(ValueError("a bug somewhere")) is None
