"""The statistics ``compare`` reports, on ``scipy.stats``: intervals, paired and Welch t tests,
Wilcoxon, Holm.

Pure functions of accuracy lists; nothing here knows about runs or groups.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

#: Confidence level of every interval ``compare`` reports; ``1 - CONFIDENCE`` is the test level.
CONFIDENCE = 0.95
#: A standard error below this (in accuracy units, at most 1) is float rounding, not spread:
#: 0.57 - 0.52 and 0.55 - 0.50 differ in the 17th digit, and scipy would turn that into p ~ 1e-30.
NO_SPREAD = 1e-12


WELCH = "Welch"
PAIRED = "paired t"


@dataclass(frozen=True)
class TTestResult:
    """A two-sided t test of ``mean(b) - mean(a)`` with its confidence interval.

    ``test`` names it: :data:`WELCH` (independent groups) or :data:`PAIRED` (the same seeds on
    both sides; ``diff`` is then the mean per-seed difference and the paired fields are set).
    """

    test: str
    diff: float
    low: float
    high: float
    df: float
    t_crit: float
    se: float
    p: float
    wilcoxon_p: float | None = None  # paired only: Wilcoxon signed-rank test
    correlation: float | None = None  # paired only, n >= 3: Pearson r of the pairs

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def mean_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float] | None:
    """Student-t confidence interval for the mean of ``values``; ``None`` if fewer than 2.

    Values that are all equal give the point itself (scipy would return NaN for a zero scale).
    ``bounds`` are the values the mean can take (0 and 1 for an accuracy): the interval is cut
    to them, which keeps its coverage, since a true mean inside the interval is inside the
    bounds too. At 2 seeds the uncut interval spans 12.7 standard errors each side.
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None
    mean = float(x.mean())
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    if sem < NO_SPREAD:
        return mean, mean
    low, high = stats.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return clip_interval((float(low), float(high)), bounds)


def clip_interval(
    interval: tuple[float, float], bounds: tuple[float, float] | None
) -> tuple[float, float]:
    """``interval`` cut to ``bounds`` (the values the estimated quantity can take), if given."""
    if bounds is None:
        return interval
    return max(interval[0], bounds[0]), min(interval[1], bounds[1])


def _quiet(test: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a scipy test without its "precision loss" warning: one group of identical values
    (every seed at chance accuracy, say) has variance 0 exactly, and scipy's answer is right."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return test(*args, **kwargs)


def _t_result(
    test: str,
    diff: float,
    se: float,
    df: float,
    scipy_result: Any,
    confidence: float,
    **paired: Any,
) -> TTestResult:
    """Assemble a :class:`TTestResult`; no spread (``scipy_result`` None) collapses the interval
    to the observed difference, with p 0 (or 1 when the difference is 0 too), where scipy's 0/0
    gives NaN."""
    t_crit = float(stats.t.ppf(0.5 + confidence / 2.0, df))
    if scipy_result is None:
        low = high = diff
        p = 1.0 if abs(diff) < NO_SPREAD else 0.0
    else:
        ci = scipy_result.confidence_interval(confidence)
        low, high, p = float(ci.low), float(ci.high), float(scipy_result.pvalue)
    return TTestResult(test, diff, low, high, df, t_crit, se, p, **paired)


def welch_ci(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> TTestResult | None:
    """Welch's test of ``mean(b) - mean(a)`` (``scipy.stats.ttest_ind(equal_var=False)``).

    ``None`` if either group has fewer than 2 values. With zero variance in both groups the df
    is ``n_a + n_b - 2``.
    """
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    na, nb = xa.size, xb.size
    if na < 2 or nb < 2:
        return None
    diff = float(xb.mean() - xa.mean())
    se = math.sqrt(float(xa.var(ddof=1)) / na + float(xb.var(ddof=1)) / nb)
    res = None if se < NO_SPREAD else _quiet(stats.ttest_ind, xb, xa, equal_var=False)
    df = float(na + nb - 2) if res is None else float(res.df)
    return _t_result(WELCH, diff, se, df, res, confidence)


def paired_ci(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> TTestResult | None:
    """Paired t test of the per-seed differences ``b - a`` (``scipy.stats.ttest_rel``).

    ``a`` and ``b`` are aligned: entry i of each comes from the same seed, which shares the
    split, the data order and the distortion draws, so the differences cancel what the seed
    does to both. Also gives the Wilcoxon signed-rank p (``scipy.stats.wilcoxon``, exact for
    small n; 1 when every difference is 0) and, for n >= 3, the correlation of the pairs.
    ``None`` for fewer than 2 pairs.
    """
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    if xa.shape != xb.shape:
        raise ValueError(f"paired_ci needs aligned values, got {xa.size} and {xb.size}")
    n = xa.size
    if n < 2:
        return None
    d = xb - xa
    se = float(d.std(ddof=1)) / math.sqrt(n)
    res = None if se < NO_SPREAD else _quiet(stats.ttest_rel, xb, xa)
    # Rounded to well above float noise, so equal differences tie and "no difference" is 0.
    ranked = np.round(d, 12)
    wilcoxon_p = float(stats.wilcoxon(ranked).pvalue) if ranked.any() else 1.0
    varies = n >= 3 and np.ptp(xa) > 0 and np.ptp(xb) > 0
    correlation = float(stats.pearsonr(xa, xb).statistic) if varies else None
    return _t_result(
        PAIRED,
        float(d.mean()),
        se,
        float(n - 1),
        res,
        confidence,
        wilcoxon_p=wilcoxon_p,
        correlation=correlation,
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input order.

    The k-th smallest p is multiplied by ``m - k + 1`` (k from 1), capped at 1 and made
    non-decreasing along the sorted order.
    """
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        adjusted[i] = running
    return adjusted.tolist()


# ---------------------------------------------------------------- equivalence and power
#: Power at which ``compare`` reports the minimum detectable effect and the seeds needed.
POWER = 0.8


@dataclass(frozen=True)
class Tost:
    """Two one-sided tests that ``mean(b) - mean(a)`` lies within ``(-delta, +delta)``.

    ``p`` is the larger of the two one-sided p-values: equivalence at level alpha when
    ``p < alpha`` (the same as the ``1 - 2 alpha`` interval lying inside the bounds).
    """

    delta: float
    p_lower: float  # H0: difference <= -delta
    p_upper: float  # H0: difference >= +delta

    @property
    def p(self) -> float:
        return max(self.p_lower, self.p_upper)


def tost(a: Sequence[float], b: Sequence[float], delta: float, paired: bool) -> Tost | None:
    """TOST for ``mean(b) - mean(a)`` within ``±delta``: one-sample t tests on the per-seed
    differences when ``paired``, else Welch tests with ``b`` shifted by ``∓delta``.
    ``None`` with fewer than 2 values a side. No spread: p is 0 inside the bounds, else 1."""
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    if xa.size < 2 or xb.size < 2:
        return None
    if paired:
        d = xb - xa
        if float(d.std(ddof=1)) < NO_SPREAD:
            return _tost_no_spread(float(d.mean()), delta)
        low = _quiet(stats.ttest_1samp, d, -delta, alternative="greater").pvalue
        high = _quiet(stats.ttest_1samp, d, delta, alternative="less").pvalue
    else:
        if math.sqrt(xa.var(ddof=1) / xa.size + xb.var(ddof=1) / xb.size) < NO_SPREAD:
            return _tost_no_spread(float(xb.mean() - xa.mean()), delta)
        low = _quiet(stats.ttest_ind, xb + delta, xa, equal_var=False, alternative="greater")
        high = _quiet(stats.ttest_ind, xb - delta, xa, equal_var=False, alternative="less")
        low, high = low.pvalue, high.pvalue
    return Tost(delta, float(low), float(high))


def _tost_no_spread(diff: float, delta: float) -> Tost:
    inside = abs(diff) < delta
    return Tost(delta, 0.0 if inside else 1.0, 0.0 if inside else 1.0)


def t_power(effect: float, nobs: float, df: float, alpha: float = 1 - CONFIDENCE) -> float:
    """Power of a two-sided t test at standardised ``effect`` (noncentrality effect·√nobs)."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(nobs)
    # The lower tail is negligible for a positive effect, and scipy's nct gives NaN for it at
    # large noncentrality (n = 2 seeds needs effect ~ 11.5).
    lower = float(np.nan_to_num(stats.nct.cdf(-crit, df, nc)))
    return float(stats.nct.sf(crit, df, nc)) + lower


@dataclass(frozen=True)
class Power:
    """What this design can detect: ``mde`` is the difference (accuracy units) found with
    :data:`POWER` at this n and spread; ``seeds_needed`` per group to detect ``delta``."""

    sd: float  # the spread the effect is measured in: of the differences, or pooled
    mde: float
    delta: float
    seeds_needed: int | None  # None: no spread to size a design from


def _effective(n_a: float, n_b: float, paired: bool) -> tuple[float, float]:
    """``(nobs, df)`` of the t test: a paired test has n - 1 df and nobs n; two independent
    groups have nobs = 1 / (1/n_a + 1/n_b) and n_a + n_b - 2 df (as statsmodels' pooled test)."""
    if paired:
        return float(n_a), float(n_a - 1)
    return 1.0 / (1.0 / n_a + 1.0 / n_b), float(n_a + n_b - 2)


def power_analysis(
    a: Sequence[float], b: Sequence[float], delta: float, paired: bool, power: float = POWER
) -> Power | None:
    """The minimum detectable effect at this n and the seeds per group needed for ``delta``.

    Paired: one-sample t on the differences (``statsmodels`` ``TTestPower``); independent:
    the pooled two-sample t with equal group sizes for the seeds needed (``TTestIndPower``,
    Welch has no closed power). Two-sided at ``1 - CONFIDENCE``. ``None`` below 2 a side."""
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    n_a, n_b = xa.size, xb.size
    if n_a < 2 or n_b < 2:
        return None
    if paired:
        sd = float((xb - xa).std(ddof=1))
    else:
        pooled = ((n_a - 1) * xa.var(ddof=1) + (n_b - 1) * xb.var(ddof=1)) / (n_a + n_b - 2)
        sd = math.sqrt(float(pooled))
    if sd < NO_SPREAD:
        return Power(sd, 0.0, delta, None)
    nobs, df = _effective(n_a, n_b, paired)
    effect = optimize.brentq(lambda e: t_power(e, nobs, df) - power, 1e-6, 1e3)

    def shortfall(n: float) -> float:
        return t_power(delta / sd, *_effective(n, n, paired)) - power

    needed = 2.0 if shortfall(2.0) >= 0 else optimize.brentq(shortfall, 2.0, 1e9)
    return Power(sd, float(effect) * sd, delta, math.ceil(needed - 1e-9))


# ---------------------------------------------------------------- the bootstrap
#: Resampled indices per chunk of replicates: bounds the memory of a bootstrap over many test
#: images (10,000 images x 200 replicates per chunk) without slowing the small ones.
CHUNK_INDICES = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval: floats, or arrays for a vector statistic."""

    point: Any
    low: Any
    high: Any


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[Any, Any]:
    """The percentile bootstrap interval of ``replicates`` along axis 0: floats for a scalar
    statistic, arrays for a vector one."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(np.asarray(replicates, dtype=float), [tail, 100 - tail], axis=0)
    return (float(low), float(high)) if np.ndim(low) == 0 else (low, high)


def bootstrap(
    statistic: Callable[..., np.ndarray],
    sizes: Sequence[int],
    reps: int,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
) -> Interval:
    """The percentile bootstrap of ``statistic``: the one resampler ``compare`` uses.

    Each replicate draws, for each entry of ``sizes``, that many indices with replacement from
    ``range(size)``, independently of the other entries. ``statistic(*indices)`` receives the
    draws of a chunk of replicates, ``[k, size]`` each, and returns one value per replicate
    (``[k]``) or one vector (``[k, m]``). What the indices select is the statistic's business:
    the seeds of one group, the seeds within one distortion set (a stratified bootstrap), or
    the test images that both models scored (one draw used for both sides). The point estimate
    is the statistic of the identity draw, every index once.
    """
    sizes = [int(n) for n in sizes]
    point = np.asarray(statistic(*(np.arange(n)[None, :] for n in sizes)), dtype=float)[0]
    chunk = max(1, min(reps, CHUNK_INDICES // max(1, sum(sizes))))
    replicates = []
    for start in range(0, reps, chunk):
        k = min(chunk, reps - start)
        draws = [rng.integers(0, n, (k, n)) for n in sizes]
        replicates.append(np.asarray(statistic(*draws), dtype=float))
    low, high = percentile_interval(np.concatenate(replicates), confidence)
    return Interval(float(point) if point.ndim == 0 else point, low, high)


# ---------------------------------------------------------------- probability of improvement
#: P(B > A) above this is flagged: the threshold Bouthillier et al. (2021) recommend for a
#: meaningful improvement (it is significant only if its interval's lower end exceeds 0.5).
POI_THRESHOLD = 0.75


def probability_of_improvement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(B > A): the share of (seed of A, seed of B) pairs where B scores higher, ties half
    (Mann-Whitney U / mn). ``a`` and ``b`` are ``(..., m)`` and ``(..., n)``: leading axes are
    bootstrap replicates."""
    diff = np.asarray(b, dtype=float)[..., :, None] - np.asarray(a, dtype=float)[..., None, :]
    return (np.sign(np.round(diff, 12)) + 1.0).mean(axis=(-1, -2)) / 2.0


@dataclass(frozen=True)
class Improvement:
    """P(B > A) with its percentile bootstrap interval (seeds resampled within each group)."""

    p: float
    low: float
    high: float

    @property
    def flagged(self) -> bool:
        return self.p > POI_THRESHOLD


def improvement(
    a: Sequence[float],
    b: Sequence[float],
    reps: int,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
) -> Improvement:
    """:func:`probability_of_improvement` of B over A and its interval from ``reps`` resamples
    of each group's seeds, drawn independently (rliable's stratified independent bootstrap over
    one task)."""
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    interval = bootstrap(
        lambda ia, ib: probability_of_improvement(xa[ia], xb[ib]),
        (xa.size, xb.size),
        reps,
        rng,
        confidence,
    )
    return Improvement(interval.point, interval.low, interval.high)


# ---------------------------------------------------------------- smallest reachable p
def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p an exact Wilcoxon signed-rank test over n pairs can give."""
    return min(1.0, 2.0 / 2**n)


def mann_whitney_floor(m: int, n: int) -> float:
    """The smallest two-sided p an exact Mann-Whitney test of m against n values can give."""
    return min(1.0, 2.0 / math.comb(m + n, m))


def friedman_floor(blocks: int, treatments: int) -> float:
    """The smallest p an exact Friedman test can give: every block ranks the treatments the
    same way, which has probability ``(k!)^(1 - blocks)`` under the null."""
    return float(math.factorial(treatments) ** (1 - blocks))
