"""The bookkeeping of the sequential seed sweeper (:mod:`stn_lab.seed_rounds`): folders, the
scores read back from records, the jobs of the next round and ``decision.json``. The sweeper
itself runs through the real command line in ``tests/test_decide_sweeper.py``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from stn_lab import seed_rounds
from stn_lab.seed_rounds import Plan

PLAN = Plan(
    setting="model",
    values=("stn", "fcn", "cnn"),
    baseline="cnn",
    fixed=("data=synthetic", "trainer.max_epochs=1"),
    delta=1.0,
    alpha=0.05,
    first=3,
    step=1,
    max_seeds=6,
)


def write_job(sweep: Path, value: str, seed: int, acc: float, status: str = "completed") -> None:
    folder = sweep / PLAN.job_name(value, seed)
    folder.mkdir(parents=True)
    record = {"status": status, "config": {"seed": seed}, "test": {"acc": acc}}
    (folder / "metrics.json").write_text(json.dumps(record))


def test_the_same_plan_finds_the_same_folder_and_another_plan_a_new_one(tmp_path):
    folder = PLAN.folder(tmp_path)
    assert folder.parent == tmp_path and folder.name.startswith("decide_model_")
    reordered = replace(PLAN, fixed=tuple(reversed(PLAN.fixed)))
    assert reordered.folder(tmp_path) == folder  # the overrides' order changes no run
    changes = [{"delta": 2.0}, {"max_seeds": 7}, {"baseline": "fcn"}, {"fixed": ("data=mnist",)}]
    for change in changes:
        assert replace(PLAN, **change).folder(tmp_path) != folder


def test_a_job_gets_the_shared_overrides_its_arm_seed_and_folder():
    sweep = Path("/tmp/a b/sweep")
    assert PLAN.overrides("stn", 4, sweep) == [
        "data=synthetic",
        "trainer.max_epochs=1",
        "model=stn",
        "seed=4",
        "hydra.sweep.dir='/tmp/a b/sweep'",
        "hydra.sweep.subdir=stn_seed4",
    ]
    assert seed_rounds.quote("it's") == "'it\\'s'"
    assert replace(PLAN, setting="model.stn.lr_mult").job_name("0.5", 2) == "0.5_seed2"


def test_values_that_would_share_a_folder_are_refused():
    with pytest.raises(ValueError, match="same folder names"):
        seed_rounds.check_names(replace(PLAN, values=("a/b", "a-b"), baseline="a-b"))


def test_only_completed_records_of_the_right_seed_count(tmp_path):
    write_job(tmp_path, "cnn", 0, 0.5)
    write_job(tmp_path, "cnn", 1, 0.6, status="failed")
    write_job(tmp_path, "stn", 0, 0.75)
    (tmp_path / PLAN.job_name("stn", 1)).mkdir()  # a job that never wrote its record
    write_job(tmp_path, "fcn", 2, 0.25)
    record = json.loads((tmp_path / "fcn_seed2" / "metrics.json").read_text())
    record["config"]["seed"] = 3  # a folder holding another seed's run
    (tmp_path / "fcn_seed2" / "metrics.json").write_text(json.dumps(record))
    scores, runs = seed_rounds.read_scores(PLAN, tmp_path)
    assert scores == {"stn": {0: 75.0}, "fcn": {}, "cnn": {0: 50.0}}
    assert runs == {"stn": {0: "stn_seed0"}, "fcn": {}, "cnn": {0: "cnn_seed0"}}


def test_the_last_seed_of_the_budget_is_read_back(tmp_path):
    last = PLAN.max_seeds - 1
    write_job(tmp_path, "cnn", last, 0.5)
    scores, runs = seed_rounds.read_scores(PLAN, tmp_path)
    assert scores["cnn"] == {last: 50.0} and runs["cnn"] == {last: f"cnn_seed{last}"}


def test_the_first_round_runs_every_arm_up_to_the_first_look_less_what_is_done(tmp_path):
    write_job(tmp_path, "cnn", 0, 0.5)
    write_job(tmp_path, "stn", 1, 0.7)
    scores, _ = seed_rounds.read_scores(PLAN, tmp_path)
    jobs = seed_rounds.next_jobs(PLAN, PLAN.decide(scores), scores)
    expected = {(v, s) for v in PLAN.values for s in range(3)} - {("cnn", 0), ("stn", 1)}
    assert sorted(jobs) == sorted(expected)


def test_a_decided_arm_gets_no_more_seeds(tmp_path):
    # stn is 20 points ahead of cnn with almost no spread: decided at the first look (|t| far
    # above the bound). fcn is level with cnn, give or take a point: still open.
    for seed, noise in enumerate([0.0, 0.011, -0.007]):
        write_job(tmp_path, "cnn", seed, 0.5 + noise / 10)
        write_job(tmp_path, "stn", seed, 0.7 + noise / 100)
        write_job(tmp_path, "fcn", seed, 0.5 + noise)
    scores, runs = seed_rounds.read_scores(PLAN, tmp_path)
    decision = PLAN.decide(scores)
    stn = decision.comparisons["stn"]
    assert stn.decision == "better" and stn.seeds_used == 3
    base = np.array([scores["cnn"][s] for s in range(3)])
    arm = np.array([scores["stn"][s] for s in range(3)])
    assert stn.looks[-1]["t"] == pytest.approx(stats.ttest_rel(arm, base).statistic)
    assert decision.comparisons["fcn"].decision == "continue"
    assert seed_rounds.next_jobs(PLAN, decision, scores) == [("cnn", 3), ("fcn", 3)]

    written = seed_rounds.write_decision(
        tmp_path, PLAN, decision, runs, [{"seeds": [0, 1, 2], "jobs": 9, "seconds": 4.0}],
        ["model=stn,fcn,cnn"],
    )  # fmt: skip
    on_disk = json.loads((tmp_path / seed_rounds.DECISION).read_text())
    assert on_disk == written and on_disk["status"] == "running"
    assert on_disk["arms"] == {"setting": "model", "values": ["stn", "fcn", "cnn"],
                               "baseline": "cnn"}  # fmt: skip
    assert on_disk["seeds"] == {"stn": [0, 1, 2], "fcn": [0, 1, 2], "cnn": [0, 1, 2]}
    assert on_disk["design"]["comparisons"] == 2  # alpha shared by both arms
    assert on_disk["wall_seconds"] == 4.0
    assert seed_rounds.previous_rounds(tmp_path) == written["rounds"]


def test_the_status_says_why_the_sweep_stopped(tmp_path):
    decided = PLAN.decide({"stn": {0: 1, 1: 1, 2: 1}, "fcn": {}, "cnn": {}})
    assert seed_rounds.status(decided, stopped=True) == "stopped"
    assert seed_rounds.status(decided, stopped=False) == "running"
    two = replace(PLAN, values=("stn", "cnn"), max_seeds=3)
    far = two.decide({"stn": {0: 90.0, 1: 91.0, 2: 90.5}, "cnn": {0: 50.0, 1: 52.0, 2: 49.0}})
    assert seed_rounds.status(far, stopped=False) == "decided"
    noisy = two.decide({"stn": {0: 90.0, 1: 60.0, 2: 75.0}, "cnn": {0: 70.0, 1: 80.0, 2: 65.0}})
    assert seed_rounds.status(noisy, stopped=False) == "not decided"
    (line,) = seed_rounds.describe(two, noisy)
    assert line.startswith("model=stn vs cnn: not decided at 3 seeds (mean difference +3.33 pp")
    level = two.decide({"stn": {0: 70.1, 1: 69.9, 2: 70.0}, "cnn": {0: 70.0, 1: 70.0, 2: 70.0}})
    (line,) = seed_rounds.describe(two, level)
    assert level.comparisons["stn"].decision == "equivalent"
    assert "(mean difference +0.00 pp, inside ±1 pp by two one-sided t tests" in line
