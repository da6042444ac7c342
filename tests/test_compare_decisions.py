"""Tests for ``compare``'s section on sequential seed sweeps (``stn_lab.compare.decisions``).

Every ``decision.json`` here is the sweeper's own: :func:`stn_lab.sequential.decide` on
hand-made scores (through :class:`stn_lab.seed_rounds.Plan`, as the sweeper calls it) written
by :func:`stn_lab.seed_rounds.write_decision`. The numbers the section shows are checked
against numpy and scipy on the same scores; the picture by the data in its axes and its
pixels. No training, no subprocess.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from test_compare_evidence import not_blank, pixels
from test_compare_helpers import record, write_run

from stn_lab import compare, seed_rounds, sequential
from stn_lab.compare import decisions

# Scores in accuracy points, seeds 0-5. stn - cnn: t = 29 at 3 pairs (under the bound, 35),
# 38 at 4 (over it, 8.3): better at 4. fcn - cnn: mean 0.4, SD 1 over six pairs, never near.
BASE = 80 + np.array([0.3, -0.2, 0.5, 0.1, -0.4, 0.0])
D_STN = np.array([5.0, 5.3, 4.7, 5.2, -20.0, -20.0])
_noise = np.random.default_rng(5).standard_normal(6)
D_FCN = (_noise - _noise.mean()) / _noise.std(ddof=1) + 0.4
PLAN = seed_rounds.Plan(
    setting="model", values=("stn", "fcn", "cnn"), baseline="cnn", fixed=("data=synthetic",),
    delta=1.0, alpha=0.05, first=3, step=1, max_seeds=6,
)  # fmt: skip


def scores_of(diffs: dict[str, np.ndarray], base: np.ndarray = BASE) -> dict:
    out = {"cnn": {s: float(b) for s, b in enumerate(base)}}
    for arm, d in diffs.items():
        out[arm] = {s: float(b + x) for s, (b, x) in enumerate(zip(base, d, strict=True))}
    return out


def write_sweep(folder: Path, plan: seed_rounds.Plan, scores: dict) -> dict:
    """``decision.json`` for ``scores`` as the sweeper writes it after its last look."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = {v: {s: plan.job_name(v, s) for s in scores[v]} for v in plan.values}
    rounds = [{"seeds": [0, 1, 2], "jobs": 9, "seconds": 40.0}, {"seeds": [3], "jobs": 3,
              "seconds": 12.5}]  # fmt: skip
    command = [f"{plan.setting}={','.join(plan.values)}", *plan.fixed]
    return seed_rounds.write_decision(folder, plan, plan.decide(scores), runs, rounds, command)


@pytest.fixture
def sweep(tmp_path: Path) -> decisions.Sweep:
    write_sweep(tmp_path / "decide_model", PLAN, scores_of({"stn": D_STN, "fcn": D_FCN}))
    return decisions.read_decision(tmp_path / "decide_model" / decisions.DECISION_FILE)


def table_row(md: str, comparison: str) -> list[str]:
    (line,) = [row for row in md.splitlines() if f"| {comparison} |" in row]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_file_compare_reads_is_the_one_the_sweeper_writes() -> None:
    assert decisions.DECISION_FILE == seed_rounds.DECISION


def test_section_shows_each_decision_with_the_numbers_of_its_last_look(sweep) -> None:
    md = "\n".join(decisions.decisions_section(decisions.Decisions([sweep])))
    assert md.startswith("## Sequential decisions\n")
    design = sequential.Design(alpha=0.05, delta=1.0, first=3, max_seeds=6, comparisons=2)
    bounds = dict(zip(design.looks, design.t_bounds, strict=True))

    # stn: decided at 4 pairs; mean and SD of the first four differences, t of the paired test.
    stn = table_row(md, "model=stn vs model=cnn")
    d = D_STN[:4]
    t = scipy_stats.ttest_rel(BASE[:4] + d, BASE[:4]).statistic
    t3 = scipy_stats.ttest_rel(BASE[:3] + D_STN[:3], BASE[:3]).statistic
    assert t3 < bounds[3] and t > bounds[4]  # the look that decides is the fourth
    assert stn[2] == "**better at n=4**"
    assert stn[3] == "stn 6, cnn 6"  # seeds run per arm
    assert stn[4] == "4"
    assert stn[5] == f"{d.mean():+.2f} ± {d.std(ddof=1):.2f}" == "+5.05 ± 0.26"
    assert stn[6] == f"{t:+.2f}" and stn[7] == f"±{bounds[4]:.2f}"
    assert stn[8] == ""  # decided: no seeds needed

    # fcn: every look spent, not decided; the seeds a fixed design needs are given.
    fcn = table_row(md, "model=fcn vs model=cnn")
    t = D_FCN.mean() / (D_FCN.std(ddof=1) / np.sqrt(6))
    assert abs(t) < bounds[6]
    assert fcn[2] == "not decided at n=6" and fcn[4] == "6"
    assert fcn[5] == f"{D_FCN.mean():+.2f} ± {D_FCN.std(ddof=1):.2f}" == "+0.40 ± 1.00"
    assert fcn[6] == f"{t:+.2f}" and fcn[7] == f"±{bounds[6]:.2f}"
    needed = sweep.record["comparisons"]["fcn"]["seeds_needed"]
    assert fcn[8] == f"difference {needed['difference']}; equivalence {needed['equivalence']}"

    # The procedure: alpha split by Bonferroni, delta, the looks and the bounds' range.
    (procedure,) = [line for line in md.splitlines() if line.startswith("- `")]
    assert "status **not decided**, 2 rounds in 52 s" in procedure
    assert "`model=stn,fcn,cnn data=synthetic`" in procedure
    assert "α = 0.05 shared by 2 comparisons (Bonferroni: 0.025 each)" in procedure
    assert "δ = ±1 (sequential TOST)" in procedure
    assert "first 3, step 1, max_seeds 6; 4 looks" in procedure
    assert f"|t| bound {bounds[3]:.2f} at n=3 down to {bounds[6]:.2f} at n=6" in procedure
    assert "score: test accuracy (percentage points)" in procedure
    assert "O'Brien–Fleming-type spending" in procedure


def test_the_procedure_names_pocock_spending_when_the_sweep_used_it(tmp_path) -> None:
    pocock = replace(PLAN, spending="pocock")
    write_sweep(tmp_path / "p", pocock, scores_of({"stn": D_STN, "fcn": D_FCN}))
    sweep = decisions.read_decision(tmp_path / "p" / decisions.DECISION_FILE)
    procedure = decisions.procedure_text(sweep)
    assert "Pocock-type spending" in procedure and "O'Brien" not in procedure
    bounds = sequential.Design(delta=1.0, max_seeds=6, comparisons=2, spending="pocock").t_bounds
    assert f"|t| bound {bounds[0]:.2f} at n=3" in procedure


def test_picture_draws_each_look_against_every_planned_bound(sweep, tmp_path: Path) -> None:
    figure = decisions.decisions_figure([sweep])
    stn_ax, fcn_ax = figure.axes
    design = sequential.Design(alpha=0.05, delta=1.0, first=3, max_seeds=6, comparisons=2)
    for ax, diffs, taken in ((stn_ax, D_STN, [3, 4]), (fcn_ax, D_FCN, [3, 4, 5, 6])):
        lines = {line.get_label(): line for line in ax.get_lines()}
        t = [scipy_stats.ttest_1samp(diffs[:n], 0.0).statistic for n in taken]
        assert list(lines["paired t"].get_xdata()) == taken
        np.testing.assert_allclose(lines["paired t"].get_ydata(), t)
        bound = lines["±bound (better / worse)"]
        assert list(bound.get_xdata()) == list(design.looks) == [3, 4, 5, 6]
        np.testing.assert_allclose(bound.get_ydata(), design.t_bounds)
        assert ax.get_yscale() == "symlog"
    ring = {line.get_label(): line for line in stn_ax.get_lines()}["better (n=4)"]
    assert list(ring.get_xdata()) == [4]
    np.testing.assert_allclose(ring.get_ydata(), [scipy_stats.ttest_1samp(D_STN[:4], 0).statistic])
    assert stn_ax.get_title().startswith("model=stn vs model=cnn: better at n=4")
    assert fcn_ax.get_title().startswith("model=fcn vs model=cnn: not decided at n=6")

    decisions.write_decisions(tmp_path / "a.png", [sweep])
    other = tmp_path / "other"
    write_sweep(other, PLAN, scores_of({"stn": D_FCN, "fcn": D_STN}))  # the arms swapped
    decisions.write_decisions(
        tmp_path / "b.png", [decisions.read_decision(other / "decision.json")]
    )
    assert not_blank(tmp_path / "a.png") and not_blank(tmp_path / "b.png")
    assert not np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))


def test_picture_points_up_for_better_whichever_way_the_score_runs(tmp_path: Path) -> None:
    # A loss-like score (smaller is better): the arm 5 points lower is better, its t negative.
    scores = scores_of({"stn": -D_STN})
    out = sequential.decide(scores, "cnn", None, max_seeds=6, larger_is_better=False)
    assert out.comparisons["stn"].decision == "better"
    (tmp_path / "decision.json").write_text(json.dumps(out.to_dict()))
    sweep = decisions.read_decision(tmp_path / "decision.json")
    (ax,) = decisions.decisions_figure([sweep]).axes
    line = {line.get_label(): line for line in ax.get_lines()}["paired t"]
    raw = [look["t"] for look in sweep.record["comparisons"]["stn"]["looks"]]
    assert all(t < 0 for t in raw)
    np.testing.assert_allclose(line.get_ydata(), [-t for t in raw])
    # Without the sweeper's keys the arm is named by its value alone.
    md = "\n".join(decisions.decisions_section(decisions.Decisions([sweep])))
    used = out.comparisons["stn"].seeds_used
    assert table_row(md, "stn vs cnn")[2] == f"**better at n={used}**"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"design": {', "not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"larger_is_better": true, "design": {}}', "design.alpha is missing"),
    ],
)
def test_an_unusable_decision_json_says_why_in_one_line(tmp_path: Path, text, why) -> None:
    (tmp_path / "decision.json").write_text(text)
    with pytest.raises(decisions.DecisionError, match=why) as caught:
        decisions.read_decision(tmp_path / "decision.json")
    assert "\n" not in str(caught.value)


def test_compare_reports_a_sweep_folder_beside_its_ordinary_tables(tmp_path: Path, capsys):
    logs = tmp_path / "logs"
    sweep = logs / "multiruns" / "decide_model_0123456789"
    plan = seed_rounds.Plan("model", ("stn", "cnn"), "cnn", ("data=synthetic",), 1.0, 0.05, 3,
                            1, 20)  # fmt: skip
    # stn scores exactly 0.5 points above cnn on every seed: no spread, t infinite, better.
    for value, shift in (("stn", 0.5), ("cnn", 0.0)):
        for seed, points in enumerate(BASE[:3] + shift):
            run = record(seed, float(points) / 100, f"model={value}", "data=synthetic")
            write_run(sweep / plan.job_name(value, seed), run)
    scores, runs = seed_rounds.read_scores(plan, sweep)
    decision = plan.decide(scores)
    seed_rounds.write_decision(sweep, plan, decision, runs, [{"seeds": [0, 1, 2],
                               "seconds": 30.0}], ["model=stn,cnn"])  # fmt: skip
    # A run elsewhere, below a damaged decision.json: a warning, and listed as left out.
    write_run(logs / "broken" / "0", record(0, 0.7, "model=cnn", "data=synthetic"))
    (logs / "broken" / "decision.json").write_text('{"status": "run')

    out = tmp_path / "out"
    assert compare.main([str(logs), "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    md = (out / "compare.md").read_text()
    assert md.index("## Differences") < md.index("## Sequential decisions") < md.index("## Notes")
    row = table_row(md, "model=stn vs model=cnn")
    assert row[0].endswith("decide_model_0123456789`")
    assert row[2:7] == ["**better at n=3**", "stn 3, cnn 3", "3", "+0.50 ± 0.00", "+∞"]
    assert row[7] == f"±{sequential.Design(delta=1.0).t_bounds[0]:,.0f}"  # 8,360 or so
    assert "Left out: logs/broken/decision.json: not valid JSON" in md.replace(str(logs), "logs")
    assert "broken/decision.json: not valid JSON" in stderr
    assert "Sequential decisions: model=stn vs model=cnn: better at n=3 (see compare.md, " in (
        stdout
    )
    (wrote,) = [line for line in stdout.splitlines() if line.startswith("Wrote ")]
    assert str(out / "decisions.png") in wrote and not_blank(out / "decisions.png")
    (ax,) = decisions.decisions_figure(decisions.find_decisions(
        compare.load_runs([logs]), [logs]).sweeps).axes  # fmt: skip
    (infinite,) = [line for line in ax.get_lines() if line.get_label() == "t = ∞ (no spread)"]
    assert list(infinite.get_xdata()) == [3] and infinite.get_ydata()[0] > 8000
    # The ordinary tables are all there, the sweep's runs pooled as any others.
    assert "| model=stn |" in md and "| model=cnn |" in md

    # The sweep's own folder given: its decision.json is at the top of what compare reads.
    assert compare.main([str(sweep), "--out", str(tmp_path / "direct")]) == 0
    assert "| model=stn vs model=cnn |" in (tmp_path / "direct" / "compare.md").read_text()
    assert (tmp_path / "direct" / "decisions.png").is_file()
    capsys.readouterr()

    # Folders without decision.json: no section, no picture.
    write_run(tmp_path / "plain_logs" / "0", record(0, 0.7, "model=cnn", "data=synthetic"))
    assert compare.main([str(tmp_path / "plain_logs"), "--out", str(tmp_path / "plain")]) == 0
    assert "Sequential" not in capsys.readouterr().out
    assert "## Sequential decisions" not in (tmp_path / "plain" / "compare.md").read_text()
    assert not (tmp_path / "plain" / "decisions.png").exists()
