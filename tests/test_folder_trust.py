"""Run folders you can trust, end to end through the real command lines (``python -m
stn_lab.train`` and ``python -m stn_lab.evaluate`` as subprocesses, as a user runs them).

- a sweep run again into an earlier sweep's folder with another seed is refused job by job and
  changes nothing in any job folder, nor the sweep's ``multirun.yaml``;
- a copied run folder continues in its new place and reads only its own files, while the
  original beside it stays byte for byte as it was;
- each setting refused in one line, run into a completed run's folder, leaves that run as it was;
- ``stn_lab.evaluate`` scores the run's own data and distortion by default (the accuracy its
  ``metrics.json`` records), and a ``limit=`` look never replaces the full result;
- a results folder ``stn_lab.evaluate`` cannot write ends with one line and exit 2.

Every expected value comes from outside the code under test: the files on disk before the
command, the record's own numbers, or facts worked out by hand (64 test images, jobs 0 and 1).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_command_line import REFUSED_IDS, REFUSED_SETTINGS
from test_compare_helpers import read_csv
from test_record import digests, record_of, snapshot
from test_trust import one_line_error

CNN = ["model=cnn", "trainer.max_epochs=1"]
NUM_TEST = 64  # data.num_test in conftest's _TINY_RUN


def tree_digest(folder: Path) -> dict[str, str]:
    """Digest of every file under ``folder`` (a stricter :func:`snapshot`)."""
    return digests(folder, folder.rglob("*"))


def evaluate(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """``python -m stn_lab.evaluate <args>`` in ``cwd``; stdout and stderr merged."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STN_LAB_LOGS": str(cwd / "logs")}
    return subprocess.run(
        [sys.executable, "-m", "stn_lab.evaluate", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, **kwargs,
    )  # fmt: skip


# ------------------------------------------------------------------ 1. a sweep into a sweep
@pytest.mark.slow
def test_a_sweep_with_another_seed_into_an_earlier_sweeps_folder_is_refused(tmp_path, train_run):
    """Jobs 0 and 1 land in the same sub-folders (``hydra.sweep.subdir`` is the job number):
    each is a completed run with seed 0, so seed 1 is refused in each, one line a job, and the
    sweep exits 1 without training or rewriting anything."""
    sweep = tmp_path / "sweep"
    args = ["-m", "model=cnn,stn", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    first = train_run([*args, "seed=0"])
    assert first.returncode == 0, first.stdout
    jobs = [sweep / "0", sweep / "1"]
    assert [record_of(job)["status"] for job in jobs] == ["completed", "completed"]
    before = {job.name: snapshot(job) for job in jobs}
    multirun = (sweep / "multirun.yaml").read_bytes()

    again = train_run([*args, "seed=1"])
    assert again.returncode == 1, again.stdout  # README: a sweep with a refused job exits 1
    assert "Traceback" not in again.stdout
    errors = [line for line in again.stdout.splitlines() if "error:" in line]
    assert len(errors) == 2, again.stdout  # one line for each refused job
    for job, line in zip(jobs, errors, strict=True):
        assert f"{job} holds a completed run with other settings" in line, line
        assert "seed: 0 -> 1" in line, line
    assert f"sweep: 2 jobs: 0 completed, 0 failed, 2 refused (jobs 0, 1) in {sweep}" in again.stdout
    assert "epoch 1/1 |" not in again.stdout  # nothing trained
    assert {job.name: snapshot(job) for job in jobs} == before
    assert [record_of(job)["seed"] for job in jobs] == [0, 0]
    assert (sweep / "multirun.yaml").read_bytes() == multirun


# ------------------------------------------------------------------ 2. a copied run folder
@pytest.mark.slow
def test_a_copied_run_continues_in_its_new_place_and_leaves_the_original_alone(tmp_path, train_run):
    """``mode=min`` on val/acc keeps the first epoch's checkpoint, whose absolute path in the
    copied ``last.ckpt`` is under the original (which still exists): the continued copy must
    test its own copy of that file, and name nothing under the original."""
    keep_first = ["model=cnn", "callbacks.best_checkpoint.mode=min"]
    original, copy = tmp_path / "original", tmp_path / "copy"
    first = train_run([*keep_first, "trainer.max_epochs=1", f"hydra.run.dir={original}"])
    assert first.returncode == 0, first.stdout
    shutil.copytree(original, copy)
    untouched = tree_digest(original)
    kept = record_of(original)["best_checkpoint"]
    assert kept.startswith("checkpoints/epoch000")

    resumed = train_run([*keep_first, "trainer.max_epochs=2", "ckpt_path=last",
                         f"hydra.run.dir={copy}"])  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout
    assert tree_digest(original) == untouched  # every file of the original, byte for byte
    record = record_of(copy)
    assert record["status"] == "completed" and record["epochs"] == 2
    assert record["best_checkpoint"] == kept and (copy / kept).is_file()
    assert f"Restoring states from the checkpoint path at {copy / 'checkpoints' / 'last.ckpt'}" in (
        resumed.stdout
    )
    tested = resumed.stdout.split("testing the checkpoint with the best val/acc")[-1]
    assert f"Loaded model weights from the checkpoint at {copy / kept}" in tested
    assert str(original) not in resumed.stdout
    assert str(original) not in (copy / "metrics.json").read_text()
    # The new last.ckpt remembers the copy's files, so a further continuation reads them too.
    last = torch.load(copy / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert str(original) not in repr(last["callbacks"])


# ------------------------------------------------------------------ 3. refusals change nothing
@pytest.mark.slow
@pytest.mark.parametrize("args, expected", REFUSED_SETTINGS, ids=REFUSED_IDS)
def test_a_refused_setting_into_a_completed_run_changes_nothing(
    tmp_path, train_cli, train_run, args, expected
):
    run = tmp_path / "run"
    done = train_run([*CNN, f"hydra.run.dir={run}"])
    assert done.returncode == 0, done.stdout
    before = snapshot(run)
    proc = train_cli([*CNN, *args, f"hydra.run.dir={run}"])
    output = proc.communicate(timeout=300)[0]
    one_line_error(proc, output, f"error: {expected}")
    assert snapshot(run) == before
    assert record_of(run)["status"] == "completed"


# ------------------------------------------------------------------ 4. evaluate's defaults
@pytest.mark.slow
def test_evaluate_scores_the_runs_own_data_and_distortion_by_default(tmp_path, train_run):
    """A CNN trained on synthetic RTS (the 42 px canvas): ``evaluate ckpt_path=<best>`` with no
    ``data=`` and no ``distortion=`` gives the test accuracy its ``metrics.json`` records."""
    run = tmp_path / "run"
    trained = train_run([*CNN, "distortion=RTS", f"hydra.run.dir={run}"])
    assert trained.returncode == 0, trained.stdout
    recorded = record_of(run)
    assert recorded["choices"]["distortion"] == "RTS" and recorded["choices"]["data"] == "synthetic"
    acc = recorded["test"]["acc"]

    full = evaluate([f"ckpt_path={run / recorded['best_checkpoint']}"], tmp_path)
    assert full.returncode == 0, full.stdout
    assert (
        f"cnn: test accuracy {100 * acc:.2f}% (synthetic, distortion RTS, {NUM_TEST} images)"
        in full.stdout
    )
    score = run / "score_synthetic_RTS.csv"
    assert read_csv(score) == [
        {"model": "cnn", "data": "synthetic", "distortion": "RTS", "images": str(NUM_TEST),
         "accuracy": f"{acc:.6f}"}
    ]  # fmt: skip
    full_bytes = score.read_bytes()

    limited = evaluate([f"ckpt_path={run / recorded['best_checkpoint']}", "limit=10"], tmp_path)
    assert limited.returncode == 0, limited.stdout
    (row,) = read_csv(run / "score_synthetic_RTS_limit10.csv")
    assert (row["distortion"], row["images"]) == ("RTS", "10")
    assert float(row["accuracy"]) * 10 == pytest.approx(round(float(row["accuracy"]) * 10))
    assert score.read_bytes() == full_bytes  # the full result stays


# ------------------------------------------------------------------ 5. unwritable results
def _small_files(limit: int):
    def apply():  # writes past the limit fail (EFBIG) instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_evaluate_into_a_results_folder_it_cannot_write_is_one_line(tmp_path, train_run):
    """Each way out_dir cannot take the results: exit 2, one ``error:`` line (the last line),
    no traceback, no file left. A read-only folder stops writes only for a user other than
    root; root gets a path under a regular file instead. A 16-byte file-size limit (smaller
    than the CSV's header) stands in for a full disk."""
    run = tmp_path / "run"
    trained = train_run([*CNN, f"hydra.run.dir={run}"])
    assert trained.returncode == 0, trained.stdout
    ckpt = run / record_of(run)["best_checkpoint"]
    a_file = tmp_path / "a_file"
    a_file.write_text("a file where the folder should be")
    places = {"under a file": (a_file / "out", {})}
    if os.geteuid() != 0:
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o500)
        places["read-only folder"] = (read_only, {})
    full = tmp_path / "full"
    full.mkdir()
    places["full disk"] = (full, {"preexec_fn": _small_files(16)})

    for name, (out_dir, kwargs) in places.items():
        result = evaluate([f"ckpt_path={ckpt}", f"out_dir={out_dir}"], tmp_path, **kwargs)
        assert result.returncode == 2, (name, result.stdout)
        assert "Traceback" not in result.stdout, (name, result.stdout)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        (error,) = [line for line in lines if "error" in line.lower()]
        assert error == lines[-1] and error.startswith("error: could not write the results: ")
        assert not out_dir.exists() or list(out_dir.iterdir()) == [], name
    assert a_file.read_text() == "a file where the folder should be"
