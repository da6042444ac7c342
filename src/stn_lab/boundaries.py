"""Group-sequential stopping boundaries: the alpha-spending functions, the boundaries they give
on the z scale (recursive numerical integration of the canonical joint distribution, Jennison &
Turnbull ch. 19) and the same alpha spent on the paired t scale of a few seeds (calibrated by
simulation). :mod:`stn_lab.sequential` builds its design and decisions on them; pure
numpy/scipy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from stn_lab.compare.stats import NO_SPREAD

#: The integration grid: Simpson's rule with nodes at most this far apart on the z scale, the
#: null density cut at ``±Z_LIMIT`` (mass beyond it is below 1e-32).
GRID_STEP = 0.02
Z_LIMIT = 12.0
#: :func:`t_boundaries`: simulated null sweeps, their generator's seed, and the fewest expected
#: crossings at which a look's bound is taken from them.
CALIBRATION_SWEEPS = 1 << 18
CALIBRATION_SEED = 25
MIN_EVENTS = 20


# ---------------------------------------------------------------- boundaries on the z scale
def obf_spending(t: Any, alpha: float, sides: int = 2) -> np.ndarray:
    """Cumulative alpha spent by information fraction ``t``: Lan-DeMets O'Brien-Fleming type.

    One-sided level ``alpha``: ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))`` (gsDesign's ``sfLDOF``,
    rpact's ``asOF``). Two-sided level ``alpha``: each tail spends the one-sided function at
    ``alpha / 2``, so the total is ``2 (2 - 2 Phi(z_{1-alpha/4} / sqrt(t)))``.
    """
    tail = alpha / sides
    t = np.asarray(t, dtype=float)
    return sides * 2.0 * stats.norm.sf(stats.norm.isf(tail / 2.0) / np.sqrt(t))


def pocock_spending(t: Any, alpha: float, sides: int = 2) -> np.ndarray:
    """Cumulative alpha spent by information fraction ``t``: Lan-DeMets Pocock type,
    ``alpha ln(1 + (e - 1) t)`` (gsDesign's ``sfLDPocock``, rpact's ``asP``). Linear in alpha,
    so the two-sided function (each tail at ``alpha / 2``) is the same formula; ``sides`` is
    there to share :func:`obf_spending`'s signature."""
    return alpha * np.log1p((math.e - 1.0) * np.asarray(t, dtype=float))


#: The spending functions a design may name: O'Brien-Fleming type (strict early, little alpha
#: left to spend late) and Pocock type (about even across looks: early stops come easier, the
#: last look is stricter).
SPENDING = {"obf": obf_spending, "pocock": pocock_spending}
SPENDING_TEXT = {
    "obf": "Lan-DeMets O'Brien-Fleming type, 2 - 2 Phi(z_{1-a/2} / sqrt(t)) per tail at "
    "one-sided level a",
    "pocock": "Lan-DeMets Pocock type, a ln(1 + (e - 1) t) per tail at one-sided level a",
}


def _simpson(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of Simpson's rule on ``[lo, hi]``, at most :data:`GRID_STEP` apart."""
    m = max(2, 2 * math.ceil((hi - lo) / (2 * GRID_STEP)))
    z = np.linspace(lo, hi, m + 1)
    w = np.full(m + 1, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return z, w * (hi - lo) / (3.0 * m)


def _region(c: float, sides: int) -> tuple[float, float]:
    """Where the statistic continues: ``(-c, c)`` two-sided, ``(-inf, c)`` one-sided (cut)."""
    hi = min(c, Z_LIMIT)
    return (-hi if sides == 2 else -Z_LIMIT), hi


@functools.lru_cache(maxsize=256)
def _boundaries(
    fractions: tuple[float, ...], alpha: float, sides: int, spending: str
) -> tuple[float, ...]:
    spent = SPENDING[spending](np.array(fractions), alpha, sides)
    increments = np.diff(spent, prepend=0.0)
    # Look 1: Z_1 is N(0, 1), closed form.
    bounds = [float(stats.norm.isf(increments[0] / sides))]
    z, w = _simpson(*_region(bounds[0], sides))
    mass = w * stats.norm.pdf(z)  # the sub-density of Z_1 on the continuation region, times w
    for k in range(1, len(fractions)):
        # Canonical joint distribution (Jennison & Turnbull ch. 19): given Z_{k-1} = z,
        # Z_k is N(r z, s^2) with r = sqrt(t_{k-1} / t_k), s^2 = 1 - r^2.
        r = math.sqrt(fractions[k - 1] / fractions[k])
        s = math.sqrt(1.0 - r * r)
        log_target = math.log(increments[k])

        def excess(c: float, z=z, mass=mass, r=r, s=s, log_target=log_target) -> float:
            logs = stats.norm.logsf((c - r * z) / s)
            if sides == 2:
                logs = np.logaddexp(logs, stats.norm.logsf((c + r * z) / s))
            return float(special.logsumexp(logs, b=mass)) - log_target

        c = optimize.brentq(excess, -Z_LIMIT, 40.0, xtol=1e-12)
        bounds.append(float(c))
        z_new, w_new = _simpson(*_region(c, sides))
        kernel = stats.norm.pdf((z_new[:, None] - r * z[None, :]) / s) / s
        z, mass = z_new, w_new * (kernel @ mass)
    return tuple(bounds)


def z_boundaries(
    fractions: Sequence[float], alpha: float, sides: int = 2, spending: str = "obf"
) -> np.ndarray:
    """z boundaries at information ``fractions`` (increasing, the last normally 1) that spend the
    ``spending`` function of :data:`SPENDING` exactly: the probability under the null of first
    crossing at look k is the spending increment at look k. Two-sided: reject when ``|Z_k| >= c_k``;
    one-sided: when ``Z_k >= c_k``.

    Computed by the recursive numerical integration of the canonical joint distribution of the
    sequential z statistics (Armitage, McPherson & Rowe 1969; Jennison & Turnbull 2000, ch. 19),
    Simpson's rule on a grid :data:`GRID_STEP` apart, each bound by root finding.
    """
    t = tuple(float(x) for x in fractions)
    if not t or any(b <= a for a, b in zip(t, t[1:], strict=False)) or t[0] <= 0 or t[-1] > 1:
        raise ValueError(f"information fractions must increase within (0, 1], got {t}")
    if sides not in (1, 2) or not 0 < alpha < 1:
        raise ValueError(f"need sides 1 or 2 and 0 < alpha < 1, got {sides}, {alpha}")
    if spending not in SPENDING:
        raise ValueError(f"spending must be one of {', '.join(SPENDING)}, got {spending!r}")
    return np.array(_boundaries(t, float(alpha), sides, spending))


def t_stat(num: np.ndarray, se: np.ndarray) -> np.ndarray:
    """``num / se``; with no spread (se 0), +-inf by the sign of ``num`` (0 when it is 0)."""
    spread = se >= NO_SPREAD
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread, num / np.where(spread, se, 1.0), np.sign(num) * np.inf)


def nominal_t(z: Any, n: Any) -> np.ndarray:
    """The t_{n-1} quantile with the same upper tail probability as the z bound ``z``: the
    classic "significance level" mapping of a z boundary onto a paired t test of n pairs."""
    return stats.t.isf(stats.norm.sf(z), np.asarray(n, dtype=float) - 1.0)


@functools.lru_cache(maxsize=64)
def _t_boundaries(
    looks: tuple[int, ...], level: float, sides: int, spending: str
) -> tuple[float, ...]:
    n = np.array(looks, dtype=float)
    fractions = n / n[-1]
    nominal = nominal_t(z_boundaries(fractions, level, sides, spending), n)
    increments = np.diff(SPENDING[spending](fractions, level, sides), prepend=0.0)
    rng = np.random.default_rng(CALIBRATION_SEED)
    s = np.zeros(CALIBRATION_SWEEPS)
    q = np.zeros(CALIBRATION_SWEEPS)
    # One-sided: each simulated sweep and its mirror image (-d, as likely under the null).
    alive = np.ones(CALIBRATION_SWEEPS * (3 - sides), dtype=bool)
    bounds, seeds = [], 0
    for k, look in enumerate(looks):
        while seeds < look:
            x = rng.standard_normal(CALIBRATION_SWEEPS)
            s, q, seeds = s + x, q + x * x, seeds + 1
        sd = np.sqrt(np.maximum(q - s * s / look, 0.0) / (look - 1))
        t = t_stat(s / look, sd / math.sqrt(look))
        v = np.abs(t) if sides == 2 else np.concatenate([t, -t])
        events = increments[k] * v.size
        if events < MIN_EVENTS:
            b = float(nominal[k])
        else:
            top = -np.sort(-v[alive])[: int(round(events)) + 1]
            b = float(top[-2:].mean()) if top.size > 1 else float(top[0])
        bounds.append(b)
        alive &= v < b
    return tuple(bounds)


def t_boundaries(
    looks: Sequence[int], level: float, sides: int = 2, spending: str = "obf"
) -> np.ndarray:
    """Bounds for the paired t statistic at looks of ``looks`` pairs that spend the same alpha
    as :func:`z_boundaries` at ``level`` (fractions ``n / n_last``).

    Mapping each z bound to the t quantile of the same tail probability (:func:`nominal_t`)
    keeps each look's own crossing probability, but sequential t statistics of a few seeds are
    less dependent than sequential z statistics, and with 3-20 seeds that mapping spends about
    10% more than ``level`` in all (0.055 at 0.05). So each bound is set, look by look, where
    the sequential paired t statistics of :data:`CALIBRATION_SWEEPS` simulated sweeps (normal
    noise, a fixed seed: the same bounds every call) first cross as often as the spending
    increment says. Where an increment is under :data:`MIN_EVENTS` simulated crossings (the
    first looks, a total under 1e-4) the nominal mapping stands.
    """
    looks = tuple(int(n) for n in looks)
    return np.array(_t_boundaries(looks, float(level), sides, spending))
