"""Compare finished training runs: aggregate over seeds, tabulate, plot and test differences.

Usage::

    python -m stn_lab.compare [DIR ...] [--out results]

``compare`` never imports model or training code. It only reads the ``metrics.json`` file that
every training run writes into its Hydra output folder (and looks whether ``.hydra/`` exists, to
spot runs that started but never finished). It needs only the standard library, numpy and
matplotlib (drawn off-screen with the Agg canvas).

Pipeline (each step is a small pure function, usable from a notebook):

1. :func:`find_run_dirs` / :func:`load_runs` -- walk the given folders (default ``logs/``) for run
   folders: any folder holding ``.hydra/`` or ``metrics.json`` (single runs ``logs/runs/...`` and
   multirun jobs ``logs/multiruns/<date>/<n>/`` alike). Runs with no ``metrics.json``, a
   half-written or unreadable one, an unknown ``schema_version`` or ``status != "completed"`` are
   returned as :class:`FailedRun` with a one-line reason -- never silently dropped.
2. :func:`group_runs` -- group completed runs by the Hydra choices in :data:`GROUP_KEYS`.
3. :func:`aggregate` -- mean and sample std (ddof=1) over seeds per group.
4. :func:`pair_differences` -- for each pair of groups that differ in one choice, the difference
   in mean test accuracy (B - A) with a Welch 95% confidence interval (:func:`welch_ci`).
5. :func:`write_markdown`, :func:`write_csv`, :func:`write_differences_csv`, :func:`write_plot` --
   ``compare.md``, ``compare.csv``, ``differences.csv`` and ``compare.png``, written atomically.

The Student-t quantile is computed here (no scipy): bisection on the t CDF, which is expressed
through the regularised incomplete beta function evaluated by a continued fraction.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stn_lab.atomic import atomic_write

#: Hydra choices that define a group; runs in one group differ only in their seed.
GROUP_KEYS: tuple[str, ...] = (
    "model",
    "localiser",
    "localiser_net",
    "activation",
    "transform",
    "data",
    "distortion",
)
#: Value used for a choice that does not apply (e.g. ``localiser`` for ``model=cnn``) or is missing.
NA = "n/a"
#: Name of the file every training run writes into its output folder.
METRICS_FILE = "metrics.json"
#: Confidence level of the intervals in the "Differences" section.
CONFIDENCE = 0.95

SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "no significant difference"
N_TOO_SMALL = "n too small"

GroupKey = tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Data records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One completed training run, as read from its ``metrics.json``."""

    path: Path
    seed: int | None
    choices: dict[str, str]
    test_acc: float
    test_loss: float
    acc_per_class: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()
    seconds_per_epoch: tuple[float, ...] = ()
    params_total: int | None = None
    params_stn: int | None = None

    @property
    def key(self) -> GroupKey:
        return tuple(self.choices.get(k, NA) for k in GROUP_KEYS)


@dataclass(frozen=True)
class FailedRun:
    """A run that cannot be compared: unfinished, failed, or with an unreadable metrics file."""

    path: Path
    status: str  # "unfinished", "failed", "unreadable", "unknown schema", ...
    reason: str  # one line
    seed: int | None = None
    choices: dict[str, str] | None = None


@dataclass
class GroupStats:
    """Statistics of one group of runs (same choices, different seeds)."""

    key: GroupKey
    n: int
    seeds: list[int | None]
    accs: list[float]
    acc_mean: float
    acc_std: float | None  # None when n == 1
    loss_mean: float
    loss_std: float | None
    acc_per_class: list[float] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    seconds_per_epoch: float | None = None
    params_total: int | None = None
    params_stn: int | None = None

    @property
    def choices(self) -> dict[str, str]:
        return dict(zip(GROUP_KEYS, self.key, strict=True))


@dataclass(frozen=True)
class WelchResult:
    """Welch's t interval for ``mean(b) - mean(a)``."""

    diff: float
    low: float
    high: float
    df: float
    t_crit: float
    se: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Difference:
    """One row of the "Differences" section: group B minus group A in mean test accuracy."""

    varied: str  # the choice key that differs
    a: GroupStats
    b: GroupStats
    welch: WelchResult | None  # None when either group has n < 2

    @property
    def verdict(self) -> str:
        if self.welch is None:
            return N_TOO_SMALL
        return SIGNIFICANT if self.welch.significant else NOT_SIGNIFICANT

    @property
    def diff(self) -> float:
        return self.b.acc_mean - self.a.acc_mean

    @property
    def shared(self) -> str:
        """The choices both groups share (``n/a`` on one side counts as shared)."""
        parts = []
        for k, va, vb in zip(GROUP_KEYS, self.a.key, self.b.key, strict=True):
            if k == self.varied:
                continue
            v = va if va != NA else vb
            if v != NA:
                parts.append(f"{k}={v}")
        return ", ".join(parts)


class MetricsError(ValueError):
    """A metrics.json that cannot be used; ``status`` classifies it, the message explains it."""

    def __init__(
        self,
        status: str,
        reason: str,
        seed: int | None = None,
        choices: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.seed = seed
        self.choices = choices


# --------------------------------------------------------------------------------------------
# Student t distribution and Welch's test (no scipy)
# --------------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = tiny if abs(d) < tiny else d
    d = 1.0 / d
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got x={x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df > 0`` (real-valued) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if t == 0.0:
        return 0.5
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Inverse CDF of Student's t: the ``t`` with ``P(T <= t) = p`` (bisection, ~1e-12 abs)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:  # pragma: no cover - only for absurd p / df
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def welch_ci(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> WelchResult | None:
    """Welch's confidence interval for ``mean(b) - mean(a)``; ``None`` if either n < 2.

    Uses sample variances (ddof=1) and the Welch-Satterthwaite degrees of freedom. If both
    groups have zero variance the interval collapses to the observed difference (df is then
    taken as ``n_a + n_b - 2``).
    """
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    na, nb = xa.size, xb.size
    if na < 2 or nb < 2:
        return None
    va = float(xa.var(ddof=1)) / na
    vb = float(xb.var(ddof=1)) / nb
    diff = float(xb.mean() - xa.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        df = float(na + nb - 2)
    else:
        df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t_crit = t_quantile(0.5 + confidence / 2.0, df)
    half = t_crit * se
    return WelchResult(diff=diff, low=diff - half, high=diff + half, df=df, t_crit=t_crit, se=se)


# --------------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------------
def find_run_dirs(dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """All run folders under ``dirs`` (recursive): folders holding ``.hydra/`` or metrics.json."""
    found: dict[Path, None] = {}
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if ".hydra" in dirnames or METRICS_FILE in filenames:
                found.setdefault(here.resolve(), None)
            # Never descend into hidden folders (.hydra, .git, ...); sorted for a stable order.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def _first_line(text: Any, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0].strip() if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _norm_choices(raw: Any) -> dict[str, str]:
    raw = raw if isinstance(raw, dict) else {}
    out = {}
    for k in GROUP_KEYS:
        v = raw.get(k)
        out[k] = NA if v is None or str(v).strip() == "" else str(v)
    return out


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetricsError("malformed", f"metrics.json: {what} is not a number ({value!r})")
    return float(value)


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MetricsError("malformed", f"metrics.json: {what} is not a list")
    return tuple(_number(v, f"{what} entry") for v in value)


def _optional_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def parse_metrics_v1(data: dict[str, Any], path: Path) -> Run:
    """Parse a schema-version-1 metrics.json (already JSON-decoded) into a :class:`Run`.

    Raises :class:`MetricsError` for failed runs and for files missing required fields.
    """
    seed = _optional_int(data.get("seed"))
    choices = _norm_choices(data.get("choices"))
    status = data.get("status")
    if status != "completed":
        error = data.get("error")
        reason = _first_line(error) if error else f"status is {status!r} (no error message)"
        label = "failed" if status == "failed" else f"status {status!r}"
        raise MetricsError(label, reason, seed=seed, choices=choices)
    test = data.get("test")
    if not isinstance(test, dict):
        raise MetricsError("malformed", "metrics.json has no 'test' section", seed, choices)
    try:
        acc = _number(test.get("acc"), "test.acc")
        loss = _number(test.get("loss"), "test.loss")
        per_class = _numbers(test.get("acc_per_class"), "test.acc_per_class")
        spe = _numbers(data.get("seconds_per_epoch"), "seconds_per_epoch")
    except MetricsError as err:
        raise MetricsError(err.status, err.reason, seed, choices) from None
    names = data.get("class_names")
    names = tuple(str(n) for n in names) if isinstance(names, list) else ()
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    return Run(
        path=path,
        seed=seed,
        choices=choices,
        test_acc=acc,
        test_loss=loss,
        acc_per_class=per_class,
        class_names=names,
        seconds_per_epoch=spe,
        params_total=_optional_int(params.get("total")),
        params_stn=_optional_int(params.get("stn")),
    )


#: metrics.json ``schema_version`` -> parser. Add an entry here when the schema changes.
PARSERS: dict[int, Callable[[dict[str, Any], Path], Run]] = {1: parse_metrics_v1}


def read_run(run_dir: Path) -> Run | FailedRun:
    """Read one run folder; anything that is not a usable completed run becomes a FailedRun."""
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        has_config = (run_dir / ".hydra" / "config.yaml").is_file()
        what = ".hydra/config.yaml" if has_config else ".hydra/"
        return FailedRun(run_dir, "unfinished", f"no metrics.json (only {what}): never finished")
    try:
        text = metrics.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return FailedRun(run_dir, "unreadable", f"cannot read metrics.json: {err}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        reason = f"metrics.json is not valid JSON (half-written?): {err}"
        return FailedRun(run_dir, "unreadable", reason)
    if not isinstance(data, dict):
        return FailedRun(run_dir, "unreadable", "metrics.json does not hold a JSON object")
    version = data.get("schema_version")
    parser = PARSERS.get(version) if isinstance(version, int) else None
    if parser is None:
        known = ", ".join(str(v) for v in sorted(PARSERS))
        reason = f"unknown metrics.json schema_version {version!r} (this compare reads: {known})"
        return FailedRun(run_dir, "unknown schema", reason)
    try:
        return parser(data, run_dir)
    except MetricsError as err:
        return FailedRun(run_dir, err.status, err.reason, err.seed, err.choices)


def load_runs(dirs: Iterable[str | os.PathLike[str]]) -> tuple[list[Run], list[FailedRun]]:
    """Find and read every run under ``dirs``: ``(completed runs, failed or unfinished runs)``."""
    runs: list[Run] = []
    failed: list[FailedRun] = []
    for run_dir in find_run_dirs(dirs):
        result = read_run(run_dir)
        (runs if isinstance(result, Run) else failed).append(result)
    return runs, failed


# --------------------------------------------------------------------------------------------
# Grouping and statistics
# --------------------------------------------------------------------------------------------
def group_runs(runs: Iterable[Run]) -> dict[GroupKey, list[Run]]:
    """Group runs by their choices in :data:`GROUP_KEYS` (sorted by key, runs sorted by seed)."""
    groups: dict[GroupKey, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    return {
        k: sorted(v, key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
        for k, v in sorted(groups.items())
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    x = np.asarray(values, dtype=float)
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


def aggregate(key: GroupKey, runs: Sequence[Run]) -> GroupStats:
    """Mean and sample std (ddof=1) over the seeds of one group."""
    if not runs:
        raise ValueError("aggregate needs at least one run")
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
        loss_mean=loss_mean,
        loss_std=loss_std,
        acc_per_class=per_class,
        class_names=names,
        seconds_per_epoch=float(np.mean(spe)) if spe else None,
        params_total=round(float(np.mean(totals))) if totals else None,
        params_stn=round(float(np.mean(stns))) if stns else None,
    )


def aggregate_all(groups: dict[GroupKey, list[Run]]) -> list[GroupStats]:
    return [aggregate(k, v) for k, v in groups.items()]


def varied_key(a: GroupKey, b: GroupKey) -> str | None:
    """The single choice in which groups ``a`` and ``b`` differ, or ``None`` if not exactly one.

    ``n/a`` is a wildcard when the groups differ in ``model`` (a CNN has no localiser, so an
    STN group and a CNN group pair up if everything else matches); otherwise the groups must
    differ in exactly one key whose values are both real (not ``n/a``).
    """
    diffs = [i for i, (va, vb) in enumerate(zip(a, b, strict=True)) if va != vb]
    model = GROUP_KEYS.index("model")
    if model in diffs:
        others = [i for i in diffs if i != model]
        if all(NA in (a[i], b[i]) for i in others):
            return "model"
        return None
    if len(diffs) == 1 and NA not in (a[diffs[0]], b[diffs[0]]):
        return GROUP_KEYS[diffs[0]]
    return None


def pair_differences(
    stats: Sequence[GroupStats], confidence: float = CONFIDENCE
) -> list[Difference]:
    """Every pair of groups differing in one choice, with a Welch CI for ``B - A``.

    A and B are ordered alphabetically by the value of the varied choice (e.g. ``cnn`` before
    ``stn``, so the model rows read "STN minus CNN").
    """
    out: list[Difference] = []
    for i, ga in enumerate(stats):
        for gb in stats[i + 1 :]:
            key = varied_key(ga.key, gb.key)
            if key is None:
                continue
            idx = GROUP_KEYS.index(key)
            a, b = (ga, gb) if (ga.key[idx], ga.key) <= (gb.key[idx], gb.key) else (gb, ga)
            out.append(Difference(key, a, b, welch_ci(a.accs, b.accs, confidence)))
    out.sort(key=lambda d: (GROUP_KEYS.index(d.varied), d.a.key, d.b.key))
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pm(mean: float, std: float | None, scale: float = 1.0, digits: int = 2) -> str:
    if std is None:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _seeds(seeds: Sequence[int | None]) -> str:
    return ", ".join("?" if s is None else str(s) for s in seeds)


def group_label(key: GroupKey, varying: Sequence[int] | None = None) -> str:
    """Short label: the values of the keys that vary across groups (``n/a`` left out)."""
    idx = range(len(key)) if not varying else varying
    parts = [key[i] for i in idx if key[i] != NA]
    return " / ".join(parts) if parts else " / ".join(v for v in key if v != NA)


def _varying(stats: Sequence[GroupStats]) -> list[int]:
    return [i for i in range(len(GROUP_KEYS)) if len({g.key[i] for g in stats}) > 1]


def results_table(stats: Sequence[GroupStats]) -> str:
    """The main markdown table: one row per group."""
    head = [
        *GROUP_KEYS,
        "n",
        "seeds",
        "test acc (%)",
        "test loss",
        "s/epoch",
        "params",
        "STN params",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in stats:
        row = [
            *g.key,
            str(g.n),
            _seeds(g.seeds),
            _pm(g.acc_mean, g.acc_std, 100.0, 2),
            _pm(g.loss_mean, g.loss_std, 1.0, 4),
            "" if g.seconds_per_epoch is None else f"{g.seconds_per_epoch:.2f}",
            "" if g.params_total is None else f"{g.params_total:,}",
            "" if g.params_stn is None else f"{g.params_stn:,}",
        ]
        lines.append("| " + " | ".join(_md(c) for c in row) + " |")
    return "\n".join(lines)


def per_class_table(stats: Sequence[GroupStats]) -> str:
    """Mean per-class test accuracy (%), one table per distinct set of class names."""
    blocks = []
    by_names: dict[tuple[str, ...], list[GroupStats]] = {}
    for g in stats:
        if g.acc_per_class:
            by_names.setdefault(tuple(g.class_names), []).append(g)
    varying = _varying(stats)
    for names, groups in by_names.items():
        head = ["group", *names]
        lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
        for g in groups:
            cells = [group_label(g.key, varying), *(f"{100 * v:.1f}" for v in g.acc_per_class)]
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "_No per-class accuracies recorded._"


def differences_table(diffs: Sequence[Difference], stats: Sequence[GroupStats]) -> str:
    if not diffs:
        return "_No pair of groups differs in exactly one choice._"
    varying = _varying(stats)
    head = [
        "varied",
        "A",
        "B",
        "other choices",
        "n A",
        "n B",
        "B − A (pp)",
        "95% CI (pp)",
        "df",
        "result",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in diffs:
        w = d.welch
        row = [
            d.varied,
            group_label(d.a.key, varying),
            group_label(d.b.key, varying),
            d.shared,
            str(d.a.n),
            str(d.b.n),
            f"{100 * d.diff:+.2f}",
            "" if w is None else f"[{100 * w.low:+.2f}, {100 * w.high:+.2f}]",
            "" if w is None else f"{w.df:.1f}",
            f"**{d.verdict}**" if d.verdict == SIGNIFICANT else d.verdict,
        ]
        lines.append("| " + " | ".join(_md(c) for c in row) + " |")
    return "\n".join(lines)


def failed_table(failed: Sequence[FailedRun]) -> str:
    if not failed:
        return "None."
    lines = ["| run | status | group | seed | reason |", "|---|---|---|---|---|"]
    for f in failed:
        group = group_label(tuple(f.choices[k] for k in GROUP_KEYS)) if f.choices else "?"
        seed = "?" if f.seed is None else str(f.seed)
        row = [f"`{_display_path(f.path)}`", f.status, group, seed, f.reason]
        lines.append("| " + " | ".join(_md(c) for c in row) + " |")
    return "\n".join(lines)


def render_markdown(
    stats: Sequence[GroupStats],
    diffs: Sequence[Difference],
    failed: Sequence[FailedRun],
    dirs: Sequence[str] = (),
) -> str:
    """The whole ``compare.md`` document."""
    n_runs = sum(g.n for g in stats)
    where = ", ".join(f"`{d}`" for d in dirs)
    parts = [
        "# Run comparison",
        "",
        f"{n_runs} completed runs in {len(stats)} groups"
        + (f" from {where}" if where else "")
        + f"; {len(failed)} failed or unfinished. Mean ± sample std (ddof=1) over seeds; "
        "accuracy in %.",
        "",
        "## Results",
        "",
        results_table(stats) if stats else "_No completed runs._",
        "",
        "## Per-class test accuracy (%)",
        "",
        per_class_table(stats),
        "",
        "## Differences",
        "",
        "Pairs of groups that differ in exactly one choice (`n/a` matches anything when the "
        "model differs). B − A is the difference in mean test accuracy in percentage points; "
        f"the {100 * CONFIDENCE:.0f}% confidence interval comes from Welch's t test "
        "(Welch–Satterthwaite df); **significant** means the interval excludes 0. "
        "Needs at least 2 seeds per group.",
        "",
        differences_table(diffs, stats),
        "",
        "## Failed or unfinished runs",
        "",
        failed_table(failed),
        "",
    ]
    return "\n".join(parts)


def write_markdown(path: Path, text: str) -> None:
    atomic_write(path, text)


def _csv_text(rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


def _num(value: float | int | None) -> str:
    if value is None:
        return ""
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def write_csv(path: Path, stats: Sequence[GroupStats]) -> None:
    """``compare.csv``: one row per group; accuracies as fractions (0-1), blank if undefined."""
    class_cols: list[str] = []
    for g in stats:
        for name in g.class_names:
            if name not in class_cols:
                class_cols.append(name)
    head = [
        *GROUP_KEYS,
        "n",
        "seeds",
        "test_acc_mean",
        "test_acc_std",
        "test_loss_mean",
        "test_loss_std",
        "seconds_per_epoch_mean",
        "params_total",
        "params_stn",
        *(f"acc_class_{c}" for c in class_cols),
    ]
    rows: list[list[Any]] = [head]
    for g in stats:
        per_class = dict(zip(g.class_names, g.acc_per_class, strict=False))
        rows.append(
            [
                *g.key,
                g.n,
                ";".join("" if s is None else str(s) for s in g.seeds),
                _num(g.acc_mean),
                _num(g.acc_std),
                _num(g.loss_mean),
                _num(g.loss_std),
                _num(g.seconds_per_epoch),
                _num(g.params_total),
                _num(g.params_stn),
                *(_num(per_class.get(c)) for c in class_cols),
            ]
        )
    atomic_write(path, _csv_text(rows))


def write_differences_csv(path: Path, diffs: Sequence[Difference]) -> None:
    """``differences.csv``: one row per compared pair; numbers as fractions (0-1)."""
    head = [
        "varied",
        "a_value",
        "b_value",
        *(f"a_{k}" for k in GROUP_KEYS),
        *(f"b_{k}" for k in GROUP_KEYS),
        "n_a",
        "n_b",
        "mean_a",
        "mean_b",
        "diff",
        "ci_low",
        "ci_high",
        "df",
        "t_crit",
        "confidence",
        "result",
    ]
    rows: list[list[Any]] = [head]
    for d in diffs:
        idx = GROUP_KEYS.index(d.varied)
        w = d.welch
        rows.append(
            [
                d.varied,
                d.a.key[idx],
                d.b.key[idx],
                *d.a.key,
                *d.b.key,
                d.a.n,
                d.b.n,
                _num(d.a.acc_mean),
                _num(d.b.acc_mean),
                _num(d.diff),
                _num(None if w is None else w.low),
                _num(None if w is None else w.high),
                _num(None if w is None else w.df),
                _num(None if w is None else w.t_crit),
                CONFIDENCE,
                d.verdict,
            ]
        )
    atomic_write(path, _csv_text(rows))


def write_plot(path: Path, stats: Sequence[GroupStats]) -> None:
    """``compare.png``: horizontal bars of mean test accuracy (%) with ±1 std error bars."""
    # The object-oriented API with an explicit Agg canvas: no pyplot state, no GUI backend,
    # nothing to close, and a notebook's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(len(stats), 1)
    fig = Figure(figsize=(8.0, 1.6 + 0.45 * n), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if not stats:
        ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        varying = _varying(stats)
        labels = [group_label(g.key, varying) for g in stats]
        means = np.array([100 * g.acc_mean for g in stats])
        stds = np.array([0.0 if g.acc_std is None else 100 * g.acc_std for g in stats])
        y = np.arange(len(stats))[::-1]  # first group on top
        ax.barh(y, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=4)
        ax.set_yticks(y, labels)
        lo = float(np.min(means - stds))
        left = max(0.0, math.floor(lo - 0.25 * max(float(np.ptp(means)), 2.0)))
        right = min(100.0, float(np.max(means + stds)) + 0.15 * max(float(np.ptp(means)), 4.0))
        right = max(right, float(np.max(means)) + 1.0)
        ax.set_xlim(left, right)
        for yi, m, s, g in zip(y, means, stds, stats, strict=True):
            ax.text(m + s, yi, f"  {m:.2f}% (n={g.n})", va="center", fontsize=9)
        xlabel = "mean test accuracy (%), error bars ±1 sample std over seeds"
        ax.set_xlabel(xlabel + ("; axis does not start at 0" if left > 0 else ""))
        shared = [
            f"{GROUP_KEYS[i]}={stats[0].key[i]}"
            for i in range(len(GROUP_KEYS))
            if i not in varying and stats[0].key[i] != NA
        ]
        ax.set_title("Test accuracy per group" + (f"\n({', '.join(shared)})" if shared else ""))
        ax.grid(axis="x", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stn_lab.compare",
        description="Aggregate finished runs over seeds, tabulate them, plot them and test "
        "one-choice differences (Welch 95%% CI). Reads only metrics.json files.",
    )
    parser.add_argument(
        "dirs",
        nargs="*",
        default=["logs"],
        help="folders to search recursively for runs (default: logs)",
    )
    parser.add_argument(
        "--out",
        default="results",
        help="output folder for compare.md/.csv/.png and differences.csv (default: results)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the comparison. Returns 0 on success, 1 if no run completed, 2 if no runs exist."""
    args = build_parser().parse_args(argv)
    dirs = [str(d) for d in args.dirs]
    for d in dirs:
        if not Path(d).is_dir():
            print(f"compare: warning: {d} is not a folder, skipped", file=sys.stderr)
    runs, failed = load_runs(dirs)
    if not runs and not failed:
        print(
            f"compare: error: no runs found in {', '.join(dirs)} "
            f"(looked for folders holding .hydra/ or {METRICS_FILE})",
            file=sys.stderr,
        )
        return 2
    groups = group_runs(runs)
    for key, members in groups.items():
        seeds = [r.seed for r in members if r.seed is not None]
        if len(seeds) != len(set(seeds)):
            print(
                f"compare: warning: group {group_label(key)} has repeated seeds {seeds}",
                file=sys.stderr,
            )
    stats = aggregate_all(groups)
    diffs = pair_differences(stats)
    out = Path(args.out)
    text = render_markdown(stats, diffs, failed, dirs)
    write_markdown(out / "compare.md", text)
    write_csv(out / "compare.csv", stats)
    write_differences_csv(out / "differences.csv", diffs)
    write_plot(out / "compare.png", stats)
    print(text)
    names = ", ".join(
        str(out / f) for f in ("compare.md", "compare.csv", "differences.csv", "compare.png")
    )
    print(f"Wrote {names}")
    if failed:
        print(
            f"compare: {len(failed)} failed or unfinished run(s), listed under "
            "'Failed or unfinished runs' above",
            file=sys.stderr,
        )
    if not runs:
        print("compare: error: no completed runs to compare", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
