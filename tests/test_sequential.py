"""``stn_lab.sequential``: the group-sequential seed sweep's statistics.

The boundaries are checked against published values and an independent integrator (the
``gsdesign`` package, a port of gsDesign's grid); the procedure's error rates, power and
seeds used by vectorised simulation of 20,000 sweeps with normal seed noise (no training).
Monte Carlo tolerances are 3 standard errors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from stn_lab import boundaries, sequential
from stn_lab.compare.stats import t_power

RUNS = 20_000
#: The false better/worse rate is measured over more sweeps: at 20,000 the nominal t mapping
#: (which spends 0.055 at alpha 0.05, see :func:`boundaries.t_boundaries`) would pass as well.
NULL_RUNS = 100_000
ALPHA = 0.05


def sweeps(seed: int, shift: float = 0.0, seeds: int = 20, runs: int = RUNS) -> np.ndarray:
    """``runs`` simulated sweeps: per-seed differences with SD 1 and mean ``shift``."""
    return np.random.default_rng(seed).standard_normal((runs, seeds)) + shift


def mc_se(p: float, runs: int = RUNS) -> float:
    return math.sqrt(p * (1 - p) / runs)


# ---------------------------------------------------------------- peer checks of the boundaries
def test_boundaries_match_rpact_at_unequal_looks():
    # rpact's own unit tests (rpact-com/rpact, tests/testthat/test-f_design_group_sequential.R,
    # "'getDesignGroupSequential' with type of design = 'asOF' and 'bsKD' and non-binding
    # futility bounds", kMax = 3 and 4): getDesignGroupSequential(alpha = 0.13, sided = 1,
    # typeOfDesign = "asOF", informationRates = ...). With non-binding futility the efficacy
    # bounds are the pure spending bounds: criticalValues and alphaSpent below.
    k3 = boundaries.z_boundaries([0.4, 0.75, 1.0], 0.13, sides=1)
    np.testing.assert_allclose(k3, [2.1280732, 1.4368565, 1.2468994], atol=1e-5)
    k4 = boundaries.z_boundaries([0.4, 0.75, 0.85, 1.0], 0.13, sides=1)
    np.testing.assert_allclose(k4, [2.1280732, 1.4368565, 1.422873, 1.2970881], atol=1e-5)
    spent = boundaries.obf_spending([0.4, 0.75, 1.0], 0.13, sides=1)
    np.testing.assert_allclose(spent, [0.016665509, 0.080406163, 0.13], atol=1e-8)


def test_boundaries_match_published_tables_at_equal_looks():
    # Lan-DeMets O'Brien-Fleming-type spending at equally spaced looks, the values gsDesign
    # (sfLDOF) and rpact (asOF) give and several packages' test suites quote: K = 3, one-sided
    # 0.025: 3.7103 2.5114 1.9930; K = 5, two-sided 0.05 (0.025 a side): 4.877 3.357 2.680
    # 2.290 2.031 (also RTSA's).
    k3 = boundaries.z_boundaries([1 / 3, 2 / 3, 1.0], 0.025, sides=1)
    np.testing.assert_allclose(k3, [3.7103, 2.5114, 1.9930], atol=1e-3)
    k5 = boundaries.z_boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.05, sides=2)
    np.testing.assert_allclose(k5, [4.877, 3.357, 2.680, 2.290, 2.031], atol=1e-3)


@pytest.mark.parametrize(
    ("looks", "alpha", "sides", "spending"),
    [
        (tuple(range(3, 21)), 0.05, 2, "obf"),
        (tuple(range(3, 21)), 0.05, 1, "obf"),
        ((3, 5, 8, 13, 20), 0.01, 2, "obf"),
        (tuple(range(3, 21)), 0.05, 2, "pocock"),
        ((3, 5, 8, 13, 20), 0.01, 1, "pocock"),
    ],
)
def test_boundaries_spend_alpha_in_gsdesign_integrator(looks, alpha, sides, spending):
    """gsDesign's grid and recursion (Python port, ``gsdesign`` on PyPI): the probability of
    crossing our bounds by each look, under the null, is the spending function there."""
    import gsdesign

    fractions = np.array(looks) / looks[-1]
    bounds = boundaries.z_boundaries(fractions, alpha, sides, spending)
    lower = -bounds if sides == 2 else np.full(bounds.size, -np.inf)
    grid = gsdesign.h1(80, 0.0, fractions[0], lower[0], bounds[0])
    still = [grid[2].sum()]
    for k in range(1, len(looks)):
        grid = gsdesign.hupdate(
            80, 0.0, fractions[k], lower[k], bounds[k], 0.0, fractions[k - 1], grid
        )
        still.append(grid[2].sum())
    spent = boundaries.SPENDING[spending](fractions, alpha, sides)
    np.testing.assert_allclose(1.0 - np.array(still), spent, atol=1e-7)


def test_pocock_spending_is_the_lan_demets_pocock_function():
    # alpha ln(1 + (e - 1) t): nothing at t = 0, all of alpha at t = 1, and at t = 1/2
    # ln(1.859140914...) = 0.620115... of it (worked by hand from e).
    spent = boundaries.pocock_spending([0.0, 0.5, 1.0], 0.05)
    np.testing.assert_allclose(spent, [0.0, 0.05 * 0.6201145, 0.05], atol=1e-8)
    # Even spending makes the z bounds nearly flat (Pocock's constant bound), unlike OBF's.
    z = boundaries.z_boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.05, 2, "pocock")
    assert z.max() - z.min() < 0.3 and z[0] < 3.0


# ---------------------------------------------------------------- operating characteristics
def test_no_difference_keeps_false_better_or_worse_at_alpha():
    design = sequential.Design(alpha=ALPHA)
    decision, _ = sequential.apply(sweeps(1, runs=NULL_RUNS), design)
    false = np.isin(decision, [sequential.BETTER, sequential.WORSE]).mean()
    tolerance = 3 * mc_se(ALPHA, NULL_RUNS)
    print(f"\nno difference: false better/worse {false:.4f} (alpha {ALPHA}, 3 SE {tolerance:.4f})")
    assert false <= ALPHA + tolerance
    assert not np.isin(decision, [sequential.CONTINUE, sequential.EQUIVALENT]).any()


def test_pocock_spending_keeps_false_better_or_worse_at_alpha_and_stops_earlier():
    design = sequential.Design(alpha=ALPHA, spending="pocock")
    decision, used = sequential.apply(sweeps(1, runs=NULL_RUNS), design)
    false = np.isin(decision, [sequential.BETTER, sequential.WORSE]).mean()
    print(f"\npocock, no difference: false better/worse {false:.4f}")
    assert false <= ALPHA + 3 * mc_se(ALPHA, NULL_RUNS)
    # A 2 SD difference: Pocock decides within fewer seeds on average than OBF.
    shifted = sweeps(2, shift=2.0)
    pocock, pocock_used = sequential.apply(shifted, design)
    obf, obf_used = sequential.apply(shifted, sequential.Design(alpha=ALPHA))
    print(f"2 SD: mean seeds pocock {pocock_used.mean():.2f}, obf {obf_used.mean():.2f}")
    assert (pocock == sequential.BETTER).mean() >= 0.8
    assert pocock_used.mean() < obf_used.mean()


def test_peeking_with_a_fixed_t_test_does_not_keep_alpha():
    """The same sweeps, a two-sided paired t test at 0.05 after every round: the error the
    sequential boundaries prevent, large enough for the simulation to tell."""
    design = sequential.Design(alpha=ALPHA)
    st = sequential.look_statistics(sweeps(1), design.looks)
    crit = stats.t.isf(ALPHA / 2, st["n"] - 1)
    naive = (np.abs(st["t"]) >= crit).any(-1).mean()
    print(f"\npeeking fixed-n t test: false better/worse {naive:.4f}")
    assert naive > ALPHA + 3 * mc_se(ALPHA)


def test_two_sd_difference_found_with_fewer_seeds_than_a_fixed_design_of_equal_power():
    design = sequential.Design(alpha=ALPHA)
    decision, used = sequential.apply(sweeps(2, shift=2.0), design)
    power = (decision == sequential.BETTER).mean()
    mean_seeds = used[decision == sequential.BETTER].mean()
    # The fixed-n paired t test (two-sided, same alpha) reaching the power measured, as far as
    # RUNS runs can tell it from 1; and the conventional 80% design.
    target = min(power, 1 - 1 / RUNS)
    fixed = next(n for n in range(2, 100) if t_power(2.0, n, n - 1, ALPHA) >= target)
    fixed80 = next(n for n in range(2, 100) if t_power(2.0, n, n - 1, ALPHA) >= 0.8)
    print(
        f"\n2 SD: power {power:.4f}, mean seeds {mean_seeds:.2f} (max 20); fixed-n t test "
        f"of that power {fixed} seeds, of 80% power {fixed80}"
    )
    assert power >= 0.8
    assert mean_seeds < fixed
    assert (decision == sequential.WORSE).sum() == 0


def test_exact_zero_difference_is_equivalent_within_two_sd():
    design = sequential.Design(alpha=ALPHA, delta=2.0)
    decision, used = sequential.apply(sweeps(3), design)
    equivalent = (decision == sequential.EQUIVALENT).mean()
    print(
        f"\nzero difference, delta 2 SD: equivalent {equivalent:.4f}, mean seeds "
        f"{used[decision == sequential.EQUIVALENT].mean():.2f}"
    )
    assert equivalent > 0.5


def test_difference_at_the_margin_is_rarely_called_equivalent():
    design = sequential.Design(alpha=ALPHA, delta=1.0)
    decision, _ = sequential.apply(sweeps(4, shift=1.0), design)
    false = (decision == sequential.EQUIVALENT).mean()
    print(f"\ndifference = delta: false equivalent {false:.4f}")
    assert false <= ALPHA + 3 * mc_se(ALPHA)


def test_t_boundaries_spend_more_than_the_nominal_mapping_would_allow():
    """The nominal t quantiles spend about 10% too much with 3-20 seeds (sequential paired t
    statistics are less dependent than z statistics); the bounds used are wider late on."""
    design = sequential.Design(alpha=ALPHA)
    nominal = boundaries.nominal_t(design.z_bounds, np.array(design.looks))
    assert np.all(design.t_bounds[-8:] > nominal[-8:])
    np.testing.assert_allclose(design.t_bounds[:4], nominal[:4])  # too rare to simulate


# ---------------------------------------------------------------- decide()
def scores(arm_minus_base, base=None, seeds=None):
    base = np.zeros(len(arm_minus_base)) if base is None else np.asarray(base)
    seeds = range(len(arm_minus_base)) if seeds is None else seeds
    return (
        {s: float(b + d) for s, b, d in zip(seeds, base, arm_minus_base, strict=True)},
        {s: float(b) for s, b in zip(seeds, base, strict=True)},
    )


def test_decide_stops_at_the_first_crossing_and_keeps_that_verdict():
    d = [1.0, 1.001, 0.999, 1.0005, -5.0, -5.0]  # t ~ 1700 at 3 seeds, ~ 2500 at 4
    arm, base = scores(d)
    out = sequential.decide({"stn": arm, "cnn": base}, "cnn", delta=None)
    c = out.comparisons["stn"]
    assert (c.decision, c.seeds_used, [look["n"] for look in c.looks]) == ("better", 4, [3, 4])
    assert [look["decision"] for look in c.looks] == ["continue", "better"]
    assert out.done and c.next_look is None and c.seeds_needed is None
    flipped = sequential.decide({"stn": arm, "cnn": base}, "cnn", None, larger_is_better=False)
    assert flipped.comparisons["stn"].decision == "worse"
    # The look reports the arm's lead as measured (arm - baseline), whichever way is better.
    first = flipped.comparisons["stn"].looks[0]
    assert first["mean_difference"] == pytest.approx(np.mean(d[:3]))
    assert first["t"] == pytest.approx(stats.ttest_1samp(d[:3], 0).statistic)


def test_decide_pairs_by_seed():
    """Seeds both ran, in seed order; scores are absolute, the baseline varies by seed."""
    base = {7: 0.5, 1: 0.9, 3: 0.1, 9: 0.3}
    arm = {3: 0.2, 1: 1.05, 9: 0.2, 4: 0.0}
    out = sequential.decide({"b": base, "a": arm}, "b", delta=0.5)
    look = out.comparisons["a"].looks[0]
    assert look["n"] == 3
    assert look["mean_difference"] == pytest.approx((0.15 + 0.1 - 0.1) / 3)
    assert look["t"] == pytest.approx(stats.ttest_rel([1.05, 0.2, 0.2], [0.9, 0.1, 0.3]).statistic)
    assert out.comparisons["a"].decision == "continue"
    assert out.comparisons["a"].next_look == 4 and not out.done


def test_decide_not_decided_gives_the_seeds_a_fixed_design_needs():
    rng = np.random.default_rng(5)
    d = rng.standard_normal(6)
    d = (d - d.mean()) / d.std(ddof=1) * 1.0 + 0.4  # mean 0.4, SD 1 exactly
    arm, base = scores(d)
    out = sequential.decide({"a": arm, "b": base}, "b", delta=1.0, max_seeds=6)
    c = out.comparisons["a"]
    assert c.decision == "not decided" and c.seeds_used == 6 and out.done
    assert c.looks[-1]["decision"] == "not decided"
    # Reference: statsmodels' paired (one-sample) t test power.
    ref = TTestPower().solve_power(effect_size=0.4, alpha=ALPHA, power=0.8)
    assert c.seeds_needed["difference"] == math.ceil(ref)
    # The TOST figure: power at that n, simulated, reaches 80% (the formula is a lower bound).
    n = c.seeds_needed["equivalence"]
    sims = np.random.default_rng(6).standard_normal((RUNS, n)) + 0.4
    lo = stats.ttest_1samp(sims, -1.0, axis=1, alternative="greater").pvalue
    hi = stats.ttest_1samp(sims, 1.0, axis=1, alternative="less").pvalue
    assert (np.maximum(lo, hi) < ALPHA).mean() >= 0.8 - 3 * mc_se(0.8)
    assert sequential.seeds_needed(0.0, 1.0, ALPHA, None) == {
        "difference": None,
        "equivalence": None,
    }


def test_decide_shares_alpha_by_bonferroni():
    d = [1.0, -0.2, 0.9, 0.5, 1.4, 0.6]  # t = 3.15 at the last look only
    arm, base = scores(d)
    one = sequential.decide({"a": arm, "b": base}, "b", None, max_seeds=6)
    assert one.design.level == ALPHA and one.comparisons["a"].decision == "better"
    two = sequential.decide({"a": arm, "c": arm, "b": base}, "b", None, max_seeds=6)
    assert two.design.comparisons == 2 and two.design.level == ALPHA / 2
    assert {c.decision for c in two.comparisons.values()} == {"not decided"}
    named = sequential.decide({"a": arm, "b": base}, "b", None, max_seeds=6, comparisons=2)
    assert named.comparisons["a"].decision == "not decided"


def test_decision_json_round_trips_with_no_spread():
    arm, base = scores([0.5] * 3)  # no spread: t is infinite, reported as null
    out = sequential.decide({"a": arm, "b": base}, "b", delta=1.0, first=3, step=2)
    c = out.comparisons["a"]
    assert c.decision == "better" and c.looks[0]["t"] is None
    text = json.dumps(out.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["design"]["looks"][0]["n"] == 3 and back["design"]["multiplicity"]
    assert [look["n"] for look in back["design"]["looks"]] == list(range(3, 21, 2))
    same, base = scores([0.0] * 3)
    assert sequential.decide({"a": same, "b": base}, "b", 1.0).comparisons["a"].decision == (
        "equivalent"
    )


def test_design_rejects_what_it_cannot_test():
    bads = ({"first": 1}, {"step": 0}, {"max_seeds": 2}, {"alpha": 1.5}, {"delta": 0.0},
            {"spending": "linear"})  # fmt: skip
    for bad in bads:
        with pytest.raises(ValueError):
            sequential.Design(**bad)
    with pytest.raises(ValueError):
        boundaries.z_boundaries([0.5, 0.4], 0.05)
    with pytest.raises(KeyError):
        sequential.decide({"a": {0: 1.0}}, "b", None)
