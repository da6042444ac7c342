"""Results across distortion sets: each model's mean and IQM over sets with stratified-bootstrap
intervals, performance profiles, a design guard, and Friedman/Nemenyi ranks when the design
can support them.

A sweep over ``data.distortion`` (R, RTS, P, E, TC) makes each set a task: a model is every
group that differs only in its set, and its scores are a ``[seed, set]`` matrix, as in rliable
(Agarwal et al. 2021). Ranks across sets follow Demšar (2006), as autorank does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from stn_lab.compare.groups import GroupStats, Table, label, natural
from stn_lab.compare.records import NA, Setting
from stn_lab.compare.stats import (
    CONFIDENCE,
    Interval,
    bootstrap,
    friedman_floor,
    holm,
    mann_whitney_floor,
    wilcoxon_floor,
)

#: The settings that name a distortion set: the recorded choice, or the data config key.
SET_SETTINGS: tuple[Setting, ...] = (("choice", "distortion"), ("config", "data.distortion"))
#: The ``distortion`` group's options in the order tables show them (the paper's order).
SET_ORDER = ("none", "R", "RTS", "P", "E", "TC")
#: Below these a critical-difference diagram is refused: too few sets (blocks) give ranks that
#: no test can separate, and with two models the pairwise test says all there is.
MIN_SETS, MIN_MODELS = 6, 3
ALPHA = 1.0 - CONFIDENCE


def aggregate_mean(scores: np.ndarray) -> np.ndarray:
    """Mean over sets of the mean over seeds; ``scores`` is ``[..., seed, set]``."""
    return scores.mean(axis=-2).mean(axis=-1)


def aggregate_iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean of all ``[seed, set]`` scores (25% trimmed each side)."""
    flat = scores.reshape(*scores.shape[:-2], -1)
    return stats.trim_mean(flat, 0.25, axis=-1)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """The fraction of runs scoring above each tau, averaged over sets: ``[..., tau]``."""
    above = scores[..., None] > taus
    return above.mean(axis=-3).mean(axis=-2)


def set_intervals(
    scores: np.ndarray,
    taus: np.ndarray,
    reps: int,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
) -> tuple[Interval, Interval, Interval]:
    """The mean over sets, the IQM and the performance profile at ``taus`` of a ``[seed, set]``
    matrix, each with its stratified-bootstrap interval: the seeds are drawn with replacement
    within each set, independently (rliable's ``StratifiedBootstrap``), and the three share
    the replicates."""
    n_seeds, n_sets = scores.shape

    def statistic(*rows: np.ndarray) -> np.ndarray:
        sample = np.stack([scores[r, t] for t, r in enumerate(rows)], axis=-1)  # [k, seed, set]
        return np.concatenate(
            [
                aggregate_mean(sample)[:, None],
                aggregate_iqm(sample)[:, None],
                performance_profile(sample, taus),
            ],
            axis=1,
        )

    both = bootstrap(statistic, (n_seeds,) * n_sets, reps, rng, confidence)
    mean, iqm = (Interval(float(both.point[i]), float(both.low[i]), float(both.high[i]))
                 for i in (0, 1))  # fmt: skip
    return mean, iqm, Interval(both.point[2:], both.low[2:], both.high[2:])


@dataclass(frozen=True)
class ModelScores:
    """One model across the sets: its label, seeds, ``[seed, set]`` scores and aggregates."""

    label: str
    seeds: list[int | None]
    scores: np.ndarray
    mean: Interval
    iqm: Interval
    profile: Interval  # arrays at SetsAnalysis.taus


@dataclass(frozen=True)
class GuardRow:
    test: str
    over: str
    floor: float  # the smallest p it can reach at this design

    @property
    def can_reject(self) -> bool:
        return self.floor < ALPHA


@dataclass(frozen=True)
class Ranks:
    """Friedman test and Nemenyi critical difference over models ranked within each set."""

    mean_ranks: dict[str, float]  # 1 = best
    cd: float
    friedman_p: float
    pairwise: list[tuple[str, str, float, float]]  # (model, model, Wilcoxon p, Holm p)


@dataclass
class SetsAnalysis:
    setting: str
    sets: list[str]
    taus: np.ndarray
    models: list[ModelScores]
    guard: list[GuardRow]
    ranks: Ranks | None = None
    refusal: str = ""  # why no critical-difference diagram
    left_out: list[str] = field(default_factory=list)


def _models(table: Table, idx: int) -> tuple[list[str], dict[str, dict[str, GroupStats]]]:
    """The sets in the table and, per model label, its group on each set."""
    names = [n for i, n in enumerate(table.names) if i != idx]
    sets: list[str] = []
    models: dict[str, dict[str, GroupStats]] = {}
    for g in table.groups:
        value = g.values[idx]
        if value not in sets:
            sets.append(value)
        values = tuple(v for i, v in enumerate(g.values) if i != idx)
        models.setdefault(label(values, names), {})[value] = g
    return sets, models


def set_order(sets: Sequence[str]) -> list[str]:
    """``sets`` in the order of :data:`SET_ORDER`, any others after them by value."""
    known = {name: i for i, name in enumerate(SET_ORDER)}
    return sorted(sets, key=lambda v: (known.get(v, len(known)), natural((v,))))


def design_guard(n_seeds: int, n_sets: int, n_models: int) -> list[GuardRow]:
    """The smallest p each test can reach at this many seeds, sets and models."""
    pairs = math.comb(n_models, 2)
    rows = [
        GuardRow("Wilcoxon signed-rank (exact), paired seeds", f"{n_seeds} seeds",
                 wilcoxon_floor(n_seeds)),
        GuardRow("Mann-Whitney / P(improvement) (exact)", f"{n_seeds} vs {n_seeds} seeds",
                 mann_whitney_floor(n_seeds, n_seeds)),
    ]  # fmt: skip
    if n_sets >= 2:
        rows.append(
            GuardRow("Wilcoxon signed-rank (exact) across sets", f"{n_sets} sets",
                     wilcoxon_floor(n_sets))
        )  # fmt: skip
    if n_sets >= 2 and pairs > 1:
        rows.append(
            GuardRow("... after Holm over the model pairs", f"{pairs} pairs",
                     min(1.0, pairs * wilcoxon_floor(n_sets)))
        )  # fmt: skip
    if n_sets >= 2 and n_models >= 3:
        rows.append(
            GuardRow("Friedman (exact)", f"{n_sets} sets x {n_models} models",
                     friedman_floor(n_sets, n_models))
        )  # fmt: skip
    return rows


def nemenyi_cd(n_models: int, n_sets: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks (Demšar 2006, as autorank)."""
    q = stats.studentized_range.ppf(1 - alpha, n_models, np.inf)
    return float(q * math.sqrt(n_models * (n_models + 1) / (12.0 * n_sets)))


def rank_models(means: np.ndarray, labels: Sequence[str]) -> Ranks:
    """Friedman, mean ranks (1 = highest accuracy, ties averaged) and Nemenyi's CD over a
    ``[set, model]`` matrix of mean accuracies, plus pairwise exact Wilcoxon over the sets
    with Holm's correction."""
    n_sets, n_models = means.shape
    ranks = stats.rankdata(-means, axis=1).mean(axis=0)
    friedman = stats.friedmanchisquare(*means.T).pvalue
    pairs = [(i, j) for i in range(n_models) for j in range(i + 1, n_models)]
    raw = []
    for i, j in pairs:
        d = np.round(means[:, j] - means[:, i], 12)
        raw.append(float(stats.wilcoxon(d).pvalue) if d.any() else 1.0)
    adjusted = holm(raw)
    pairwise = [
        (labels[i], labels[j], p, q) for (i, j), p, q in zip(pairs, raw, adjusted, strict=True)
    ]
    return Ranks(
        dict(zip(labels, ranks.tolist(), strict=True)),
        nemenyi_cd(n_models, n_sets),
        float(friedman),
        pairwise,
    )


def sets_analysis(table: Table, reps: int = 2000, seed: int = 0) -> SetsAnalysis | None:
    """The analysis across distortion sets, or ``None`` when the table varies no set setting
    or fewer than two sets. Models that miss a set are left out (listed); each model keeps the
    seeds it ran on every set."""
    setting = next((s for s in SET_SETTINGS if s in table.names), None)
    if setting is None:
        return None
    sets, by_model = _models(table, table.names.index(setting))
    sets = set_order([s for s in sets if s != NA])
    if len(sets) < 2:
        return None
    rng = np.random.default_rng(seed)
    left_out: list[str] = []
    complete: list[tuple[str, list[int | None], np.ndarray]] = []
    for name, groups in by_model.items():
        missing = [s for s in sets if s not in groups]
        if missing:
            left_out.append(f"{name}: no runs on {', '.join(missing)}")
            continue
        seeds = [s for s in groups[sets[0]].seeds if all(s in groups[t].seeds for t in sets)]
        if not seeds or None in seeds:
            left_out.append(f"{name}: no seed ran on every set")
            continue
        scores = np.array([[groups[t].accs[groups[t].seeds.index(s)] for t in sets] for s in seeds])
        complete.append((name, seeds, scores))
    if not complete:
        return SetsAnalysis(setting[1], sets, np.array([]), [], [], left_out=left_out)
    every = np.concatenate([c[2].ravel() for c in complete])
    # From just below the lowest score, so every profile starts at 1.
    taus = np.linspace(max(0.0, every.min() - 0.01), every.max(), 101)
    models = [
        ModelScores(name, seeds, scores, *set_intervals(scores, taus, reps, rng))
        for name, seeds, scores in complete
    ]
    n_seeds = min(len(m.seeds) for m in models)
    result = SetsAnalysis(
        setting[1], sets, taus, models, design_guard(n_seeds, len(sets), len(models)),
        left_out=left_out,
    )  # fmt: skip
    if len(sets) < MIN_SETS or len(models) < MIN_MODELS:
        result.refusal = (
            f"no critical-difference diagram: {len(sets)} sets and {len(models)} models "
            f"(needs at least {MIN_SETS} sets and {MIN_MODELS} models)"
        )
    else:
        means = np.array([m.scores.mean(axis=0) for m in models]).T  # [set, model]
        result.ranks = rank_models(means, [m.label for m in models])
    return result
