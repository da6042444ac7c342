"""``compare``'s statistics against their reference implementations, and its pictures.

Fixed small inputs: 2, 3 and 5 seeds with unequal variances. Bootstraps use few replicates
and are compared within Monte Carlo tolerance; everything else must agree to float precision.

References: scipy (``bootstrap(paired=True)``, ``wilcoxon``, ``mannwhitneyu``), statsmodels
(``mcnemar``, ``ttost_paired``, ``ttost_ind``, ``TTestPower``, ``TTestIndPower``,
``multipletests``), rliable (``probability_of_improvement``, ``aggregate_mean``/``_iqm``,
``get_interval_estimates``, ``create_performance_profile``) and autorank (mean ranks and
Nemenyi CD). The MultiBERTs multibootstrap has no package: its published algorithm is written
out below as a plain loop.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import arch.bootstrap
import autorank
import numpy as np
import pandas
import pytest
from matplotlib.image import imread
from matplotlib.text import Text
from rliable import library as rliable_library
from rliable import metrics as rliable_metrics
from scipy import stats as scipy_stats
from statsmodels.stats import contingency_tables, multitest, power, weightstats
from test_compare_helpers import (
    prediction_table,
    record,
    write_predicted_run,
    write_run,
)

from stn_lab import compare
from stn_lab.compare import columns, groups, notes, plots, predictions, sets, stats

# Paired accuracies (a[i], b[i] share seed i) for n = 2, 3 and 5, with unequal variances.
CASES = [
    ([0.80, 0.83], [0.86, 0.87]),
    ([0.80, 0.81, 0.79], [0.90, 0.85, 0.95]),
    ([0.71, 0.74, 0.70, 0.78, 0.75], [0.80, 0.86, 0.79, 0.81, 0.90]),
]
ROPE = 0.05


@pytest.fixture
def rliable(monkeypatch):
    """rliable 1.2 passes ``random_state=`` to arch's bootstraps, which arch 8 no longer
    accepts; drop that keyword, change nothing else. rliable draws its indices from numpy's
    global generator, seeded here."""
    for cls in (arch.bootstrap.IIDBootstrap, arch.bootstrap.IndependentSamplesBootstrap):
        original = cls.__init__

        def init(self, *args, _original=original, random_state=None, **kwargs):
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)
    np.random.seed(0)
    return rliable_library, rliable_metrics


# ---------------------------------------------------------------- 2. per-image evidence
def correctness(n_seeds: int, n_images: int, accuracy: float, spread: float, seed: int):
    """Right/wrong per seed and image: image difficulty shared, seed quality varying."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(-1.0, 1.0, n_images)
    quality = accuracy + spread * rng.standard_normal(n_seeds)
    chance = np.clip(quality[:, None] + 0.2 * difficulty, 0, 1)
    return rng.uniform(size=(n_seeds, n_images)) < chance


def test_multibootstrap_with_one_seed_is_scipys_paired_bootstrap() -> None:
    a = correctness(1, 400, 0.80, 0.0, 1)
    b = correctness(1, 400, 0.86, 0.0, 2)
    ours = predictions.multibootstrap(a, b, True, 4000, np.random.default_rng(0))
    ref = scipy_stats.bootstrap(
        (a[0].astype(float), b[0].astype(float)),
        lambda x, y: y.mean() - x.mean(),
        paired=True,
        vectorized=False,
        method="percentile",
        n_resamples=4000,
        rng=np.random.default_rng(1),
    ).confidence_interval
    assert ours.diff == pytest.approx(b.mean() - a.mean())
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), abs=0.006)


def multibootstrap_reference(a, b, paired, reps, rng):
    """Sellam et al. (2022), MultiBERTs, Algorithm 1: per replicate, draw seeds and examples
    with replacement (the same seeds on both sides when paired) and take the difference of the
    mean scores on that sample."""
    out = []
    for _ in range(reps):
        x = rng.integers(0, a.shape[1], a.shape[1])
        sa = rng.integers(0, a.shape[0], a.shape[0])
        sb = sa if paired else rng.integers(0, b.shape[0], b.shape[0])
        out.append(b[np.ix_(sb, x)].mean() - a[np.ix_(sa, x)].mean())
    return np.percentile(out, [2.5, 97.5])


@pytest.mark.parametrize("n_seeds", [2, 3, 5])
@pytest.mark.parametrize("paired", [True, False])
def test_multibootstrap_matches_the_published_algorithm(n_seeds: int, paired: bool) -> None:
    a = correctness(n_seeds, 300, 0.78, 0.01, n_seeds)  # unequal seed-to-seed spread
    b = correctness(n_seeds, 300, 0.84, 0.05, 10 + n_seeds)
    ours = predictions.multibootstrap(a, b, paired, 2000, np.random.default_rng(0))
    ref = multibootstrap_reference(a, b, paired, 2000, np.random.default_rng(1))
    assert (ours.low, ours.high) == pytest.approx(tuple(ref), abs=0.008)
    # Both sources of variation: wider than the images alone give for the mean seed.
    images_only = predictions.multibootstrap(
        a.mean(0, keepdims=True), b.mean(0, keepdims=True), True, 2000, np.random.default_rng(0)
    )
    assert ours.high - ours.low >= images_only.high - images_only.low - 0.004


@pytest.mark.parametrize(("a_only", "b_only"), [(0, 0), (3, 9), (10, 10), (1, 30), (40, 25)])
@pytest.mark.parametrize("exact", [True, False])
def test_mcnemar_matches_statsmodels(a_only: int, b_only: int, exact: bool) -> None:
    both, neither = 50, 7
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=bool)
    ours = predictions.mcnemar(a, b, exact=exact)
    assert (ours.a_only, ours.b_only) == (a_only, b_only)
    if a_only + b_only == 0:
        assert ours.p == 1.0
        return
    table = [[both, a_only], [b_only, neither]]
    ref = contingency_tables.mcnemar(table, exact=exact, correction=True)
    assert ours.p == pytest.approx(ref.pvalue)


def test_disagreements_most_seeds_then_most_confident_mistake() -> None:
    label = np.array([0, 1, 2, 3, 4])
    a = predictions.Predictions(
        np.arange(5), label,
        pred=np.array([[9, 1, 9, 9, 4], [9, 1, 2, 9, 4]]),
        confidence=np.array([[0.9, 0.5, 0.99, 0.6, 0.5], [0.7, 0.5, 0.5, 0.8, 0.5]]),
    )  # fmt: skip
    b = predictions.Predictions(
        np.arange(5), label,
        pred=np.array([[0, 8, 2, 3, 4], [0, 8, 2, 3, 4]]),
        confidence=np.full((2, 5), 0.5),
    )  # fmt: skip
    b_right, a_right = predictions.disagreements(a, b, k=16)
    # Images 0 and 3 are won in both seeds; 0's mistake is the more confident (0.8 vs 0.7).
    assert b_right == [(0, 0, 9, pytest.approx(0.8)), (3, 3, 9, pytest.approx(0.7)),
                       (2, 2, 9, pytest.approx(0.99))]  # fmt: skip
    assert a_right == [(1, 1, 8, 0.5)]


# ---------------------------------------------------------------- 3. the verdict
@pytest.mark.parametrize(("a", "b"), CASES)
def test_tost_matches_statsmodels(a: list[float], b: list[float]) -> None:
    xa, xb = np.array(a), np.array(b)
    for delta in (ROPE, 0.2):
        p, low, high = weightstats.ttost_paired(xb, xa, -delta, delta)
        ours = stats.tost(a, b, delta, paired=True)
        assert (ours.p, ours.p_lower, ours.p_upper) == pytest.approx((p, low[1], high[1]))
        p, low, high = weightstats.ttost_ind(xb, xa, -delta, delta, usevar="unequal")
        ours = stats.tost(a, b, delta, paired=False)
        assert (ours.p, ours.p_lower, ours.p_upper) == pytest.approx((p, low[1], high[1]))


@pytest.mark.parametrize(("a", "b"), CASES)
def test_power_matches_statsmodels(a: list[float], b: list[float]) -> None:
    n = len(a)
    paired = stats.power_analysis(a, b, 0.005, paired=True)
    sd = np.std(np.subtract(b, a), ddof=1)
    assert paired.sd == pytest.approx(sd)
    effect = power.TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8)
    assert paired.mde == pytest.approx(effect * sd, rel=1e-5)
    needed = power.TTestPower().solve_power(effect_size=0.005 / sd, alpha=0.05, power=0.8)
    assert paired.seeds_needed == math.ceil(needed)
    welch = stats.power_analysis(a, b, 0.005, paired=False)
    pooled = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)  # equal n
    effect = power.TTestIndPower().solve_power(nobs1=n, ratio=1.0, alpha=0.05, power=0.8)
    assert welch.mde == pytest.approx(effect * pooled, rel=1e-5)
    needed = power.TTestIndPower().solve_power(effect_size=0.005 / pooled, alpha=0.05, power=0.8)
    assert welch.seeds_needed == math.ceil(needed)


def test_power_with_unequal_groups_matches_statsmodels() -> None:
    a, b = [0.70, 0.74, 0.69], [0.80, 0.86, 0.79, 0.81, 0.90]
    ours = stats.power_analysis(a, b, 0.01, paired=False)
    effect = power.TTestIndPower().solve_power(nobs1=3, ratio=5 / 3, alpha=0.05, power=0.8)
    assert ours.mde == pytest.approx(effect * ours.sd, rel=1e-5)
    assert stats.power_analysis([0.8], b, 0.01, paired=False) is None


def difference(a: list[float], b: list[float], rope: float = ROPE) -> groups.Difference:
    def group(name: str, accs: list[float]) -> groups.GroupStats:
        return groups.GroupStats(
            key=(("x", name),), n=len(accs), seeds=list(range(len(accs))), accs=accs,
            acc_mean=float(np.mean(accs)), acc_std=None, acc_ci=None, loss_mean=0.0,
            loss_std=None, label=f"x={name}", values=(name,),
        )  # fmt: skip

    table = groups.Table([group("a", a), group("b", b)], [("config", "x")], {})
    (d,) = groups.pair_differences(table, groups.Analysis(rope=rope, reps=200))
    return d


def test_verdict_better_equivalent_inconclusive() -> None:
    better = difference(*CASES[2])
    assert better.verdict == "better" and better.verdict_text == "B better"
    worse = difference(CASES[2][1], CASES[2][0])
    assert worse.verdict_text == "A better"
    # Tiny, consistent gain: significant, and TOST puts it inside ±0.5 pp as well.
    tiny = difference([0.900, 0.910, 0.920], [0.901, 0.9115, 0.9208], rope=0.005)
    assert tiny.verdict == "better" and tiny.verdict_text == "B better, by less than ±0.5 pp"
    same = difference([0.900, 0.910, 0.920, 0.905, 0.915], [0.901, 0.909, 0.921, 0.904, 0.916])
    assert same.verdict == "equivalent" and same.verdict_text == "equivalent within ±5 pp"
    noisy = difference([0.80, 0.90, 0.70], [0.85, 0.80, 0.95], rope=0.005)
    assert noisy.verdict == "inconclusive"
    assert noisy.verdict_text == (
        f"inconclusive: detects {100 * noisy.power.mde:.2f} pp at n=3; "
        f"{noisy.power.seeds_needed} seeds/group to detect ±0.5 pp"
    )


# ---------------------------------------------------------------- 4. P(improvement)
POI_CASES = [
    ([0.80, 0.83], [0.86, 0.82]),
    ([0.80, 0.81, 0.79], [0.90, 0.80, 0.95]),
    ([0.71, 0.74, 0.70, 0.78, 0.75], [0.80, 0.74, 0.79, 0.70, 0.90]),
    ([0.70, 0.74, 0.69], [0.80, 0.86, 0.79, 0.81, 0.69]),  # unequal n, a tie
]


@pytest.mark.parametrize(("a", "b"), POI_CASES)
def test_probability_of_improvement_matches_rliable(rliable, a, b) -> None:
    library, metrics = rliable
    xa, xb = np.array(a)[:, None], np.array(b)[:, None]
    ours = stats.improvement(a, b, 20000, np.random.default_rng(0))
    assert ours.p == pytest.approx(metrics.probability_of_improvement(xb, xa))
    u = scipy_stats.mannwhitneyu(b, a, alternative="greater").statistic
    assert ours.p == pytest.approx(u / (len(a) * len(b)))
    point, _ = library.get_interval_estimates(
        {"b>a": (xb, xa)},
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
        reps=10,
    )
    assert ours.p == pytest.approx(point["b>a"][0])
    # The interval: rliable's own resamples (its stratified independent bootstrap, as
    # get_interval_estimates draws them). P takes values k / mn, so a 2.5% percentile from 1000
    # replicates wanders by a step or two: ours must lie in the band rliable's replicates give
    # for the 1-5% (and 95-99%) percentiles.
    replicates = library.StratifiedIndependentBootstrap(xb, xa).apply(
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), 1000
    )[:, 0]
    low_band, high_band = np.percentile(replicates, [1, 5]), np.percentile(replicates, [95, 99])
    assert low_band[0] - 1e-9 <= ours.low <= low_band[1] + 1e-9
    assert high_band[0] - 1e-9 <= ours.high <= high_band[1] + 1e-9


def test_improvement_flag_above_threshold_and_noted(tmp_path: Path, capsys) -> None:
    assert stats.improvement([0.8, 0.81, 0.79], [0.9, 0.85, 0.95], 100,
                             np.random.default_rng(0)).flagged  # fmt: skip
    assert not stats.improvement(*POI_CASES[0], 100, np.random.default_rng(0)).flagged  # 0.75
    d = difference(*CASES[1])
    (poi,) = [c for c in columns.difference_columns(d.rope) if c.title == "P(B > A)"]
    assert poi.cell(d).endswith("▲")
    assert "above 0.75" in notes.POI_NOTE and "lower end is above 0.5" in notes.POI_NOTE


# ---------------------------------------------------------------- 5. across distortion sets
def scores_matrix(n_seeds: int) -> np.ndarray:
    """[seed, set] accuracies on 5 sets, the spread growing from set to set."""
    rng = np.random.default_rng(n_seeds)
    base = np.array([0.95, 0.90, 0.85, 0.80, 0.70])
    return base + rng.standard_normal((n_seeds, 5)) * np.array([0.002, 0.01, 0.02, 0.04, 0.06])


@pytest.mark.parametrize("n_seeds", [2, 3, 5])
def test_mean_and_iqm_intervals_match_rliable(rliable, n_seeds: int) -> None:
    library, metrics = rliable
    scores = scores_matrix(n_seeds)
    assert sets.aggregate_mean(scores) == pytest.approx(metrics.aggregate_mean(scores))
    assert sets.aggregate_iqm(scores) == pytest.approx(metrics.aggregate_iqm(scores))
    taus = np.linspace(0.6, 1.0, 21)
    mean, iqm, _ = sets.set_intervals(scores, taus, 4000, np.random.default_rng(0))
    point, interval = library.get_interval_estimates(
        {"m": scores},
        lambda x: np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)]),
        reps=4000,
    )
    for k, ours in enumerate((mean, iqm)):
        assert ours.point == pytest.approx(point["m"][k])
        assert (ours.low, ours.high) == pytest.approx(tuple(interval["m"][:, k]), abs=0.004)


def test_performance_profile_matches_rliable(rliable) -> None:
    library, _ = rliable
    scores = scores_matrix(3)
    taus = np.linspace(0.6, 1.0, 21)
    profiles, bands = library.create_performance_profile({"m": scores}, taus, reps=2000)
    assert sets.performance_profile(scores, taus) == pytest.approx(profiles["m"])
    *_, ours = sets.set_intervals(scores, taus, 2000, np.random.default_rng(0))
    assert ours.point == pytest.approx(profiles["m"])
    # Percentiles of a step function: rliable's replicates may land one step (1/15) away.
    np.testing.assert_allclose(ours.low, bands["m"][0], atol=0.07)
    np.testing.assert_allclose(ours.high, bands["m"][1], atol=0.07)


def test_design_guard_floors_are_the_exact_tests_smallest_p() -> None:
    assert stats.wilcoxon_floor(4) == 0.125  # the example: 4 sets never below 0.125
    for n in (2, 3, 4, 5, 6):
        all_positive = np.arange(1, n + 1) / 100
        exact = scipy_stats.wilcoxon(all_positive, method="exact").pvalue
        assert stats.wilcoxon_floor(n) == pytest.approx(exact)
    for m, n in ((2, 2), (3, 3), (3, 5)):
        exact = scipy_stats.mannwhitneyu(np.arange(m), 10 + np.arange(n), method="exact").pvalue
        assert stats.mann_whitney_floor(m, n) == pytest.approx(exact)
    # Friedman, 3 blocks x 3 treatments, by enumerating every ranking of every block.
    perms = list(itertools.permutations(range(3)))
    statistic = [
        scipy_stats.friedmanchisquare(*np.array(blocks).T).statistic
        for blocks in itertools.product(perms, repeat=3)
    ]
    exact_floor = np.mean(np.isclose(statistic, max(statistic)))
    assert stats.friedman_floor(3, 3) == pytest.approx(exact_floor)
    rows = sets.design_guard(3, 4, 2)
    assert [(r.over, r.floor, r.can_reject) for r in rows] == [
        ("3 seeds", 0.25, False), ("3 vs 3 seeds", 0.1, False), ("4 sets", 0.125, False),
    ]  # fmt: skip


@pytest.mark.parametrize(("n_sets", "n_models"), [(6, 3), (7, 4)])
def test_ranks_and_cd_match_autorank(n_sets: int, n_models: int) -> None:
    rng = np.random.default_rng(n_sets)
    means = rng.uniform(0.6, 0.95, (n_sets, n_models)) + np.linspace(0, 0.05, n_models)
    means[0, :2] = 0.9  # a tie: ranks averaged
    labels = [f"m{i}" for i in range(n_models)]
    ours = sets.rank_models(means, labels)
    ref = autorank.autorank(
        pandas.DataFrame(means, columns=labels), alpha=0.05, force_mode="nonparametric"
    )
    assert ours.mean_ranks == pytest.approx(ref.rankdf["meanrank"].to_dict())
    assert ours.cd == pytest.approx(ref.cd, rel=1e-4)  # autorank's qsturng is an approximation
    assert ours.friedman_p == pytest.approx(ref.pvalue)
    raw = [
        scipy_stats.wilcoxon(means[:, j], means[:, i]).pvalue
        for i in range(n_models)
        for j in range(i + 1, n_models)
    ]
    assert [p for *_, p, _ in ours.pairwise] == pytest.approx(raw)
    holm = multitest.multipletests(raw, method="holm")[1]
    assert [q for *_, q in ours.pairwise] == pytest.approx(holm.tolist())


# ---------------------------------------------------------------- end to end
def write_job(root: Path, model: str, seed: int, correct: np.ndarray, *overrides: str) -> Path:
    """A completed job of ``train model=<model> data=synthetic data.num_test=40 <overrides>``
    that scored its 40 test images as ``correct`` says."""
    return write_predicted_run(
        root, correct, seed, f"model={model}", "data=synthetic", "data.num_test=40", *overrides
    )


def edit_record(run: Path, change) -> None:
    """Change a written metrics.json in place (a record of another version, a broken one)."""
    payload = json.loads((run / "metrics.json").read_text())
    change(payload)
    (run / "metrics.json").write_text(json.dumps(payload))


def without_dropout(payload: dict) -> None:
    payload["variance"]["randomised_by_seed"].remove("dropout masks")


def test_compare_shows_paired_rows_verdicts_evidence_and_manifest(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2):
        write_job(tmp_path / "logs" / f"cnn{seed}", "cnn", seed, rng.uniform(size=40) < 0.5)
        stn = write_job(tmp_path / "logs" / f"stn{seed}", "stn", seed, rng.uniform(size=40) < 0.9)
        edit_record(stn, without_dropout)  # as if another version had recorded it
    out = tmp_path / "out"
    assert compare.main([str(tmp_path / "logs"), "--out", str(out), "--rope", "1"]) == 0
    md = (out / "compare.md").read_text()
    (row,) = [line for line in md.splitlines() if line.startswith("| model | model=cnn")]
    assert "| paired t |" in row and "| **B better** |" in row and "▲" in row
    evidence = md.split("### Per-image evidence")[1].split("###")[0]
    assert "| 40 |" in evidence and "seed 0:" in evidence and "seed 2:" in evidence
    assert "TOST p (±1)" in md
    # The manifests disagree on dropout: said under every table.
    note = "dropout masks (only `model=cnn`)"
    # Results, differences, per-seed and per-image tables (no per-class table here).
    assert md.count(note) == 4 and "manifests disagree" in md
    tex = (out / "compare.tex").read_text()
    assert "B better" in tex and "dropout masks (only model=cnn)" in tex
    assert r"paired t" in tex and "Per-image evidence" in tex
    assert (out / "disagreements.png").is_file()
    csv_text = (out / "differences.csv").read_text()
    assert "multiboot_low" in csv_text and ",better,B better" in csv_text


def test_a_training_only_data_setting_keeps_the_per_image_evidence(tmp_path: Path) -> None:
    # Batch size shapes training only: both groups score the same test images.
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        for batch in (32, 64):
            root = tmp_path / "logs" / f"batch{batch}_seed{seed}"
            write_job(root, "stn", seed, rng.uniform(size=40) < 0.8, f"data.batch_size={batch}")
    out = tmp_path / "out"
    assert compare.main([str(tmp_path / "logs"), "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    evidence = md.split("### Per-image evidence")[1].split("###")[0]
    assert "data.batch_size" in md and "| 40 |" in evidence
    assert "different test images" not in md


def test_disagreements_skipped_in_one_line_without_the_data(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)

    def no_such_data(payload: dict) -> None:
        payload["config"]["data"]["_target_"] = "stn_lab.data.datamodules.NoSuchDataModule"

    for seed in (0, 1):
        for model, acc in (("cnn", 0.5), ("stn", 0.9)):
            run = tmp_path / "logs" / f"{model}{seed}"
            write_job(run, model, seed, rng.uniform(size=40) < acc)
            edit_record(run, no_such_data)
    assert compare.main([str(tmp_path / "logs"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    (line,) = [e for e in err.splitlines() if "disagreements.png" in e]
    assert line.startswith("compare: no disagreements.png: test images unavailable here")
    assert not (tmp_path / "out" / "disagreements.png").exists()


def test_sweep_over_sets_guard_and_refusal(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(plots, "MAX_PAIRS", 1)  # one grid of disagreements is enough here
    rng = np.random.default_rng(2)
    for model, acc in (("cnn", 0.6), ("stn", 0.8)):
        for t, distortion in enumerate(("R", "RTS", "P", "E")):
            for seed in (0, 1, 2):
                correct = rng.uniform(size=40) < acc - 0.05 * t
                write_job(tmp_path / "logs" / f"{model}{distortion}{seed}", model, seed, correct,
                          f"distortion={distortion}")  # fmt: skip
    out = tmp_path / "out"
    assert compare.main([str(tmp_path / "logs"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    md = (out / "compare.md").read_text()
    section = md.split("## Across distortion sets (distortion)")[1]
    assert "| model | seeds | R (%) | RTS (%) | P (%) | E (%) |" in section  # the config's order
    evidence = md.split("### Per-image evidence")[1].split("###")[0]
    assert "n/a: the groups differ in distortion, so they score different test images" in evidence
    assert "| model=cnn | 0, 1, 2 |" in section and "IQM" in section
    assert "| Wilcoxon signed-rank (exact) across sets | 4 sets | 0.125 | **no** |" in md
    assert "No critical-difference diagram: 4 sets and 2 models" in section
    (line,) = [e for e in captured.err.splitlines() if "critical-difference" in e]
    assert line == (
        "compare: no critical-difference diagram: 4 sets and 2 models (needs at least 6 sets "
        "and 3 models)"
    )
    assert (out / "profile.png").is_file() and not (out / "cd.png").exists()
    assert (out / "disagreements.png").is_file()
    tex = (out / "compare.tex").read_text()
    assert r"model & R (\%) & RTS (\%) & P (\%) & E (\%) & mean [95\% CI] & IQM [95\% CI] \\" in tex


def sets_table(accs: dict[tuple[str, str], list[float]]) -> groups.Table:
    """A table of model x distortion groups with the given accuracies (seeds 0, 1, ...)."""
    table = groups.Table([], [("choice", "model"), ("choice", "distortion")], {})
    for (model, distortion), values in accs.items():
        table.groups.append(
            groups.GroupStats(
                key=((model, distortion),), n=len(values), seeds=list(range(len(values))),
                accs=values, acc_mean=float(np.mean(values)), acc_std=None, acc_ci=None,
                loss_mean=0.0, loss_std=None, values=(model, distortion),
                label=f"model={model} distortion={distortion}",
            )
        )  # fmt: skip
    return table


SIX_SETS = ("R", "RTS", "P", "E", "TC", "none")


def test_sweep_over_six_sets_and_three_models_ranks_by_hand(tmp_path: Path) -> None:
    # Model a is best on every set. b beats c on four sets, c beats b on one, and they tie on
    # one: mean ranks a = 1, b = (2 x 4 + 3 + 2.5) / 6 = 13.5 / 6 = 2.25, c = 16.5 / 6 = 2.75.
    means = {
        "a": [0.9] * 6,
        "b": [0.8, 0.8, 0.8, 0.8, 0.6, 0.7],
        "c": [0.7, 0.7, 0.7, 0.7, 0.65, 0.7],
    }
    accs = {
        (m, s): [v, v] for m, values in means.items() for s, v in zip(SIX_SETS, values, strict=True)
    }
    analysis = sets.sets_analysis(sets_table(accs), reps=200)
    assert analysis.ranks is not None and not analysis.refusal
    assert analysis.ranks.mean_ranks == pytest.approx({"model=a": 1.0, "model=b": 2.25,
                                                       "model=c": 2.75})  # fmt: skip
    # Friedman by hand: k = 3 models, N = 6 sets, rank sums R = 6, 13.5, 16.5.
    chi2 = 12 / (6 * 3 * 4) * (6**2 + 13.5**2 + 16.5**2) - 3 * 6 * 4
    ties = 1 - (2**3 - 2) / (6 * (3**3 - 3))  # one tie of two, in one of six blocks
    assert analysis.ranks.friedman_p == pytest.approx(scipy_stats.chi2.sf(chi2 / ties, 2))
    # Nemenyi: q(0.95, 3, inf) = 3.314 / sqrt(2) (Demsar 2006, table 5: 2.343).
    assert analysis.ranks.cd == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 6)), abs=1e-3)
    figure = plots.cd_figure(analysis)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert {"model=a (1.00)", "model=b (2.25)", "model=c (2.75)"} <= set(texts)
    assert f"CD = {analysis.ranks.cd:.2f}" in texts
    plots.write_cd(tmp_path / "cd.png", analysis)
    assert not_blank(tmp_path / "cd.png")


def test_rope_must_be_positive(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        compare.main([str(tmp_path), "--rope", "0"])
    assert stop.value.code == 2
    assert "--rope must be a positive number of accuracy points" in capsys.readouterr().err


def test_runs_without_predictions_say_why(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for seed in (0, 1):
        for model in ("cnn", "stn"):
            correct = rng.uniform(size=40) < 0.7
            write_job(tmp_path / "sweep" / f"{model}{seed}", model, seed, correct)
    (tmp_path / "sweep" / "stn1" / "predictions.npy").unlink()
    table = compare.build_table(compare.load_runs([tmp_path]).results)
    (d,) = compare.pair_differences(table, groups.Analysis(reps=50))
    assert d.images is None and not d.images_damaged
    assert d.images_missing == "sweep/stn1 has no predictions.npy (an older run?)"
    mcnemar = columns.image_columns()[-1]
    assert mcnemar.cell(d).startswith("n/a: sweep/stn1")


@pytest.mark.parametrize("damage", ["truncated", "pickled", "noise", "wrong columns"])
def test_a_damaged_predictions_file_is_named_in_one_line(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "sweep" / "3" / "predictions.npy"
    path.parent.mkdir(parents=True)
    np.save(path, prediction_table(np.ones(40, dtype=bool)))
    data = path.read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "pickled": b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
        + b" " * 50 + b"\n" + b"\x80\x04K\x01.",
        "noise": bytes(range(256)),
    }  # fmt: skip
    if damage == "wrong columns":
        np.save(path, np.arange(40))
    else:
        path.write_bytes(damaged[damage])
    with pytest.raises(predictions.PredictionsError) as caught:
        predictions.load_predictions(path)
    message = str(caught.value)
    assert caught.value.damaged and "sweep/3/predictions.npy" in message
    assert "\n" not in message and "pickle" not in message.lower()


# ---------------------------------------------------------------- the pictures
def pixels(path: Path) -> np.ndarray:
    return imread(path)[..., :3]


def not_blank(path: Path) -> bool:
    """Whether a PNG holds a drawing: more than 1% of its pixels are not background white."""
    return float((pixels(path).min(axis=-1) < 0.9).mean()) > 0.01


def two_group_table(tmp_path: Path, stn_accs: list[float]) -> groups.Table:
    runs = [record(s, acc, "model=cnn", "data=synthetic") for s, acc in enumerate([0.6, 0.62])]
    runs += [record(s, acc, "model=stn", "data=synthetic") for s, acc in enumerate(stn_accs)]
    for i, run in enumerate(runs):
        write_run(tmp_path / str(i), run)
    return compare.build_table(compare.load_runs([tmp_path]).results)


def test_comparison_picture_shows_one_bar_per_group_and_changes_with_them(tmp_path: Path) -> None:
    table = two_group_table(tmp_path / "a", [0.80, 0.84])
    figure = plots.comparison_figure(table)
    (ax,) = figure.axes
    bars = [p.get_width() for p in ax.patches]
    assert sorted(bars) == pytest.approx([61.0, 82.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["model=cnn", "model=stn"]
    plots.write_comparison(tmp_path / "a.png", table)
    plots.write_comparison(tmp_path / "b.png", two_group_table(tmp_path / "b", [0.70, 0.72]))
    assert not_blank(tmp_path / "a.png") and not_blank(tmp_path / "b.png")
    assert not np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))


def test_comparison_picture_title_fits_in_the_figure(tmp_path: Path) -> None:
    # Every choice the groups share goes under the title: a long line that must fit.
    shared = ("model=stn", "data=fashion_mnist_distorted", "localiser=coordconv",
              "activation=leakyrelu", "transform=projective", "localiser_size=light")  # fmt: skip
    runs = [
        record(s, acc + s / 100, *shared, f"model.stn.lr_mult={m}")
        for m, acc in ((0.1, 0.8), (1.0, 0.7))
        for s in (0, 1)
    ]
    for i, run in enumerate(runs):
        write_run(tmp_path / str(i), run)
    table = compare.build_table(compare.load_runs([tmp_path]).results)
    assert len(", ".join(f"{k}={v}" for k, v in table.fixed.items())) > 150
    figure = plots.comparison_figure(table)
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)  # constrained layout places the title on drawing
    (title,) = [t for t in figure.findobj(Text) if t.get_text().startswith("Test accuracy")]
    box, inside = title.get_window_extent(renderer), figure.bbox
    assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0
    assert box.y1 <= inside.y1
    assert "optimizer=adam" in title.get_text() and "\n" in title.get_text()


def test_profile_picture_has_one_curve_and_band_per_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    accs = {(m, s): list(rng.uniform(lo, lo + 0.1, 3)) for m, lo in (("a", 0.8), ("b", 0.6))
            for s in ("R", "RTS", "P")}  # fmt: skip
    analysis = sets.sets_analysis(sets_table(accs), reps=200)
    figure = plots.profile_figure(analysis)
    (ax,) = figure.axes
    assert [line.get_label() for line in ax.get_lines()] == ["model=a", "model=b"]
    assert len(ax.collections) == 2  # the bootstrap bands
    for line, model in zip(ax.get_lines(), analysis.models, strict=True):
        assert line.get_ydata() == pytest.approx(model.profile.point)
    plots.write_profile(tmp_path / "a.png", analysis)
    accs[("b", "R")] = [0.95, 0.96, 0.97]
    plots.write_profile(tmp_path / "b.png", sets.sets_analysis(sets_table(accs), reps=200))
    assert not_blank(tmp_path / "a.png")
    assert not np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))


def test_disagreements_picture_shows_each_side_of_each_model_pair(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for seed in (0, 1):
        write_job(tmp_path / "logs" / f"cnn{seed}", "cnn", seed, rng.uniform(size=40) < 0.5)
        write_job(tmp_path / "logs" / f"stn{seed}", "stn", seed, rng.uniform(size=40) < 0.9)
    table = compare.build_table(compare.load_runs([tmp_path / "logs"]).results)
    diffs = compare.pair_differences(table, groups.Analysis(reps=50))
    figure = plots.disagreements_figure(diffs, [f"class_{k}" for k in range(10)])
    (row,) = figure.subfigs
    left, right = row.subfigs
    assert left._suptitle.get_text().startswith("model=stn right, model=cnn wrong")
    assert right._suptitle.get_text().startswith("model=cnn right, model=stn wrong")
    (d,) = diffs
    b_wins, a_wins = predictions.disagreements(d.images.a, d.images.b, plots.DISAGREEMENTS)
    for side, wins in ((left, b_wins), (right, a_wins)):
        (ax,) = side.axes
        assert len(ax.images) == (1 if wins else 0)
        assert len(ax.texts) == max(len(wins), 1)  # a caption per image, or "none"
    assert plots.write_disagreements(tmp_path / "d.png", diffs) == ""
    assert not_blank(tmp_path / "d.png")
