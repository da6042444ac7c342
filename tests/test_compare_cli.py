"""``python -m stn_lab.compare`` as a user runs it, in a subprocess: over a tiny real sweep of
``python -m stn_lab.train`` (the round trip) and over run folders written as ``train`` writes
them. Each test holds one promise of docs/compare.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from test_compare_helpers import (
    read_csv,
    record,
    run_compare,
    write_predicted_run,
    write_run,
)

# Each test runs compare (and the module fixture two tiny sweeps) as a subprocess.
pytestmark = pytest.mark.slow

#: What keeps a training run tiny and quiet: 128 synthetic training images (2 steps an epoch),
#: 64 test images, no pictures. No limit_*_batches: that would make it a debug run.
TINY = [
    "data=synthetic", "data.num_train=128", "data.num_test=64",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "~callbacks.artefacts",
]  # fmt: skip


def train_sweep(sweep_dir: Path, cwd: Path, *overrides: str) -> None:
    """``python -m stn_lab.train -m <overrides> hydra.sweep.dir=<sweep_dir>`` on tiny data."""
    env = {**os.environ, "STN_LAB_LOGS": str(cwd / "logs"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "stn_lab.train", "-m", *overrides, *TINY,
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Path:
    """``X/a``: ``model=cnn,stn seed=0,1 trainer.max_epochs=1`` (the round trip); ``X/b``:
    ``model=cnn seed=0,1 trainer.max_epochs=2 optimizer.lr=0.01``, which differs from the CNN
    of ``X/a`` in two settings at once: two sweeps that confound two settings, at the
    smallest size."""
    root = tmp_path_factory.mktemp("sweeps")
    train_sweep(root / "X" / "a", root, "model=cnn,stn", "seed=0,1", "trainer.max_epochs=1")
    train_sweep(root / "X" / "b", root, "model=cnn", "seed=0,1", "trainer.max_epochs=2",
                "optimizer.lr=0.01")  # fmt: skip
    return root / "X"


def recorded(sweep: Path) -> dict[str, list[dict]]:
    """The metrics.json of each job of ``sweep``, by the model it trained."""
    jobs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(sweep.glob("*/metrics.json")):
        data = json.loads(path.read_text())
        jobs[data["choices"]["model"]].append(data)
    return jobs


def test_round_trip_from_train_to_compare(sweeps: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_compare([str(sweeps / "a"), "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    jobs = recorded(sweeps / "a")
    assert {m: [r["seed"] for r in runs] for m, runs in jobs.items()} == {
        "cnn": [0, 1], "stn": [0, 1]
    }  # fmt: skip
    rows = {r["group"]: r for r in read_csv(out / "compare.csv")}
    assert set(rows) == {"model=cnn", "model=stn"}
    for model in ("cnn", "stn"):
        accs = [r["test"]["acc"] for r in jobs[model]]
        row = rows[f"model={model}"]
        assert (row["n"], row["seeds"]) == ("2", "0;1")
        assert float(row["test_acc_mean"]) == pytest.approx(np.mean(accs))
        assert float(row["test_acc_std"]) == pytest.approx(np.std(accs, ddof=1))
    (diff,) = read_csv(out / "differences.csv")
    assert (diff["varied"], diff["confounded"], diff["test"]) == ("model", "false", "paired t")
    assert (diff["a_group"], diff["b_group"]) == ("model=cnn", "model=stn")
    expected = np.mean([r["test"]["acc"] for r in jobs["stn"]]) - np.mean(
        [r["test"]["acc"] for r in jobs["cnn"]]
    )
    assert float(diff["diff"]) == pytest.approx(expected)
    assert diff["images"] == "64"  # every job scored the same 64 test images
    assert diff["verdict"] in ("better", "equivalent", "inconclusive")
    # The command prints compare.md and lists what it wrote.
    assert (out / "compare.md").read_text() in proc.stdout
    assert f"Wrote {out / 'compare.md'}" in proc.stdout
    # LaTeX's default OT1 font encoding prints a bare > as ¿ ("P(B ¿ A)").
    tex = (out / "compare.tex").read_text()
    assert "P(B $>$ A)" in tex
    assert ">" not in tex.replace("$>$", "") and "<" not in tex.replace("$<$", "")


def test_confounded_pair_named_in_every_output_with_no_verdict(sweeps: Path, tmp_path: Path):
    out = tmp_path / "out"
    proc = run_compare([str(sweeps), "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    said = "confounded: A and B differ in optimizer.lr and trainer.max_epochs"
    assert said in proc.stdout and said in proc.stderr  # the table, and a warning line
    md = (out / "compare.md").read_text()
    (row,) = [line for line in md.splitlines() if said in line]
    assert row.startswith("| optimizer.lr, trainer.max_epochs |")
    assert not any(word in row for word in ("better", "equivalent", "inconclusive"))
    assert "trainer.max_epochs" in md.split("## Results")[1].split("## Per-class")[0]
    rows = read_csv(out / "differences.csv")
    (confounded,) = [r for r in rows if r["confounded"] == "true"]
    assert confounded["varied"] == "optimizer.lr;trainer.max_epochs"
    assert (confounded["verdict"], confounded["verdict_text"]) == ("confounded", said)
    assert confounded["p_holm"] == ""  # no verdict is drawn from it: not in Holm's family
    (clean,) = [r for r in rows if r["confounded"] == "false"]
    assert clean["varied"] == "model" and clean["verdict"] != "confounded"
    tex = (out / "compare.tex").read_text()
    assert said.replace("_", r"\_") in tex
    assert len(read_csv(out / "compare.csv")) == 3


def test_runs_are_found_where_train_writes_them(sweeps: Path, tmp_path: Path) -> None:
    # With no folder given, compare reads $STN_LAB_LOGS (train's log folder), else logs/.
    logs = sweeps / "b"
    proc = run_compare(["--out", str(tmp_path / "out")], cwd=tmp_path,
                       env={"STN_LAB_LOGS": str(logs)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"# Run comparison\n\n2 completed runs in 1 groups from `{logs}`")
    proc = run_compare(["--out", str(tmp_path / "out2")], cwd=tmp_path)
    assert proc.returncode == 2 and "no runs found in logs" in proc.stderr
    help_text = run_compare(["--help"], cwd=tmp_path).stdout
    assert "STN_LAB_LOGS" in help_text


# ---------------------------------------------------------------- records written as train does
def write_sweep(root: Path, runs: list[dict]) -> Path:
    for job, payload in enumerate(runs):
        write_run(root / str(job), payload)
    return root


CNN = ("model=cnn", "data=synthetic")
LR_MONITOR = "lightning.pytorch.callbacks.LearningRateMonitor"
EARLY_STOPPING = "lightning.pytorch.callbacks.EarlyStopping"


def test_callbacks_are_judged_alike_however_they_are_added(tmp_path: Path) -> None:
    # A learning-rate monitor never changes a result, whether it comes from the callbacks group
    # or from +trainer.callbacks; early stopping does, either way.
    runs = [
        record(0, 0.70, *CNN),
        record(1, 0.72, *CNN, "callbacks=[default,lr_monitor]"),
        record(2, 0.74, *CNN, f"+trainer.callbacks=[{{_target_:{LR_MONITOR}}}]"),
        record(
            0, 0.60, *CNN, f"+trainer.callbacks=[{{_target_:{EARLY_STOPPING},monitor:val/acc}}]"
        ),
        record(1, 0.62, *CNN, "callbacks=[default,early_stopping]"),
    ]
    out = tmp_path / "out"
    proc = run_compare([str(write_sweep(tmp_path / "logs", runs)), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(out / "compare.csv")
    plain = [r for r in rows if r["n"] == "3"]
    assert len(rows) == 3 and len(plain) == 1 and plain[0]["seeds"] == "0;1;2"
    assert float(plain[0]["test_acc_mean"]) == pytest.approx(0.72)


def test_include_debug_compares_debug_runs_marked_as_such(tmp_path: Path) -> None:
    runs = [record(s, 0.70 + s / 100, *CNN) for s in (0, 1)]
    runs += [
        record(s, 0.30 + s / 100, *CNN, "trainer.limit_train_batches=1",
               debug=["limit_train_batches=1"])
        for s in (0, 1)
    ]  # fmt: skip
    logs = write_sweep(tmp_path / "logs", runs)
    proc = run_compare([str(logs), "--out", str(tmp_path / "apart")], tmp_path)
    assert proc.returncode == 0 and "2 debug runs listed apart, not compared" in proc.stdout
    assert len(read_csv(tmp_path / "apart" / "compare.csv")) == 1
    out = tmp_path / "out"
    proc = run_compare([str(logs), "--out", str(out), "--include-debug"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["group"]: r for r in read_csv(out / "compare.csv")}
    (debug,) = [g for g in rows if g.endswith("[debug]")]
    assert rows[debug]["debug"] == "limit_train_batches=1"
    assert float(rows[debug]["test_acc_mean"]) == pytest.approx(0.305)
    (diff,) = read_csv(out / "differences.csv")
    assert debug in (diff["a_group"], diff["b_group"])
    assert "debug runs (limit_train_batches=1): a check, not a result" in proc.stdout
    assert "--include-debug" in run_compare(["--help"], tmp_path).stdout


def test_two_seed_intervals_stay_within_0_and_100(tmp_path: Path) -> None:
    # Two seeds at 20% and 100%: the uncut t interval would be [-11.62, 132.32].
    runs = [record(0, 0.20, *CNN), record(1, 1.00, *CNN)]
    out = tmp_path / "out"
    proc = run_compare([str(write_sweep(tmp_path / "logs", runs)), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = read_csv(out / "compare.csv")
    assert float(row["test_acc_ci_low"]) == 0.0 and float(row["test_acc_ci_high"]) == 1.0
    assert "| 60.00 ± 56.57 (n=2) | [0.00, 100.00] |" in proc.stdout
    assert "cut to 0–100" in proc.stdout


def test_a_damaged_predictions_file_is_one_line_that_names_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for model in ("cnn", "stn"):
            write_predicted_run(tmp_path / "logs" / "sweep" / f"{model}{seed}",
                                rng.uniform(size=40) < 0.7, seed, f"model={model}",
                                "data=synthetic", "data.num_test=40")  # fmt: skip
    # A pickled object array where the table should be (numpy's own message then advises
    # allow_pickle=True, which would run whatever code the file holds).
    damaged = tmp_path / "logs" / "sweep" / "stn1" / "predictions.npy"
    np.save(damaged, np.array([{"not": "a table"}], dtype=object), allow_pickle=True)
    out = tmp_path / "out"
    proc = run_compare([str(tmp_path / "logs"), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (line,) = [e for e in proc.stderr.splitlines() if "stn1" in e]
    assert line.startswith("compare: warning: ") and "sweep/stn1/predictions.npy is damaged" in line
    everything = proc.stdout + proc.stderr + (out / "compare.md").read_text()
    assert "pickle" not in everything.lower()
    # The other runs still compare, at the seed level.
    assert read_csv(out / "differences.csv")[0]["test"] == "paired t"


def test_an_mlflow_store_inside_the_logs_is_not_a_run(tmp_path: Path, monkeypatch) -> None:
    # logger.mlflow.tracking_uri=file:<logs>/custom_store: MLflow keeps a copy of the run's
    # metrics.json among its artifacts, which compare read as a second run of the same seed.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    logs = tmp_path / "logs"
    run = write_run(logs / "runs" / "2024-05-01_12-00-00_abc123", record(0, 0.8, *CNN))
    client = MlflowClient(tracking_uri=f"file:{logs / 'custom_store'}")
    mlflow_run = client.create_run(client.create_experiment("stn_lab"))
    client.log_artifact(mlflow_run.info.run_id, str(run / "metrics.json"))
    assert len(list((logs / "custom_store").rglob("metrics.json"))) == 1
    out = tmp_path / "out"
    proc = run_compare([str(logs), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# Run comparison\n\n1 completed runs in 1 groups")
    assert "Duplicate" not in proc.stdout and "more than once" not in proc.stderr
