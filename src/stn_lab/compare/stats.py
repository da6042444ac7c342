"""The statistics ``compare`` reports, on ``scipy.stats``: intervals, Welch's test, Holm.

Pure functions of accuracy lists; nothing here knows about runs or groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Confidence level of every interval ``compare`` reports; ``1 - CONFIDENCE`` is the test level.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class WelchResult:
    """Welch's t test and interval for ``mean(b) - mean(a)``."""

    diff: float
    low: float
    high: float
    df: float
    t_crit: float
    se: float
    p: float  # two-sided

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
    if sem == 0.0:
        return mean, mean
    low, high = stats.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return float(low), float(high)


def welch_ci(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> WelchResult | None:
    """Welch's test of ``mean(b) - mean(a)`` (``scipy.stats.ttest_ind(equal_var=False)``).

    ``None`` if either group has fewer than 2 values. If both groups have zero variance, scipy
    has no answer (0/0); the interval then collapses to the observed difference, with df
    ``n_a + n_b - 2`` and p 0 (or 1 when the difference is 0 too).
    """
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    na, nb = xa.size, xb.size
    if na < 2 or nb < 2:
        return None
    diff = float(xb.mean() - xa.mean())
    se = math.sqrt(float(xa.var(ddof=1)) / na + float(xb.var(ddof=1)) / nb)
    if se == 0.0:
        df = float(na + nb - 2)
        p = 1.0 if diff == 0.0 else 0.0
        t_crit = float(stats.t.ppf(0.5 + confidence / 2.0, df))
        return WelchResult(diff=diff, low=diff, high=diff, df=df, t_crit=t_crit, se=se, p=p)
    res = stats.ttest_ind(xb, xa, equal_var=False)
    ci = res.confidence_interval(confidence)
    df = float(res.df)
    return WelchResult(
        diff=diff,
        low=float(ci.low),
        high=float(ci.high),
        df=df,
        t_crit=float(stats.t.ppf(0.5 + confidence / 2.0, df)),
        se=se,
        p=float(res.pvalue),
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
