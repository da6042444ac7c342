"""MLflow through the real command line: a SQLite store that MLflow's own client opens with no
flag, one MLflow run per stn_lab run even across a resume, and a store that cannot be written is
one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

READ_BACK = """
import json, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
runs = mlflow.search_runs(experiment_names=["stn_lab"])
client = mlflow.tracking.MlflowClient()
print(json.dumps([
    {"id": r, "val": [m.value for m in client.get_metric_history(r, "val/acc")]}
    for r in runs["run_id"]
]))
"""


@pytest.mark.slow
def test_the_store_opens_without_a_flag_and_a_resume_continues_its_run(tmp_path, train_run):
    run = tmp_path / "run"
    args = ["model=cnn", "logger=[csv,mlflow]", f"hydra.run.dir={run}"]
    first = train_run([*args, "trainer.max_epochs=1"])
    assert first.returncode == 0, first.stdout
    uri = f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}"
    env = {"PATH": "/usr/bin:/bin"}  # no MLFLOW_ALLOW_FILE_STORE, as a user's shell
    read = [sys.executable, "-c", READ_BACK, uri]
    (before,) = json.loads(subprocess.run(read, capture_output=True, text=True, env=env,
                                          check=True).stdout)  # fmt: skip
    assert len(before["val"]) == 1
    resumed = train_run([*args, "trainer.max_epochs=2", "ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stdout
    (after,) = json.loads(subprocess.run(read, capture_output=True, text=True, env=env,
                                         check=True).stdout)  # fmt: skip
    assert after["id"] == before["id"] and len(after["val"]) == 2
    record = json.loads((run / "metrics.json").read_text())
    assert max(after["val"]) == pytest.approx(record["best_val_acc"])


@pytest.mark.slow
def test_a_store_that_cannot_be_written_is_one_line(tmp_path, train_run):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    run = tmp_path / "run"
    result = train_run(["model=cnn", "trainer.max_epochs=1", "logger=[csv,mlflow]",
                        f"logger.mlflow.tracking_uri=sqlite:///{blocked}/mlflow.db",
                        f"hydra.run.dir={run}"])  # fmt: skip
    assert result.returncode == 2, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if "error:" in line]
    assert "error: logger 'mlflow' cannot be set up: FileExistsError" in line
    assert "Traceback" not in result.stdout
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
