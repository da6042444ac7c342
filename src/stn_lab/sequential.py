"""The statistics of a group-sequential seed sweep: when to stop adding seeds to a comparison.

A sweep runs every arm and the baseline seed by seed. After each round (at ``first``,
``first + step``, ... seeds, up to ``max_seeds``) :func:`decide` looks at each arm's per-seed
differences from the baseline (paired by seed) and says, per comparison:

- ``better`` / ``worse``: the paired t statistic crossed a two-sided Lan-DeMets boundary with
  O'Brien-Fleming-type spending (:mod:`stn_lab.boundaries`: z bounds carried to the t scale),
  or Pocock-type spending where the design asks for it;
- ``equivalent``: both one-sided t tests of a sequential TOST within ``±delta`` crossed their
  one-sided boundaries of the same family;
- ``continue``: neither yet; ``not decided``: neither at the last look, with the seeds a fixed
  design would need (:func:`seeds_needed`).

The level is shared by the arms with Bonferroni (``alpha / k`` each). :func:`apply` runs the
same rule on many simulated sweeps at once (the tests use it to measure the error rates).
Pure numpy/scipy; ``docs/sequential.md`` gives the procedure, its guarantees and its limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from stn_lab.boundaries import (
    CALIBRATION_SEED,
    CALIBRATION_SWEEPS,
    GRID_STEP,
    MIN_EVENTS,
    SPENDING,
    SPENDING_TEXT,
    nominal_t,
    t_boundaries,
    t_stat,
    z_boundaries,
)
from stn_lab.compare.stats import NO_SPREAD, POWER, t_power

CONTINUE, BETTER, WORSE, EQUIVALENT, NOT_DECIDED = range(5)
#: The decision names, indexed by the codes above (what :func:`apply` returns).
DECISIONS = ("continue", "better", "worse", "equivalent", "not decided")

MAX_SEEDS_NEEDED = 100_000  #: :func:`seeds_needed` answers None above this


# ---------------------------------------------------------------- the design
@dataclass(frozen=True)
class Design:
    """One comparison's sequential test: looks, levels, and its boundaries on both scales.

    ``alpha`` is the family level, shared by ``comparisons`` arms with Bonferroni. Looks are at
    ``first, first + step, ...`` pairs up to ``max_seeds``; the information fraction of a look
    is ``n / n_last`` (``n_last`` the last look), so the last look spends what is left.

    The paired t statistic of a few seeds is not normal, so it is compared with
    :func:`t_boundaries`, which spend the z boundaries' alpha on the t scale: ``better`` when
    ``T >= b_k``, ``worse`` when ``T <= -b_k`` (two-sided, :attr:`level`). The sequential TOST
    uses the one-sided bounds at :attr:`level` for each of its two tests.
    """

    alpha: float = 0.05
    delta: float | None = None
    first: int = 3
    step: int = 1
    max_seeds: int = 20
    comparisons: int = 1
    power: float = POWER
    spending: str = "obf"
    looks: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.first < 2 or self.step < 1 or self.max_seeds < self.first:
            raise ValueError(
                f"need 2 <= first <= max_seeds and step >= 1, got first={self.first}, "
                f"step={self.step}, max_seeds={self.max_seeds}"
            )
        if self.comparisons < 1 or not 0 < self.alpha < 1:
            raise ValueError(f"need comparisons >= 1 and 0 < alpha < 1, got {self.alpha}")
        if self.spending not in SPENDING:
            raise ValueError(f"spending must be one of {', '.join(SPENDING)}, got {self.spending}")
        if self.delta is not None and not self.delta > 0:
            raise ValueError(f"the equivalence margin must be positive, got {self.delta}")
        object.__setattr__(self, "looks", tuple(range(self.first, self.max_seeds + 1, self.step)))

    @property
    def level(self) -> float:
        """The level of each comparison: Bonferroni, ``alpha / comparisons``."""
        return self.alpha / self.comparisons

    @property
    def fractions(self) -> np.ndarray:
        return np.array(self.looks, dtype=float) / self.looks[-1]

    @property
    def z_bounds(self) -> np.ndarray:
        """Two-sided boundaries of the better/worse test at :attr:`level`."""
        return z_boundaries(self.fractions, self.level, 2, self.spending)

    @property
    def z_bounds_equivalence(self) -> np.ndarray:
        """One-sided boundaries of each test of the TOST at :attr:`level`."""
        return z_boundaries(self.fractions, self.level, 1, self.spending)

    @property
    def t_bounds(self) -> np.ndarray:
        """|T| bounds of the better/worse test (:func:`t_boundaries`, two-sided)."""
        return t_boundaries(self.looks, self.level, 2, self.spending)

    @property
    def t_bounds_equivalence(self) -> np.ndarray:
        """Bounds of each one-sided t test of the TOST (:func:`t_boundaries`, one-sided)."""
        return t_boundaries(self.looks, self.level, 1, self.spending)

    def describe(self) -> dict[str, Any]:
        """The procedure and its parameters, JSON-serialisable (for ``decision.json``)."""
        z, ze = self.z_bounds, self.z_bounds_equivalence
        return {
            "procedure": "group-sequential paired t test with sequential TOST",
            "pairing": "per-seed differences arm - baseline over the seeds both ran; look n "
            "uses the n smallest such seeds",
            "spending": SPENDING_TEXT[self.spending],
            "boundaries": "recursive numerical integration of the canonical joint distribution "
            f"(Jennison & Turnbull ch. 19), Simpson grid step {GRID_STEP}",
            "difference_test": "two-sided, symmetric, level alpha / comparisons (alpha / 2 per "
            "direction)",
            "equivalence_test": "two one-sided tests, each at one-sided level alpha / "
            "comparisons, both crossing at the same look"
            if self.delta is not None
            else None,
            "t_boundaries": "set look by look where the paired t statistics of "
            f"{CALIBRATION_SWEEPS} simulated null sweeps (normal noise, seed "
            f"{CALIBRATION_SEED}) spend the same increments; the t_{{n-1}} quantile of the z "
            f"bound's tail probability where an increment is under {MIN_EVENTS} crossings",
            "multiplicity": "Bonferroni over comparisons",
            "information_fraction": "n / n_last",
            "seeds_needed": f"fixed-n paired t (difference) and TOST (equivalence) at level "
            f"alpha / comparisons with power {self.power}, from the last look's mean and SD",
            "alpha": self.alpha,
            "delta": self.delta,
            "comparisons": self.comparisons,
            "level_per_comparison": self.level,
            "first": self.first,
            "step": self.step,
            "max_seeds": self.max_seeds,
            "power": self.power,
            "spending_function": self.spending,
            "looks": [
                {
                    "n": n,
                    "fraction": float(t),
                    "z_bound": float(z[k]),
                    "nominal_p_two_sided": float(2.0 * stats.norm.sf(z[k])),
                    "t_bound": float(self.t_bounds[k]),
                    "t_bound_nominal": float(nominal_t(z[k], n)),
                    "z_bound_equivalence": float(ze[k]),
                    "t_bound_equivalence": float(self.t_bounds_equivalence[k]),
                }
                for k, (n, t) in enumerate(zip(self.looks, self.fractions, strict=True))
            ],
        }


# ---------------------------------------------------------------- the rule, on many paths
def look_statistics(diffs: np.ndarray, looks: Sequence[int]) -> dict[str, np.ndarray]:
    """Mean, SD (ddof 1), standard error and paired t of the first n differences, for each
    look n that ``diffs`` (``[..., seeds]``) reaches: arrays ``[..., looks reached]``."""
    d = np.asarray(diffs, dtype=float)
    ns = np.array([n for n in looks if n <= d.shape[-1]], dtype=int)
    mean = np.stack([d[..., :n].mean(-1) for n in ns], -1) if ns.size else d[..., :0]
    sd = np.stack([d[..., :n].std(-1, ddof=1) for n in ns], -1) if ns.size else d[..., :0]
    se = sd / np.sqrt(ns)
    return {"n": ns, "mean": mean, "sd": sd, "se": se, "t": t_stat(mean, se)}


def apply(diffs: np.ndarray, design: Design) -> tuple[np.ndarray, np.ndarray]:
    """Run the procedure on per-seed differences ``[..., seeds]`` (positive: arm better), each
    row one sweep. Returns the decision codes (:data:`DECISIONS`) and the pairs used: the n of
    the deciding look, else the pairs available. ``continue`` when the last look is not reached.
    """
    st = look_statistics(diffs, design.looks)
    reached = st["n"].size
    decision = np.zeros(st["mean"].shape[:-1], dtype=int)
    used = np.full(decision.shape, np.asarray(diffs).shape[-1])
    tb, te = design.t_bounds, design.t_bounds_equivalence
    for k in range(reached):
        t = st["t"][..., k]
        now = np.where(t >= tb[k], BETTER, np.where(t <= -tb[k], WORSE, CONTINUE))
        if design.delta is not None:
            lower = t_stat(st["mean"][..., k] + design.delta, st["se"][..., k])
            upper = t_stat(st["mean"][..., k] - design.delta, st["se"][..., k])
            equivalent = (lower >= te[k]) & (upper <= -te[k])
            now = np.where((now == CONTINUE) & equivalent, EQUIVALENT, now)
        fresh = (decision == CONTINUE) & (now != CONTINUE)
        decision = np.where(fresh, now, decision)
        used = np.where(fresh, st["n"][k], used)
    if reached == len(design.looks):
        undecided = decision == CONTINUE
        decision = np.where(undecided, NOT_DECIDED, decision)
        used = np.where(undecided, design.looks[-1], used)
    return decision, used


# ---------------------------------------------------------------- seeds needed
def _tost_power(mean: float, sd: float, delta: float, n: int, alpha: float) -> float:
    """Power of a fixed-n paired TOST (each one-sided test at ``alpha``) when the true mean
    difference is ``mean``: ``P(T_lower > c) + P(T_upper < -c) - 1``, noncentral t, floored at
    0 (the usual approximation; exact only when the two events cover every outcome)."""
    c = stats.t.isf(alpha, n - 1)
    lower = stats.nct.sf(c, n - 1, (mean + delta) * math.sqrt(n) / sd)
    upper = stats.nct.cdf(-c, n - 1, (mean - delta) * math.sqrt(n) / sd)
    return max(0.0, float(lower + upper - 1.0))


def _smallest_n(ok: Any) -> int | None:
    """The smallest n >= 2 with ``ok(n)`` (assumed monotone), or None up to the cap."""
    hi = 2
    while not ok(hi):
        if hi >= MAX_SEEDS_NEEDED:
            return None
        hi = min(2 * hi, MAX_SEEDS_NEEDED)
    lo = hi // 2 if hi > 2 else 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def seeds_needed(
    mean: float, sd: float, alpha: float, delta: float | None, power: float = POWER
) -> dict[str, int | None]:
    """Seeds a fixed-n design would need, taking the observed ``mean`` and ``sd`` of the
    differences as true: ``difference``, for a two-sided paired t test at ``alpha`` to detect
    ``mean`` with ``power`` (:func:`stn_lab.compare.stats.t_power`, as compare's
    ``power_analysis``); ``equivalence``, for a TOST within ``±delta`` at ``alpha`` to show
    equivalence with ``power``. None where it cannot (no difference, ``|mean| >= delta``, no
    spread) or needs more than :data:`MAX_SEEDS_NEEDED`."""
    out: dict[str, int | None] = {"difference": None, "equivalence": None}
    if not sd >= NO_SPREAD:
        return out
    effect = abs(mean) / sd
    if effect > 0:
        out["difference"] = _smallest_n(lambda n: t_power(effect, n, n - 1, alpha) >= power)
    if delta is not None and abs(mean) < delta:
        out["equivalence"] = _smallest_n(lambda n: _tost_power(mean, sd, delta, n, alpha) >= power)
    return out


# ---------------------------------------------------------------- the sweeper's entry point
def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class Comparison:
    """One arm against the baseline: the looks taken (up to the deciding one) and the verdict.

    ``looks`` are dicts (n, mean difference, SD, t, its bounds and the decision at that look);
    ``next_look`` is the n of the next look when the decision is ``continue``."""

    arm: str
    baseline: str
    decision: str
    seeds_used: int
    looks: list[dict[str, Any]]
    next_look: int | None
    seeds_needed: dict[str, int | None] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SweepDecision:
    """:func:`decide`'s answer: the design and one :class:`Comparison` per arm."""

    design: Design
    larger_is_better: bool
    comparisons: dict[str, Comparison]

    @property
    def done(self) -> bool:
        """Every comparison decided (or out of seeds): the sweep can stop."""
        return all(c.decision != DECISIONS[CONTINUE] for c in self.comparisons.values())

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serialisable (non-finite numbers as null): ``decision.json``."""
        return {
            "design": self.design.describe(),
            "larger_is_better": self.larger_is_better,
            "done": self.done,
            "comparisons": {arm: c.to_dict() for arm, c in self.comparisons.items()},
        }


def compare_arm(
    arm: Mapping[int, float],
    baseline: Mapping[int, float],
    design: Design,
    larger_is_better: bool = True,
    names: tuple[str, str] = ("arm", "baseline"),
) -> Comparison:
    """:func:`apply` on one arm's scores (seed -> score) against the baseline's."""
    seeds = sorted(set(arm) & set(baseline))
    sign = 1.0 if larger_is_better else -1.0
    d = sign * np.array([arm[s] - baseline[s] for s in seeds], dtype=float)
    code, used = (int(x[0]) for x in apply(d[None, :], design))
    st = look_statistics(d, design.looks)
    tb, te = design.t_bounds, design.t_bounds_equivalence
    looks = []
    for k, n in enumerate(st["n"]):
        last = n >= used or k == len(design.looks) - 1
        looks.append(
            {
                "n": int(n),
                "mean_difference": sign * float(st["mean"][k]),
                "sd": float(st["sd"][k]),
                "t": _finite(sign * float(st["t"][k])),
                "t_bound": float(tb[k]),
                "t_bound_equivalence": float(te[k]) if design.delta is not None else None,
                "decision": DECISIONS[code] if last and code != CONTINUE else "continue",
            }
        )
        if last:
            break
    pending = [n for n in design.looks if n > d.size] if code == CONTINUE else [None]
    needed = None
    if code == NOT_DECIDED:
        mean, sd = float(st["mean"][-1]), float(st["sd"][-1])
        needed = seeds_needed(mean, sd, design.level, design.delta, design.power)
    return Comparison(*names, DECISIONS[code], used, looks, pending[0], needed)


def decide(
    scores: Mapping[str, Mapping[int, float]],
    baseline: str,
    delta: float | None,
    alpha: float = 0.05,
    first: int = 3,
    step: int = 1,
    max_seeds: int = 20,
    larger_is_better: bool = True,
    comparisons: int | None = None,
    power: float = POWER,
    spending: str = "obf",
) -> SweepDecision:
    """Decide every arm of ``scores`` (arm -> {seed: score}) against ``baseline``.

    ``delta`` is the equivalence margin in score units (None: no equivalence test). The level
    ``alpha`` is split over ``comparisons`` arms (default: every arm but the baseline) by
    Bonferroni. ``larger_is_better`` says which way ``better`` points; ``spending`` names the
    spending function (:data:`SPENDING`). Call it after each round
    with all scores so far; a comparison keeps the decision of its first deciding look.
    """
    if baseline not in scores:
        raise KeyError(f"baseline {baseline!r} has no scores")
    arms = [a for a in scores if a != baseline]
    k = comparisons or max(1, len(arms))
    design = Design(alpha, delta, first, step, max_seeds, k, power, spending)
    return SweepDecision(
        design,
        larger_is_better,
        {
            a: compare_arm(scores[a], scores[baseline], design, larger_is_better, (a, baseline))
            for a in arms
        },
    )
