"""The run record through the real command line: which model the test scores, what the record says
about it, and that a refused command leaves the run folder byte for byte as it was."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import resource
import signal
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

CNN = ["model=cnn", "trainer.max_epochs=3", "seed=0"]


def record_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def epoch_metrics(run: Path, key: str) -> dict[int, float]:
    """``{epoch: value}`` of one validation metric, from the CSV logger's file."""
    (path,) = run.glob("csv/**/metrics.csv")
    with path.open() as fh:
        return {int(r["epoch"]): float(r[key]) for r in csv.DictReader(fh) if r.get(key)}


def digests(root: Path, files) -> dict[str, str]:
    """``{path under root: sha256}`` of the regular files among ``files``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(files)
        if p.is_file()
    }


def snapshot(run: Path) -> dict[str, str]:
    """Digest of every file a refusal must leave alone: the record, its log, .hydra and
    checkpoints."""
    kept = [run / "metrics.json", run / "train.log", *run.glob(".hydra/**/*"),
            *run.glob("checkpoints/*")]  # fmt: skip
    return digests(run, kept)


def refused(result) -> str:
    """The run was refused in one line with exit 2; that line."""
    assert result.returncode == 2, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if "error:" in line]
    assert "Traceback" not in result.stdout
    return line


@pytest.mark.slow
def test_the_record_names_the_monitor_and_tests_its_best_epoch(tmp_path, train_run):
    run = tmp_path / "run"
    result = train_run([*CNN, "callbacks.best_checkpoint.monitor=val/loss",
                        "callbacks.best_checkpoint.mode=min", f"hydra.run.dir={run}"])  # fmt: skip
    assert result.returncode == 0, result.stdout
    record = record_of(run)
    losses = epoch_metrics(run, "val/loss")
    lowest = min(losses, key=losses.get)
    assert record["best_checkpoint"].startswith(f"checkpoints/epoch{lowest:03d}-")
    assert (run / record["best_checkpoint"]).is_file()
    assert record["selection"] == {
        "monitor": "val/loss", "mode": "min", "score": pytest.approx(losses[lowest], abs=1e-6),
        "tested": "best",
    }  # fmt: skip
    assert "testing the checkpoint with the best val/loss (mode min)" in result.stdout


@pytest.mark.slow
def test_without_a_checkpoint_callback_the_last_weights_are_tested_and_said(tmp_path, train_run):
    run = tmp_path / "run"
    result = train_run([*CNN, "~callbacks.best_checkpoint", f"hydra.run.dir={run}"])
    assert result.returncode == 0, result.stdout
    record = record_of(run)
    assert record["best_checkpoint"] is None
    assert record["selection"]["tested"] == "last" and record["selection"]["monitor"] is None
    # Lightning adds its own ModelCheckpoint, which keeps the newest weights.
    assert "testing the last weights (the checkpoint callback monitors nothing)" in result.stdout
    accs = epoch_metrics(run, "val/acc")
    assert record["best_val_acc"] == pytest.approx(accs[max(accs)], abs=1e-6)


@pytest.mark.slow
def test_a_step_budget_shorter_than_an_epoch_still_validates(tmp_path, train_run):
    run = tmp_path / "run"
    result = train_run(["model=cnn", "trainer.max_steps=3", f"hydra.run.dir={run}"])
    assert result.returncode == 0, result.stdout
    record = record_of(run)
    assert record["step"] == 3
    assert record["best_val_acc"] is not None
    assert "no validation ran during training: validating the last weights once" in result.stdout


@pytest.mark.slow
def test_a_renamed_last_checkpoint_still_guards_the_resume(tmp_path, train_run):
    """The trained config travels in the checkpoint under its own key, so a subclass of the
    last-checkpoint callback (another name, another state key) cannot switch the guard off."""
    (tmp_path / "keepers.py").write_text(
        "from stn_lab.checkpointing import LastCheckpoint\n\n\n"
        "class KeepNewest(LastCheckpoint):\n    pass\n"
    )
    env = {"PYTHONPATH": str(tmp_path)}
    first, second = tmp_path / "first", tmp_path / "second"
    rename = ["callbacks.last_checkpoint._target_=keepers.KeepNewest"]
    result = train_run(["model=cnn", "trainer.max_epochs=1", *rename, f"hydra.run.dir={first}"],
                       env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout
    last = first / "checkpoints" / "last.ckpt"
    result = train_run(["model=cnn", *rename, f"ckpt_path={last}", "trainer.max_epochs=2",
                        "optimizer.lr=0.01", f"hydra.run.dir={second}"], env=env)  # fmt: skip
    line = refused(result)
    assert "cannot resume" in line and "optimizer.lr: 0.001 -> 0.01" in line
    assert not (second / "checkpoints").exists()


@pytest.mark.slow
def test_another_seed_into_a_completed_folder_is_refused_and_changes_nothing(tmp_path, train_run):
    run = tmp_path / "run"
    assert train_run(["model=cnn", "trainer.max_epochs=1", f"hydra.run.dir={run}"]).returncode == 0
    before = snapshot(run)
    line = refused(train_run(["model=cnn", "trainer.max_epochs=1", "seed=1",
                              f"hydra.run.dir={run}"]))  # fmt: skip
    assert "seed: 0 -> 1" in line
    assert snapshot(run) == before
    # The same command as the completed run is skipped, and changes nothing either.
    again = train_run(["model=cnn", "trainer.max_epochs=1", f"hydra.run.dir={run}"])
    assert again.returncode == 0 and "already completed" in again.stdout
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_refused_resume_of_a_truncated_checkpoint_changes_nothing(tmp_path, train_run):
    run = tmp_path / "run"
    assert train_run(["model=cnn", "trainer.max_epochs=1", f"hydra.run.dir={run}"]).returncode == 0
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    before = snapshot(run)
    line = refused(train_run(["model=cnn", "ckpt_path=last", "trainer.max_epochs=2",
                              f"hydra.run.dir={run}"]))  # fmt: skip
    assert "truncated" in line
    assert snapshot(run) == before
    assert "max_epochs: 1" in (run / ".hydra" / "config.yaml").read_text()


@pytest.mark.slow
def test_a_refused_resume_after_sigterm_keeps_the_interrupted_record(
    tmp_path, train_cli, train_run
):
    run = tmp_path / "run"
    proc = train_cli(["model=cnn", "data.num_train=20000", "trainer.max_epochs=50",
                      "checkpoint_every_n_steps=5", f"hydra.run.dir={run}"])  # fmt: skip
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert last.exists(), "no last.ckpt within 240 s"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert record_of(run)["status"] == "interrupted"
    before = snapshot(run)
    line = refused(train_run(["model=cnn", "data.num_train=20000", "trainer.max_epochs=50",
                              "checkpoint_every_n_steps=5", "ckpt_path=last",
                              "optimizer.lr=0.01", f"hydra.run.dir={run}"]))  # fmt: skip
    assert "cannot resume" in line
    assert snapshot(run) == before
    assert "optimizer.lr=0.01" not in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_a_second_run_into_a_busy_folder_is_refused_and_changes_nothing(
    tmp_path, train_cli, train_run
):
    run = tmp_path / "run"
    first = train_cli(["model=cnn", "data.num_train=20000", "trainer.max_epochs=100",
                       f"hydra.run.dir={run}"])  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run / "summary.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    hydra_files = {p.name: p.read_bytes() for p in (run / ".hydra").glob("*.yaml")}
    line = refused(train_run(["model=stn", "trainer.max_epochs=1", f"hydra.run.dir={run}"]))
    assert "in use by another run" in line
    assert "in use by another run" not in (run / "train.log").read_text()
    assert {p.name: p.read_bytes() for p in (run / ".hydra").glob("*.yaml")} == hydra_files
    assert first.poll() is None, "the first run must still be running for this test to mean it"
    first.send_signal(signal.SIGTERM)  # the first run ends as it would, under its own name
    output = first.communicate(timeout=300)[0]
    assert first.returncode == 143, output
    record = record_of(run)
    assert record["status"] == "interrupted" and record["choices"]["model"] == "cnn"
    assert re.search(r"model: cnn", (run / ".hydra" / "hydra.yaml").read_text())


@pytest.mark.slow
def test_a_full_disk_while_recording_is_one_line_and_a_failed_record(tmp_path, train_cli):
    """predictions.npy (8 bytes an image) is larger than the disk allows; the small record the
    reserve leaves room for says what could not be written."""
    limit = 120_000

    def small_files():  # writes past the limit fail (EFBIG) instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = tmp_path / "run"
    proc = train_cli(["model=cnn", "trainer.max_epochs=1", "data.num_test=20000",
                      "~callbacks.best_checkpoint", "~callbacks.last_checkpoint",
                      "~callbacks.artefacts", "+trainer.enable_checkpointing=false",
                      f"hydra.run.dir={run}"], preexec_fn=small_files)  # fmt: skip
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "error:" in line]
    assert f"could not write {run / 'predictions.npy'}" in line
    record = record_of(run)
    assert record["status"] == "failed" and "predictions.npy" in record["error"]
    assert not (run / "predictions.npy").exists()


@pytest.mark.slow
def test_a_moved_run_resumes_and_tests_its_own_checkpoint(tmp_path, train_run):
    """The kept checkpoint is the first epoch's (mode=min on val/acc) and its path was saved
    absolute: after the folder moves, the resume tests that file in the new folder."""
    keep_first = ["callbacks.best_checkpoint.mode=min"]
    old, new = tmp_path / "old", tmp_path / "new"
    first = train_run(["model=cnn", "trainer.max_epochs=1", *keep_first, f"hydra.run.dir={old}"])
    assert first.returncode == 0, first.stdout
    old.rename(new)
    resumed = train_run(["model=cnn", "trainer.max_epochs=2", "ckpt_path=last", *keep_first,
                         f"hydra.run.dir={new}"])  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout
    record = record_of(new)
    assert record["epochs"] == 2 and record["best_checkpoint"].startswith("checkpoints/epoch000")
    assert str(old) not in resumed.stdout.split("testing the")[-1]


TERM_DURING_VALIDATION = """
import os, signal
import lightning as L


class TermDuringValidation(L.Callback):
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_):
        first_epoch = trainer.current_epoch == 0 and not trainer.sanity_checking
        if first_epoch and batch_idx == 1 and not os.environ["RESUMED"]:
            os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.mark.slow
def test_a_resume_after_sigterm_during_validation_validates_that_epoch(tmp_path, train_run):
    (tmp_path / "term.py").write_text(TERM_DURING_VALIDATION)
    env = {"PYTHONPATH": str(tmp_path), "RESUMED": ""}
    args = ["model=cnn", "trainer.max_epochs=2", "data.eval_batch_size=8"]
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    term = "+callbacks.term._target_=term.TermDuringValidation"
    first = train_run([*args, term, f"hydra.run.dir={cut}"], env=env)
    assert first.returncode == 143, first.stdout
    assert record_of(cut)["status"] == "interrupted"
    resumed = train_run([*args, term, "ckpt_path=last", f"hydra.run.dir={cut}"],
                        env={**env, "RESUMED": "1"})  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout
    assert re.search(r"epoch 1/2 \| .* val acc \d+\.\d\d% \|", resumed.stdout)
    # The cut epoch's validation is the one an uninterrupted run gets (the epoch after it
    # trains on from a resume, whose data order need not match).
    assert train_run([*args, f"hydra.run.dir={whole}"], env=env).returncode == 0
    cut_acc = epoch_metrics(cut, "val/acc")
    assert sorted(cut_acc) == [0, 1] and cut_acc[0] == epoch_metrics(whole, "val/acc")[0]


def test_resume_and_compare_judge_callbacks_alike():
    """A resume may not change what compare groups by, and may change what it ignores."""
    from stn_lab.config_path import compose_config
    from stn_lab.run_record import changed_settings

    def config(*overrides):
        return OmegaConf.to_container(compose_config(list(overrides)), resolve=False)

    base = config()
    callbacks = "lightning.pytorch.callbacks"
    stop = f"+trainer.callbacks=[{{_target_: {callbacks}.EarlyStopping, monitor: val/acc}}]"
    watch = f"+trainer.callbacks=[{{_target_: {callbacks}.LearningRateMonitor}}]"
    assert list(changed_settings(base, config(stop))) == ["trainer.callbacks"]
    assert changed_settings(base, config(watch)) == {}
    assert list(changed_settings(base, config("callbacks.best_checkpoint.monitor=val/loss"))) == [
        "callbacks.best_checkpoint.monitor"
    ]
    assert changed_settings(base, config("callbacks.best_checkpoint.filename=x")) == {}
    assert changed_settings(base, config("+trainer.logger={_target_: x.Y}")) == {}


@pytest.mark.slow
def test_a_continuation_that_cannot_record_leaves_the_completed_run_as_it_was(
    tmp_path, train_run, train_cli
):
    """Checkpoints fit on the disk and predictions.npy does not: the continued run fails in one
    line, and the old record, its predictions and the best checkpoint it names are all still
    there (Lightning would have removed that checkpoint when a better epoch came)."""
    limit = 400_000

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = tmp_path / "run"
    args = ["model=cnn", "data.num_test=60000", "~callbacks.artefacts", f"hydra.run.dir={run}"]
    assert train_run([*args, "trainer.max_epochs=1"]).returncode == 0
    before = record_of(run)
    predictions = (run / "predictions.npy").read_bytes()
    proc = train_cli([*args, "trainer.max_epochs=3", "ckpt_path=last"], preexec_fn=small_files)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2 and "could not write" in output, output
    assert record_of(run) == before
    assert (run / "predictions.npy").read_bytes() == predictions
    assert (run / before["best_checkpoint"]).is_file()
    assert len(list((run / "checkpoints").glob("epoch*.ckpt"))) >= 2  # a new best was kept too


def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path):
    from stn_lab.errors import UserError, user_error_message
    from stn_lab.run_folder import RunFolder

    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with pytest.raises(UserError) as caught:
        RunFolder(blocked / "run").lock()
    assert user_error_message(caught.value).startswith(
        f"cannot use {blocked / 'run'} as a run folder: "
    )


def test_a_logger_that_cannot_store_the_artefacts_leaves_a_completed_record(
    tmp_path, tiny_run, monkeypatch, caplog
):
    """The record is written before the loggers copy it: their failure (a read-only MLflow
    store) is one error line, and the run stays completed."""
    from stn_lab import record
    from stn_lab.config_path import compose_config
    from stn_lab.train import train

    def read_only_store(loggers, run_dir, files):
        assert (run_dir / "metrics.json").exists()  # handed over after it is written
        raise PermissionError("[Errno 13] Permission denied: 'mlruns/artifacts'")

    monkeypatch.setattr(record, "publish_artifacts", read_only_store)
    run = [*tiny_run, "model=cnn", "trainer.max_epochs=1"]
    done = train(compose_config(run), tmp_path, {}, run)
    assert done["status"] == record_of(tmp_path)["status"] == "completed"
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith("the loggers could not store the record and pictures")
    assert line.endswith("Permission denied: 'mlruns/artifacts'")


def test_a_full_disk_while_writing_metrics_json_leaves_a_failed_record_naming_it(
    tmp_path, tiny_run, monkeypatch
):
    """The disk fills while metrics.json itself is written (predictions.npy fit): the run
    ends with exit 2 and a failed record that names the file, written once the reserve is
    released; neither new file is swapped in. Through ``run_job``, the job the command line
    runs, with Hydra's runtime faked (the command-line twin fills the disk at predictions.npy)."""
    import errno

    from stn_lab import record

    def full_disk_for_the_record(path, data):
        if Path(path).name == ".metrics.json.new":  # the completed record, staged
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    write = record.atomic_write
    monkeypatch.setattr(record, "atomic_write", full_disk_for_the_record)
    with pytest.raises(SystemExit) as exit_:
        job([*tiny_run, "model=cnn", "trainer.max_epochs=1"], tmp_path)
    assert exit_.value.code == 2
    failed = record_of(tmp_path)
    assert failed["status"] == "failed"
    assert failed["error"] == (
        f"could not write {tmp_path / 'metrics.json'}: OSError: [Errno 28] No space left on device"
    )
    assert not (tmp_path / "predictions.npy").exists()  # swapped in only with its record
    assert not list(tmp_path.glob(".*.new")) and not (tmp_path / record.RESERVE).exists()


def job(overrides: list[str], run: Path):
    """``run_job`` on ``overrides`` in ``run``, the job the command line runs, with Hydra's
    runtime faked (a single run)."""
    from types import SimpleNamespace

    from hydra.types import RunMode

    from stn_lab.config_path import compose_config
    from stn_lab.train import run_job

    runtime = SimpleNamespace(choices={"model": "cnn"})
    hydra = SimpleNamespace(mode=RunMode.RUN, runtime=runtime,
                            overrides=SimpleNamespace(task=overrides))  # fmt: skip
    return run_job(compose_config(overrides), hydra, run)


def test_train_log_keeps_only_the_lines_of_jobs_that_change_the_folder(tmp_path, tiny_run, caplog):
    """Each command gets its own ``train.log`` handler, as Hydra gives it: a refused and a skipped
    job add nothing to a completed run's log; a refusal that a new folder records is logged."""
    import logging

    from stn_lab.run_folder import HeldLogFile

    caplog.set_level(logging.INFO)  # as Hydra's job logging sets it

    def command(overrides: list[str], run: Path):
        handler = HeldLogFile(run / "train.log")
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
        try:
            return job([*tiny_run, "model=cnn", "trainer.max_epochs=1", *overrides], run)
        except SystemExit as exit_:
            return exit_.code
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()

    run = tmp_path / "run"
    assert command([], run) == (pytest.approx(record_of(run)["best_val_acc"]), "completed")
    trained = (run / "train.log").read_text()
    assert "INFO test acc" in trained and "error" not in trained
    assert command(["seed=1"], run) == 2  # refused: a completed run with another seed
    assert command([], run)[1] == "skipped"
    assert (run / "train.log").read_text() == trained

    # In new folders: refused before anything is built, and failing while it is built.
    refusals = [(["trainer.devices=3"], "trainer.devices=3 starts several processes"),
                (["optimizer.lr=-1"], "optimizer: Invalid learning rate: -1")]  # fmt: skip
    for overrides, error in refusals:
        new = tmp_path / overrides[0]
        assert command(overrides, new) == 2
        assert record_of(new)["status"] == "failed"
        assert (new / "train.log").read_text().splitlines()[-1].startswith(f"ERROR error: {error}")


def test_a_held_log_writes_its_lines_in_order_once_released_and_none_once_dropped(tmp_path):
    import logging

    from stn_lab.run_folder import HeldLogFile

    def lines(name: str, decide) -> str:
        handler = HeldLogFile(tmp_path / name)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger(f"held.{name}")
        logger.addHandler(handler)
        logger.warning("one")
        assert not (tmp_path / name).exists()  # held, no file yet
        decide(handler)
        logger.warning("two")
        handler.close()
        logger.removeHandler(handler)
        path = tmp_path / name
        return path.read_text() if path.exists() else None

    assert lines("kept.log", HeldLogFile.keep_lines) == "one\ntwo\n"
    assert lines("dropped.log", HeldLogFile.drop_lines) is None
    assert lines("undecided.log", lambda handler: None) == "one\ntwo\n"  # written on close
