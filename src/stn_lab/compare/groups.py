"""Grouping runs: one group per setting, each seed once, named by what varies; pairs to compare.

:func:`build_table` groups completed runs by their settings (see :mod:`.records`), counts a
repeated seed once, aggregates each group and names it by the settings that vary across the
table. :func:`pair_differences` lists the pairs of groups whose names differ in one setting,
names every setting in which they differ (:mod:`.contrast`) and tests each difference
(:mod:`.stats`); a pair that differs in more than one setting of its own accord is confounded
and gets no verdict.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from stn_lab.compare.contrast import MODEL, Side, conjunction, contrast
from stn_lab.compare.predictions import ImageEvidence, PredictionsError, image_evidence
from stn_lab.compare.records import NA, GroupKey, RunRecord, Setting
from stn_lab.compare.stats import (
    CONFIDENCE,
    PAIRED,
    Improvement,
    Power,
    Tost,
    TTestResult,
    clip_interval,
    holm,
    improvement,
    mean_interval,
    paired_ci,
    power_analysis,
    tost,
    welch_ci,
)

BETTER = "better"
EQUIVALENT = "equivalent"
INCONCLUSIVE = "inconclusive"
CONFOUNDED = "confounded"
#: The values a mean accuracy, and a difference of two, can take: intervals are cut to them.
ACCURACY_BOUNDS = (0.0, 1.0)
DIFFERENCE_BOUNDS = (-1.0, 1.0)
#: Settings that change the test images themselves (beside every ``data.*`` key but those of
#: :data:`TRAINING_ONLY_DATA`).
IMAGE_SETTINGS = ("data", "distortion")
#: ``data.*`` keys that shape training only: the test split and its distortion stay the same.
TRAINING_ONLY_DATA = ("data.batch_size", "data.eval_batch_size", "data.val_size")
#: Half-width of the region of practical equivalence, in accuracy points (``--rope``).
DEFAULT_ROPE = 0.5


@dataclass(frozen=True)
class Analysis:
    """How a table's differences are tested: ``rope`` (accuracy units) bounds equivalence,
    ``reps`` bootstrap replicates are drawn from a generator seeded with ``seed``."""

    rope: float = DEFAULT_ROPE / 100
    reps: int = 2000
    seed: int = 0


@dataclass
class GroupStats:
    """Statistics of one group of runs (same settings, different seeds).

    ``duplicates`` are runs whose seed an earlier run of the group already has: each seed counts
    once, so they are left out of the statistics and listed in the notes.
    """

    key: GroupKey
    n: int
    seeds: list[int | None]
    accs: list[float]
    acc_mean: float
    acc_std: float | None  # None when n == 1
    acc_ci: tuple[float, float] | None  # Student-t interval of the mean; None when n == 1
    loss_mean: float
    loss_std: float | None
    described: dict[Setting, str] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    duplicates: list[RunRecord] = field(default_factory=list)
    acc_per_class: list[float] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    seconds_per_epoch: float | None = None
    params_total: int | None = None
    params_stn: int | None = None
    label: str = ""  # the values of the table's naming settings, set by build_table
    values: tuple[str, ...] = ()  # the same values, one per Table.names entry

    @property
    def diverged_seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs if r.diverged]

    @property
    def debug(self) -> tuple[str, ...]:
        """The debug flags of the group's runs (``--include-debug``): a check, not a result."""
        return tuple(dict.fromkeys(flag for r in self.runs for flag in r.debug))

    @property
    def side(self) -> Side:
        """The group as :func:`.contrast.contrast` compares it."""
        return Side(
            {k: v for (kind, k), v in self.described.items() if kind == "choice"},
            {k: v for (kind, k), v in self.described.items() if kind == "config"},
            frozenset(k for r in self.runs for k in r.overridden),
        )


@dataclass
class Table:
    """The groups of a comparison and the settings that tell them apart.

    ``names`` are the settings shown in group labels: those that vary across the groups and are
    not already fixed by the settings before them (``optimizer.lr`` follows from
    ``optimizer=sgd``). ``fixed`` holds the Hydra choices every group shares.
    """

    groups: list[GroupStats]
    names: list[Setting]
    fixed: dict[str, str]


def group_runs(runs: Iterable[RunRecord]) -> dict[GroupKey, list[RunRecord]]:
    """Group runs by their settings (sorted by key; runs sorted by seed, then folder)."""
    groups: dict[GroupKey, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    return {
        k: sorted(v, key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
        for k, v in sorted(groups.items())
    }


def split_duplicates(runs: Sequence[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """``(kept, duplicates)``: the first run of each seed (in the given order) and the rest."""
    kept: list[RunRecord] = []
    duplicates: list[RunRecord] = []
    seen: set[int] = set()
    for run in runs:
        if run.seed is not None and run.seed in seen:
            duplicates.append(run)
        else:
            kept.append(run)
            if run.seed is not None:
                seen.add(run.seed)
    return kept, duplicates


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    x = np.asarray(values, dtype=float)
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


def aggregate(key: GroupKey, members: Sequence[RunRecord]) -> GroupStats:
    """Mean and sample std (ddof=1) over the seeds of one group, each seed counted once."""
    if not members:
        raise ValueError("aggregate needs at least one run")
    runs, duplicates = split_duplicates(members)
    accs = [r.test_acc for r in runs]
    acc_mean, acc_std = _mean_std(accs)
    loss_mean, loss_std = _mean_std([r.test_loss for r in runs])
    per_class: list[float] = []
    lengths = {len(r.acc_per_class) for r in runs}
    if len(lengths) == 1 and 0 not in lengths:
        per_class = np.mean([r.acc_per_class for r in runs], axis=0).tolist()
    names = next((list(r.class_names) for r in runs if r.class_names), [])
    if per_class and len(names) != len(per_class):
        names = [str(i) for i in range(len(per_class))]
    spe = [float(np.mean(r.seconds_per_epoch)) for r in runs if r.seconds_per_epoch]
    totals = [r.params_total for r in runs if r.params_total is not None]
    stns = [r.params_stn for r in runs if r.params_stn is not None]
    return GroupStats(
        key=key,
        n=len(runs),
        seeds=[r.seed for r in runs],
        accs=accs,
        acc_mean=acc_mean,
        acc_std=acc_std,
        acc_ci=mean_interval(accs, bounds=ACCURACY_BOUNDS),
        loss_mean=loss_mean,
        loss_std=loss_std,
        described=runs[0].described,
        runs=list(runs),
        duplicates=duplicates,
        acc_per_class=per_class,
        class_names=names,
        seconds_per_epoch=float(np.mean(spe)) if spe else None,
        params_total=round(float(np.mean(totals))) if totals else None,
        params_stn=round(float(np.mean(stns))) if stns else None,
    )


def setting_name(setting: Setting) -> str:
    """How a setting reads in labels and headers: the Hydra group or the dotted config key."""
    return setting[1]


def naming_settings(described: Sequence[dict[Setting, str]]) -> list[Setting]:
    """The settings that tell the described groups apart, in the order labels show them.

    Candidates are the Hydra choices that apply to every group (in the order the records list
    them), then those that are ``n/a`` for some (the STN-only groups), then the config keys
    (sorted). A candidate is kept when it varies and its value is not already fixed by the
    values of the settings kept before it, so ``optimizer=sgd`` hides ``optimizer.lr`` and
    ``model=cnn`` hides ``localiser=n/a`` (Hydra lists ``model`` after the STN-only groups: were
    they first, ``localiser_size=n/a`` would name the CNN), while ``model.stn.lr_mult`` swept
    under one optimizer stays. Every varying setting is kept or follows from kept ones, so
    labels are unique.
    """
    choices: dict[Setting, None] = {}
    configs: set[Setting] = set()
    for d in described:
        for s in d:
            if s[0] == "choice":
                choices.setdefault(s, None)
            else:
                configs.add(s)
    kept: list[Setting] = []
    applies = sorted(choices, key=lambda s: any(d.get(s, NA) == NA for d in described))
    for s in [*applies, *sorted(configs)]:
        seen: dict[tuple[str, ...], str] = {}
        follows = True
        for d in described:
            value = d.get(s, NA)
            if seen.setdefault(tuple(d.get(k, NA) for k in kept), value) != value:
                follows = False
                break
        if not follows:
            kept.append(s)
    return kept


def label(values: Sequence[str], names: Sequence[Setting]) -> str:
    """``name=value`` for each naming setting that applies (``n/a`` left out unless all are)."""
    if not names:
        return "all runs"
    parts = [f"{setting_name(s)}={v}" for s, v in zip(names, values, strict=True) if v != NA]
    return " ".join(parts or (f"{setting_name(s)}={v}" for s, v in zip(names, values, strict=True)))


def natural(values: Sequence[str]) -> tuple[tuple[int, float, str], ...]:
    """Sort key for setting values: numbers by value (``2`` before ``10``), then text."""
    key = []
    for v in values:
        try:
            number = float(v)
        except ValueError:
            number = math.nan
        key.append((0, number, "") if math.isfinite(number) else (1, 0.0, v))
    return tuple(key)


def build_table(runs: Iterable[RunRecord]) -> Table:
    """Group ``runs``, aggregate each group and name it; groups sorted by their label values."""
    groups = [aggregate(k, v) for k, v in group_runs(runs).items()]
    names = naming_settings([g.described for g in groups])
    named = []
    for g in groups:
        values = tuple(g.described.get(s, NA) for s in names)
        text = label(values, names) + (" [debug]" if g.debug else "")
        named.append(dataclasses.replace(g, values=values, label=text))
    named.sort(key=lambda g: (natural(g.values), g.key))
    fixed: dict[str, str] = {}
    if named:
        first = named[0].described
        for (kind, name), value in first.items():
            shared = all(g.described.get((kind, name)) == value for g in named)
            if kind == "choice" and value != NA and shared:
                fixed[name] = value
    return Table(named, names, fixed)


def describe(record: RunRecord, table: Table) -> str:
    """A label for a run outside the table (failed, interrupted, debug) in the table's terms."""
    if not record.settings and not record.choices:
        return "?"
    if table.names:
        return label(tuple(record.described.get(s, NA) for s in table.names), table.names)
    own = [f"{k}={v}" for k, v in record.choices.items() if v != NA and table.fixed.get(k) != v]
    return " ".join(own) or "—"


def varied_setting(a: GroupStats, b: GroupStats, names: Sequence[Setting]) -> Setting | None:
    """The single naming setting in which groups ``a`` and ``b`` differ, else ``None``.

    ``n/a`` is a wildcard when the groups differ in the ``model`` choice (a CNN has no
    localiser, so an STN group and a CNN group pair up if everything else matches); otherwise
    the groups must differ in exactly one setting whose values are both real (not ``n/a``).
    """
    diffs = [i for i, (va, vb) in enumerate(zip(a.values, b.values, strict=True)) if va != vb]
    models = [i for i in diffs if names[i] == ("choice", MODEL)]
    if models:
        others = [i for i in diffs if i != models[0]]
        return names[models[0]] if all(NA in (a.values[i], b.values[i]) for i in others) else None
    if len(diffs) == 1 and NA not in (a.values[diffs[0]], b.values[diffs[0]]):
        return names[diffs[0]]
    return None


@dataclass(frozen=True)
class Difference:
    """One row of the "Differences" section: group B minus group A in mean test accuracy."""

    varied: str  # the naming setting in which the labels differ
    a: GroupStats
    b: GroupStats
    test: TTestResult | None  # None when either group has n < 2
    shared: str = ""  # the naming settings both groups share (n/a on one side counts as shared)
    holm_p: float | None = None  # Holm-adjusted p when the table tests more than one pair
    rope: float = DEFAULT_ROPE / 100  # equivalence bounds ±rope, accuracy units
    tost: Tost | None = None
    power: Power | None = None
    improvement: Improvement | None = None  # P(B > A)
    images: ImageEvidence | None = None
    images_missing: str = ""  # why there is no per-image evidence
    images_damaged: bool = False  # because a predictions.npy cannot be read
    causes: tuple[str, ...] = ()  # every setting that differs of its own accord (.contrast)
    follows: tuple[str, ...] = ()  # the config keys that a differing choice put there

    @property
    def differs_in(self) -> tuple[str, ...]:
        """The settings the pair differs in, as rows name them: its causes."""
        return self.causes or (self.varied,)

    @property
    def confounded(self) -> bool:
        """More than one setting differs of its own accord: no one of them gets the credit."""
        return len(self.causes) > 1

    @property
    def p(self) -> float | None:
        """The p the verdict uses: Holm-adjusted when the table tests several pairs."""
        if self.test is None:
            return None
        return self.test.p if self.holm_p is None else self.holm_p

    @property
    def verdict(self) -> str:
        """:data:`BETTER` when the interval excludes 0 and the (Holm) p < 1 - CONFIDENCE,
        else :data:`EQUIVALENT` when TOST puts the difference within ±rope at that level,
        else :data:`INCONCLUSIVE`; :data:`CONFOUNDED` (no verdict) when the groups differ in
        more than one setting."""
        if self.confounded:
            return CONFOUNDED
        if self.test is None:
            return INCONCLUSIVE
        if self.test.significant and self.p < 1.0 - CONFIDENCE:
            return BETTER
        if self.tost is not None and self.tost.p < 1.0 - CONFIDENCE:
            return EQUIVALENT
        return INCONCLUSIVE

    @property
    def verdict_text(self) -> str:
        """The verdict in words: which side is better, the bounds, or what the design can see."""
        rope = f"±{100 * self.rope:.2g} pp"
        verdict = self.verdict
        if verdict == CONFOUNDED:
            return f"confounded: A and B differ in {conjunction(self.causes)}"
        if verdict == BETTER:
            within = self.tost is not None and self.tost.p < 1.0 - CONFIDENCE
            side = "B better" if self.diff > 0 else "A better"
            return f"{side}, by less than {rope}" if within else side
        if verdict == EQUIVALENT:
            return f"equivalent within {rope}"
        if self.test is None or self.power is None:
            return "inconclusive: needs 2+ seeds per group"
        need = self.power.seeds_needed
        seeds = "" if need is None else f"; {need} seeds/group to detect {rope}"
        # Above 100 points no accuracy difference is detectable: say that, not "127 pp".
        mde = "no difference" if self.power.mde >= 1 else f"{100 * self.power.mde:.2f} pp"
        return f"inconclusive: detects {mde} at n={self.a.n}{seeds}"

    @property
    def diff(self) -> float:
        return self.b.acc_mean - self.a.acc_mean

    @property
    def per_seed(self) -> dict[int, float]:
        """``{seed: B - A}`` for a paired comparison, else empty."""
        if self.test is None or self.test.test != PAIRED:
            return {}
        return {
            s: vb - va for s, va, vb in zip(self.a.seeds, self.a.accs, self.b.accs, strict=True)
        }


def compare_groups(a: GroupStats, b: GroupStats) -> TTestResult | None:
    """Paired t test when both groups ran the same seeds (each seed shares the split, data
    order and distortion draws on both sides), else Welch's test; ``None`` if n < 2."""
    same_seeds = a.seeds == b.seeds and None not in a.seeds
    test = paired_ci(a.accs, b.accs) if same_seeds else welch_ci(a.accs, b.accs)
    if test is None:
        return None
    low, high = clip_interval((test.low, test.high), DIFFERENCE_BOUNDS)
    return dataclasses.replace(test, low=low, high=high)


def pair_differences(table: Table, analysis: Analysis | None = None) -> list[Difference]:
    """Every pair of groups differing in one naming setting, tested by :func:`compare_groups`,
    with TOST, power, P(B > A) and, where the runs saved predictions, per-image evidence.

    A and B are ordered by the value of the varied setting, numbers by value and text
    alphabetically (``cnn`` before ``stn``, so the model rows read "STN minus CNN"). When more
    than one unconfounded pair has a test, their p-values are Holm-adjusted together: the
    verdicts drawn from the table are one family of comparisons (a confounded pair draws none).
    """
    analysis = analysis or Analysis()
    rng = np.random.default_rng(analysis.seed)
    names = table.names
    out: list[tuple[int, Difference]] = []
    for i, ga in enumerate(table.groups):
        for gb in table.groups[i + 1 :]:
            setting = varied_setting(ga, gb, names)
            if setting is None:
                continue
            idx = names.index(setting)
            first = natural((ga.values[idx], *ga.values)) <= natural((gb.values[idx], *gb.values))
            a, b = (ga, gb) if first else (gb, ga)
            shared = [
                f"{setting_name(s)}={va if va != NA else vb}"
                for s, va, vb in zip(names, a.values, b.values, strict=True)
                if s != setting and (va, vb) != (NA, NA)
            ]
            differ = contrast(a.side, b.side)
            diff = Difference(
                setting_name(setting), a, b, compare_groups(a, b), " ".join(shared),
                causes=differ.causes, follows=differ.follows,
            )  # fmt: skip
            out.append((idx, _evidence(diff, analysis, rng)))
    out.sort(key=lambda item: (item[0], natural(item[1].a.values), natural(item[1].b.values)))
    diffs = [d for _, d in out]
    tested = [i for i, d in enumerate(diffs) if d.test is not None and not d.confounded]
    if len(tested) > 1:
        adjusted = holm([diffs[i].test.p for i in tested])
        for i, p in zip(tested, adjusted, strict=True):
            diffs[i] = dataclasses.replace(diffs[i], holm_p=p)
    return diffs


def _changes_images(setting: str) -> bool:
    """Whether a setting changes the test images themselves (not only how the model trains)."""
    return setting in IMAGE_SETTINGS or (
        setting.startswith("data.") and setting not in TRAINING_ONLY_DATA
    )


def _evidence(d: Difference, analysis: Analysis, rng: np.random.Generator) -> Difference:
    """``d`` with its equivalence test, power, P(B > A) and per-image evidence filled in."""
    paired = d.test is not None and d.test.test == PAIRED
    a, b = d.a.accs, d.b.accs
    images, missing, damaged = None, "", False
    changes_images = [s for s in (*d.differs_in, *d.follows) if _changes_images(s)]
    if changes_images:
        # Same indices, other pictures: an image-by-image pairing would compare unlike items.
        missing = f"the groups differ in {changes_images[0]}, so they score different test images"
    else:
        try:
            images = image_evidence(d.a.runs, d.b.runs, paired, analysis.reps, rng)
        except PredictionsError as err:
            missing, damaged = str(err), err.damaged
    return dataclasses.replace(
        d,
        rope=analysis.rope,
        tost=tost(a, b, analysis.rope, paired),
        power=power_analysis(a, b, analysis.rope, paired),
        improvement=improvement(a, b, analysis.reps, rng) if min(d.a.n, d.b.n) >= 2 else None,
        images=images,
        images_missing=missing,
        images_damaged=damaged,
    )
