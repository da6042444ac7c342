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
from scipy import stats

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
    values: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Student-t confidence interval for the mean of ``values``; ``None`` if fewer than 2.

    Values that are all equal give the point itself (scipy would return NaN for a zero scale).
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None
    mean = float(x.mean())
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    if sem < NO_SPREAD:
        return mean, mean
    low, high = stats.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return float(low), float(high)


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
