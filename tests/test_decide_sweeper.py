"""``hydra/sweeper=decide`` through the real command line, on tiny synthetic runs: it decides
what the paired t test of the records says, re-running the command continues the same folder
and runs no seed twice (after a SIGTERM too), a failing job is retried once and then stops the
sweep in one line, and a sweep it cannot run is refused before anything is written."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

# lr 0 leaves the network at chance; lr 0.01 learns the synthetic bars: a difference the
# sequential test decides at its first look (3 seeds), with looks at 3 and 4 seeds.
SWEEP = ["-m", "hydra/sweeper=decide", "model=cnn", "trainer.max_epochs=1",
         "optimizer.lr=0.0,0.01", "hydra.sweeper.max_seeds=4"]  # fmt: skip


def finish(proc, timeout: int = 600) -> str:
    return proc.communicate(timeout=timeout)[0]


def sweep_folder(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "logs" / "multiruns").glob("decide_optimizer.lr_*")
    return folder


def scores(folder: Path) -> dict[str, dict[int, float]]:
    """Every job's test accuracy in points, read from its own record: ``{lr: {seed: acc}}``."""
    out: dict[str, dict[int, float]] = {}
    for path in folder.glob("*/metrics.json"):
        record = json.loads(path.read_text())
        lr = str(record["config"]["optimizer"]["lr"])
        out.setdefault(lr, {})[record["config"]["seed"]] = 100 * record["test"]["acc"]
    return out


def trained(output: str) -> list[str]:
    """The job folders a command trained in (one ``run dir:`` line each)."""
    return [Path(p).name for p in re.findall(r"run dir: (\S+)", output)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.glob("*/metrics.json"))}


@pytest.mark.slow
def test_a_decided_sweep_is_what_the_records_say_and_a_rerun_runs_nothing(train_cli, tmp_path):
    proc = train_cli([*SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    output = finish(proc)
    assert proc.returncode == 0, output[-3000:]
    folder = sweep_folder(tmp_path)
    decision = json.loads((folder / "decision.json").read_text())
    # Every job is an ordinary run; the paired t of the records is scipy's.
    got = scores(folder)
    assert sorted(got) == ["0.0", "0.01"] and all(sorted(s) == [0, 1, 2] for s in got.values())
    arm, base = (np.array([got[lr][s] for s in range(3)]) for lr in ("0.0", "0.01"))
    comparison = decision["comparisons"]["0.0"]
    assert comparison["baseline"] == "0.01"  # the last value listed
    (look,) = comparison["looks"]
    assert look["n"] == 3 and look["t"] == pytest.approx(stats.ttest_rel(arm, base).statistic)
    assert look["mean_difference"] == pytest.approx(np.mean(arm - base))
    assert abs(look["t"]) >= look["t_bound"]  # it crossed, downwards: lr 0 is worse
    assert comparison["decision"] == "worse" and decision["status"] == "decided"
    assert decision["seeds"] == {"0.0": [0, 1, 2], "0.01": [0, 1, 2]}
    assert len(decision["rounds"]) == 1 and decision["rounds"][0]["jobs"] == 6
    assert "decide: optimizer.lr=0.0 vs 0.01: worse at 3 seeds" in output

    before = snapshot(folder)
    again = train_cli(SWEEP)  # the same command, now on the basic launcher
    output = finish(again)
    assert again.returncode == 0, output[-3000:]
    assert trained(output) == [] and snapshot(folder) == before
    assert (
        json.loads((folder / "decision.json").read_text())["comparisons"]
        == (decision["comparisons"])
    )


@pytest.mark.slow
def test_a_sweep_stopped_mid_round_continues_to_the_same_decision(train_cli, tmp_path):
    reference = train_cli([*SWEEP, "hydra.sweep.dir=reference"])
    assert reference.wait(timeout=600) == 0
    expected = json.loads((tmp_path / "reference" / "decision.json").read_text())

    proc = train_cli(SWEEP)
    deadline = time.time() + 300
    while time.time() < deadline:  # two of the first round's six jobs have completed
        done = list((tmp_path / "logs").glob("multiruns/decide_*/*/metrics.json"))
        if sum('"completed"' in p.read_text() for p in done) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    assert proc.returncode != 0
    folder = sweep_folder(tmp_path)
    completed = {k: v for k, v in snapshot(folder).items() if b'"completed"' in v}
    assert 2 <= len(completed) < 6

    again = train_cli(SWEEP)
    output = finish(again)
    assert again.returncode == 0, output[-3000:]
    ran = trained(output)
    assert not {Path(p).parent.name for p in completed} & set(ran)  # no seed ran twice
    assert len(ran) == 6 - len(completed)
    after = snapshot(folder)
    assert {k: after[k] for k in completed} == completed
    decision = json.loads((folder / "decision.json").read_text())
    assert decision["comparisons"] == expected["comparisons"]
    assert scores(folder) == scores(tmp_path / "reference")


@pytest.mark.slow
def test_a_job_that_fails_twice_stops_the_sweep_in_one_line(train_cli, tmp_path):
    proc = train_cli([*SWEEP[:4], "optimizer.lr=-1,0.01", "hydra.sweep.dir=s"])
    output = finish(proc)
    assert proc.returncode == 1, output[-3000:]
    failing = Path("s") / "-1_seed0"  # as the command named its folder
    assert f"decide: {failing} failed (optimizer: Invalid learning rate: -1)" in output
    assert "retrying it once" in output
    (stop,) = [line for line in output.splitlines() if "decide: stopped" in line]
    assert f"{failing} failed twice (optimizer: Invalid learning rate: -1)" in stop
    assert json.loads((tmp_path / "s" / "decision.json").read_text())["status"] == "stopped"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["model=cnn,stn", "optimizer.lr=0.1,0.01"],
            "one swept setting (hydra.sweeper.arms=null); swept: model, optimizer.lr",
        ),
        (
            ["model=cnn,stn", "optimizer.lr=0.1,0.01", "hydra.sweeper.arms=model"],
            "decide sweeps only model; also swept: optimizer.lr",
        ),
        (
            ["model=cnn,stn", "hydra.sweeper.baseline=fcn"],
            "hydra.sweeper.baseline=fcn is not one of model=cnn,stn",
        ),
        (["model=cnn,stn", "hydra.sweeper.first=1"], "hydra.sweeper: need 2 <= first"),
    ],
)
def test_a_sweep_it_cannot_run_is_refused_before_anything_is_written(
    train_cli, tmp_path, args, expected
):
    proc = train_cli(["-m", "hydra/sweeper=decide", *args])
    output = finish(proc)
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert expected in line
    assert not (tmp_path / "logs" / "multiruns").exists()
