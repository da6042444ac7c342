"""Compare finished training runs: aggregate over seeds, tabulate, plot and test differences.

Usage::

    python -m stn_lab.compare [DIR ...] [--out results] [--include-debug]

``compare`` never imports model or training code. It only reads the ``metrics.json`` file that
every training run writes into its Hydra output folder (and looks whether ``.hydra/`` exists, to
spot runs that started but never finished). It needs only the standard library, numpy and
matplotlib (drawn off-screen with the Agg canvas).

Pipeline (each step is a small pure function, usable from a notebook):

1. :func:`find_run_dirs` / :func:`load_runs` -- walk the given folders (default ``logs/``) for run
   folders: any folder holding ``.hydra/`` or ``metrics.json`` (single runs ``logs/runs/...`` and
   multirun jobs ``logs/multiruns/<date>/<n>/`` alike). Every folder becomes one
   :class:`RunRecord`; :class:`RunSet` sorts them into results, debug runs, interrupted runs and
   failed ones (no ``metrics.json``, a half-written or unreadable one, an unknown
   ``schema_version``, ``status == "failed"``), each with a one-line reason -- never silently
   dropped.
2. :func:`build_table` -- group the results by their whole resolved config minus the seed and
   minus :data:`RESULT_NEUTRAL_KEYS`, count a repeated seed once, aggregate (mean and sample
   std, ddof=1) and name each group by the settings that vary across the table.
3. :func:`pair_differences` -- for each pair of groups that differ in one of those settings, the
   difference in mean test accuracy (B - A) with a Welch 95% confidence interval
   (:func:`welch_ci`).
4. :func:`render_markdown`, :func:`write_csv`, :func:`write_differences_csv`, :func:`write_plot`
   -- ``compare.md``, ``compare.csv``, ``differences.csv`` and ``compare.png``, written
   atomically.

The Student-t quantile is computed here (no scipy): bisection on the t CDF, which is expressed
through the regularised incomplete beta function evaluated by a continued fraction.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
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

#: Config keys (dotted, as in the resolved Hydra config) that never change a run's result, so
#: runs that differ only in them belong to one group. An entry covers the key and everything
#: below it; the longest matching entry wins and a leading ``!`` keeps a key (early stopping
#: changes when training ends, the other callbacks only record). ``seed`` is what a group
#: varies over. For v1 records the entries apply to the Hydra choices and overrides alike.
RESULT_NEUTRAL_KEYS: tuple[str, ...] = (
    "seed",
    "ckpt_path",
    "paths",
    "hydra",
    "checkpoint_every_n_steps",
    "artefacts",
    "logger",
    "callbacks",
    "!callbacks.early_stopping",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "data.data_dir",
    "data.num_workers",
    "data.keep_on_device",
    "data.download",
)
#: Value of a setting that does not apply (e.g. ``localiser`` for ``model=cnn``) or is missing.
NA = "n/a"
#: Name of the file every training run writes into its output folder.
METRICS_FILE = "metrics.json"
#: metrics.json ``schema_version``s this module reads (v2 added config, debug, step, diverged,
#: best_val_acc and the ``interrupted`` status; v1 records are grouped by choices + overrides).
SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)
#: Confidence level of the intervals in the "Differences" section.
CONFIDENCE = 0.95
#: The Hydra choice whose ``n/a`` settings match anything when it differs (a CNN has no
#: localiser, so an STN group and a CNN group pair up if everything else matches).
MODEL = "model"
#: Trainer flags that make a v1 run a debug run, with the values that leave them off.
V1_DEBUG_FLAGS: dict[str, tuple[str, ...]] = {
    "fast_dev_run": ("false", "0"),
    "overfit_batches": ("0", "0.0"),
    "limit_train_batches": ("null", "none", "1.0"),
    "limit_val_batches": ("null", "none", "1.0"),
    "limit_test_batches": ("null", "none", "1.0"),
}

SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "no significant difference"
N_TOO_SMALL = "n too small"

COMPLETED = "completed"
INTERRUPTED = "interrupted"

#: A setting that can name a group: ``("choice", group)`` for a Hydra choice such as
#: ``optimizer``, ``("config", dotted key)`` for a value such as ``model.stn.lr_mult``.
Setting = tuple[str, str]
#: What identifies a group: the sorted ``(dotted key, value)`` pairs of the runs' settings.
GroupKey = tuple[tuple[str, str], ...]


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRecord:
    """One run folder as read from its ``metrics.json``, whatever became of the run.

    ``status`` is the run's own (``completed``, ``failed``, ``interrupted``) or one that
    ``compare`` gives a folder it cannot use (``unfinished``, ``unreadable``, ``unknown
    schema``, ``malformed``); ``reason`` explains anything but ``completed`` in one line.
    ``settings`` identify the run's group: the flattened resolved config (v1: the choices and
    overrides) minus the seed and :data:`RESULT_NEUTRAL_KEYS`, every value as text.
    """

    path: Path
    status: str
    reason: str = ""
    seed: int | None = None
    choices: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    debug: tuple[str, ...] = ()
    diverged: bool = False
    step: int | None = None
    best_val_acc: float | None = None
    test_acc: float = math.nan
    test_loss: float = math.nan
    acc_per_class: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()
    seconds_per_epoch: tuple[float, ...] = ()
    params_total: int | None = None
    params_stn: int | None = None

    @property
    def key(self) -> GroupKey:
        return tuple(sorted(self.settings.items()))

    @property
    def described(self) -> dict[Setting, str]:
        """Every setting that can name the run's group: its choices, then its config values."""
        return {
            **{("choice", k): v for k, v in self.choices.items()},
            **{("config", k): v for k, v in self.settings.items()},
        }


@dataclass
class RunSet:
    """The runs found, sorted by what ``compare`` does with them."""

    results: list[RunRecord] = field(default_factory=list)  # completed, pooled over seeds
    debug: list[RunRecord] = field(default_factory=list)  # completed debug runs: not results
    interrupted: list[RunRecord] = field(default_factory=list)  # stopped by a signal
    failed: list[RunRecord] = field(default_factory=list)  # failed, unfinished or unreadable

    def add(self, record: RunRecord) -> None:
        if record.status == COMPLETED:
            (self.debug if record.debug else self.results).append(record)
        elif record.status == INTERRUPTED:
            self.interrupted.append(record)
        else:
            self.failed.append(record)


class MetricsError(ValueError):
    """A required metrics.json field that is missing or not a number; the message says which."""


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


def changes_result(key: str) -> bool:
    """Whether the dotted config ``key`` can change a run's result (see RESULT_NEUTRAL_KEYS)."""
    best_len, keep = -1, True
    for entry in RESULT_NEUTRAL_KEYS:
        prefix = entry.removeprefix("!")
        if (key == prefix or key.startswith(prefix + ".")) and len(prefix) > best_len:
            best_len, keep = len(prefix), entry.startswith("!")
    return keep


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{dotted key: leaf}``; lists and empty dicts are leaves."""
    if not isinstance(node, dict) or (prefix and not node):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _text(value: Any) -> str:
    """A setting's value as text: strings as they are, anything else as JSON (``null``, ``0.5``)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _first_line(text: Any, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0].strip() if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _norm_choices(raw: Any) -> dict[str, str]:
    raw = raw if isinstance(raw, dict) else {}
    return {
        str(k): NA if v is None or str(v).strip() == "" else str(v)
        for k, v in raw.items()
        if changes_result(str(k))
    }


def _overrides(raw: Any) -> dict[str, str]:
    """Command-line overrides as ``{key: value}`` (``+``/``++``/``~`` prefixes dropped)."""
    items = raw if isinstance(raw, list) else []
    pairs = (str(item).lstrip("+~").partition("=") for item in items)
    return {key: value for key, _, value in pairs}


def _settings(data: dict[str, Any], choices: dict[str, str]) -> dict[str, str]:
    """What identifies the run's group (see RunRecord); v1 falls back to choices + overrides."""
    config = data.get("config")
    if isinstance(config, dict):
        flat = {k: _text(v) for k, v in flatten(config).items()}
    else:
        flat = {**_overrides(data.get("overrides")), **choices}
    return {k: v for k, v in flat.items() if changes_result(k)}


def _debug(data: dict[str, Any]) -> tuple[str, ...]:
    """The debug flags in effect: v2 records them, for v1 they are read off the overrides."""
    debug = data.get("debug")
    if isinstance(debug, list):
        return tuple(str(d) for d in debug)
    flags = []
    choices = data.get("choices") if isinstance(data.get("choices"), dict) else {}
    choice = choices.get("debug")
    if choice:
        flags.append(f"debug={choice}")
    for key, value in _overrides(data.get("overrides")).items():
        flag = key.removeprefix("trainer.")
        if key.startswith("trainer.") and flag in V1_DEBUG_FLAGS:
            if value.strip().lower() not in V1_DEBUG_FLAGS[flag]:
                flags.append(f"{flag}={value}")
    return tuple(flags)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetricsError(f"metrics.json: {what} is not a number ({value!r})")
    return float(value)


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MetricsError(f"metrics.json: {what} is not a list")
    return tuple(_number(v, f"{what} entry") for v in value)


def _optional_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _optional_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_metrics(data: dict[str, Any], path: Path) -> RunRecord:
    """A decoded metrics.json (any of :data:`SCHEMA_VERSIONS`) as a :class:`RunRecord`."""
    choices = _norm_choices(data.get("choices"))
    record = RunRecord(
        path=path,
        status=COMPLETED,
        seed=_optional_int(data.get("seed")),
        choices=choices,
        settings=_settings(data, choices),
        debug=_debug(data),
        diverged=data.get("diverged") is True,
        step=_optional_int(data.get("step")),
        best_val_acc=_optional_float(data.get("best_val_acc")),
    )
    status = data.get("status")
    if status != COMPLETED:
        error = data.get("error")
        reason = _first_line(error) if error else f"status is {status!r} (no error message)"
        label = status if status in ("failed", INTERRUPTED) else f"status {status!r}"
        return dataclasses.replace(record, status=label, reason=reason)
    test = data.get("test")
    if not isinstance(test, dict):
        return dataclasses.replace(
            record, status="malformed", reason="metrics.json has no 'test' section"
        )
    try:
        names = data.get("class_names")
        params = data.get("params") if isinstance(data.get("params"), dict) else {}
        return dataclasses.replace(
            record,
            test_acc=_number(test.get("acc"), "test.acc"),
            test_loss=_number(test.get("loss"), "test.loss"),
            acc_per_class=_numbers(test.get("acc_per_class"), "test.acc_per_class"),
            class_names=tuple(str(n) for n in names) if isinstance(names, list) else (),
            seconds_per_epoch=_numbers(data.get("seconds_per_epoch"), "seconds_per_epoch"),
            params_total=_optional_int(params.get("total")),
            params_stn=_optional_int(params.get("stn")),
        )
    except MetricsError as err:
        return dataclasses.replace(record, status="malformed", reason=str(err))


def read_run(run_dir: Path) -> RunRecord:
    """Read one run folder; a folder that holds no usable record gets a status saying why."""
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        has_config = (run_dir / ".hydra" / "config.yaml").is_file()
        what = ".hydra/config.yaml" if has_config else ".hydra/"
        reason = f"no metrics.json (only {what}): never finished"
        return RunRecord(run_dir, "unfinished", reason)
    try:
        text = metrics.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return RunRecord(run_dir, "unreadable", f"cannot read metrics.json: {err}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        reason = f"metrics.json is not valid JSON (half-written?): {err}"
        return RunRecord(run_dir, "unreadable", reason)
    if not isinstance(data, dict):
        return RunRecord(run_dir, "unreadable", "metrics.json does not hold a JSON object")
    version = data.get("schema_version")
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        known = ", ".join(str(v) for v in SCHEMA_VERSIONS)
        reason = f"unknown metrics.json schema_version {version!r} (this compare reads: {known})"
        return RunRecord(run_dir, "unknown schema", reason)
    return parse_metrics(data, run_dir)


def load_runs(dirs: Iterable[str | os.PathLike[str]]) -> RunSet:
    """Find and read every run under ``dirs``, sorted into a :class:`RunSet`."""
    found = RunSet()
    for run_dir in find_run_dirs(dirs):
        found.add(read_run(run_dir))
    return found


# --------------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------------
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

    Candidates are the Hydra choices (in the order the records list them) and then the config
    keys (sorted). A candidate is kept when it varies and its value is not already fixed by
    the values of the settings kept before it, so ``optimizer=sgd`` hides ``optimizer.lr`` and
    ``model=cnn`` hides ``localiser=n/a``, while ``model.stn.lr_mult`` swept under one optimizer
    stays. Every varying setting is kept or follows from kept ones, so labels are unique.
    """
    choices: dict[Setting, None] = {}
    configs: set[Setting] = set()
    for d in described:
        for s in d:
            (choices.setdefault(s, None) if s[0] == "choice" else configs.add(s))
    kept: list[Setting] = []
    for s in [*choices, *sorted(configs)]:
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


def build_table(runs: Iterable[RunRecord]) -> Table:
    """Group ``runs``, aggregate each group and name it; groups sorted by their label values."""
    groups = [aggregate(k, v) for k, v in group_runs(runs).items()]
    names = naming_settings([g.described for g in groups])
    named = []
    for g in groups:
        values = tuple(g.described.get(s, NA) for s in names)
        named.append(dataclasses.replace(g, values=values, label=label(values, names)))
    named.sort(key=lambda g: (g.values, g.key))
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


# --------------------------------------------------------------------------------------------
# Student t distribution and Welch's test (no scipy)
# --------------------------------------------------------------------------------------------
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
# Differences between groups
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """One row of the "Differences" section: group B minus group A in mean test accuracy."""

    varied: str  # the setting that differs, as labels name it
    a: GroupStats
    b: GroupStats
    welch: WelchResult | None  # None when either group has n < 2
    shared: str = ""  # the naming settings both groups share (n/a on one side counts as shared)

    @property
    def verdict(self) -> str:
        if self.welch is None:
            return N_TOO_SMALL
        return SIGNIFICANT if self.welch.significant else NOT_SIGNIFICANT

    @property
    def diff(self) -> float:
        return self.b.acc_mean - self.a.acc_mean


def pair_differences(table: Table, confidence: float = CONFIDENCE) -> list[Difference]:
    """Every pair of groups differing in one naming setting, with a Welch CI for ``B - A``.

    A and B are ordered alphabetically by the value of the varied setting (e.g. ``cnn`` before
    ``stn``, so the model rows read "STN minus CNN").
    """
    names = table.names
    out: list[tuple[int, Difference]] = []
    for i, ga in enumerate(table.groups):
        for gb in table.groups[i + 1 :]:
            setting = varied_setting(ga, gb, names)
            if setting is None:
                continue
            idx = names.index(setting)
            a, b = (
                (ga, gb) if (ga.values[idx], ga.values) <= (gb.values[idx], gb.values) else (gb, ga)
            )
            shared = [
                f"{setting_name(s)}={va if va != NA else vb}"
                for s, va, vb in zip(names, a.values, b.values, strict=True)
                if s != setting and (va, vb) != (NA, NA)
            ]
            welch = welch_ci(a.accs, b.accs, confidence)
            out.append((idx, Difference(setting_name(setting), a, b, welch, " ".join(shared))))
    out.sort(key=lambda item: (item[0], item[1].a.values, item[1].b.values))
    return [d for _, d in out]


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


def _md_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pm(mean: float, std: float | None, scale: float = 1.0, digits: int = 2) -> str:
    if std is None:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _seeds(seeds: Sequence[int | None]) -> str:
    return ", ".join("?" if s is None else str(s) for s in seeds)


def group_notes(g: GroupStats) -> str:
    """The table's notes cell: diverged runs and seeds that were counted once."""
    notes = []
    if g.diverged_seeds:
        notes.append(f"⚠ diverged: seed {_seeds(g.diverged_seeds)}")
    if g.duplicates:
        notes.append(f"duplicate seed {_seeds(sorted({r.seed for r in g.duplicates}))}")
    return "; ".join(notes)


def results_table(table: Table) -> str:
    """The main markdown table: one row per group."""
    head = ["group", "n", "seeds", "test acc (%)", "test loss", "s/epoch", "params"]
    head += ["STN params", "notes"]
    rows = [
        [
            g.label,
            str(g.n),
            _seeds(g.seeds),
            _pm(g.acc_mean, g.acc_std, 100.0, 2),
            _pm(g.loss_mean, g.loss_std, 1.0, 4),
            "" if g.seconds_per_epoch is None else f"{g.seconds_per_epoch:.2f}",
            "" if g.params_total is None else f"{g.params_total:,}",
            "" if g.params_stn is None else f"{g.params_stn:,}",
            group_notes(g),
        ]
        for g in table.groups
    ]
    return _md_table(head, rows)


def per_class_table(table: Table) -> str:
    """Mean per-class test accuracy (%), one table per distinct set of class names."""
    by_names: dict[tuple[str, ...], list[GroupStats]] = {}
    for g in table.groups:
        if g.acc_per_class:
            by_names.setdefault(tuple(g.class_names), []).append(g)
    blocks = [
        _md_table(
            ["group", *names],
            [[g.label, *(f"{100 * v:.1f}" for v in g.acc_per_class)] for g in groups],
        )
        for names, groups in by_names.items()
    ]
    return "\n\n".join(blocks) if blocks else "_No per-class accuracies recorded._"


def differences_table(diffs: Sequence[Difference]) -> str:
    if not diffs:
        return "_No pair of groups differs in exactly one setting._"
    head = ["varied", "A", "B", "other settings", "n A", "n B", "B − A (pp)", "95% CI (pp)"]
    head += ["df", "result"]
    rows = []
    for d in diffs:
        w = d.welch
        rows.append(
            [
                d.varied,
                d.a.label,
                d.b.label,
                d.shared,
                str(d.a.n),
                str(d.b.n),
                f"{100 * d.diff:+.2f}",
                "" if w is None else f"[{100 * w.low:+.2f}, {100 * w.high:+.2f}]",
                "" if w is None else f"{w.df:.1f}",
                f"**{d.verdict}**" if d.verdict == SIGNIFICANT else d.verdict,
            ]
        )
    return _md_table(head, rows)


def notes_list(table: Table) -> str:
    """Duplicate seeds (counted once) and diverged runs, one bullet per run."""
    lines = []
    for g in table.groups:
        for dup in g.duplicates:
            kept = next(r for r in g.runs if r.seed == dup.seed)
            lines.append(
                f"- Duplicate: seed {dup.seed} of `{g.label}` ran more than once; counted once "
                f"(kept `{_display_path(kept.path)}`, {100 * kept.test_acc:.2f}%; left out "
                f"`{_display_path(dup.path)}`, {100 * dup.test_acc:.2f}%)."
            )
        for run in g.runs:
            if run.diverged:
                lines.append(
                    f"- Diverged: seed {run.seed} of `{g.label}` (`{_display_path(run.path)}`): "
                    "the loss exploded but stayed finite; its accuracy is pooled, check it."
                )
    return "\n".join(lines) if lines else "None."


def runs_table(
    runs: Sequence[RunRecord], table: Table, columns: dict[str, Callable[[RunRecord], str]]
) -> str:
    """Runs kept apart from the results: folder, group, seed, then one cell per ``columns``."""
    if not runs:
        return "None."
    rows = [
        [
            f"`{_display_path(r.path)}`",
            describe(r, table),
            "?" if r.seed is None else str(r.seed),
            *(cell(r) for cell in columns.values()),
        ]
        for r in runs
    ]
    return _md_table(["run", "group", "seed", *columns], rows)


INTERRUPTED_COLUMNS: dict[str, Callable[[RunRecord], str]] = {
    "step": lambda r: "?" if r.step is None else str(r.step),
    "best val acc (%)": lambda r: "" if r.best_val_acc is None else f"{100 * r.best_val_acc:.2f}",
}
DEBUG_COLUMNS: dict[str, Callable[[RunRecord], str]] = {
    "debug": lambda r: ", ".join(r.debug),
    "test acc (%)": lambda r: f"{100 * r.test_acc:.2f}",
}
FAILED_COLUMNS: dict[str, Callable[[RunRecord], str]] = {
    "status": lambda r: r.status,
    "reason": lambda r: r.reason,
}


def render_markdown(
    table: Table,
    diffs: Sequence[Difference],
    found: RunSet,
    dirs: Sequence[str] = (),
    include_debug: bool = False,
) -> str:
    """The whole ``compare.md`` document."""
    n_runs = sum(g.n for g in table.groups)
    where = ", ".join(f"`{d}`" for d in dirs)
    debug_note = ""
    if found.debug and not include_debug:
        debug_note = f" {len(found.debug)} debug runs left out (`--include-debug` lists them)."
    fixed = " ".join(f"{k}={v}" for k, v in table.fixed.items())
    parts = [
        "# Run comparison",
        "",
        f"{n_runs} completed runs in {len(table.groups)} groups"
        + (f" from {where}" if where else "")
        + f"; {len(found.interrupted)} interrupted; {len(found.failed)} failed or unfinished."
        + debug_note
        + " Runs are grouped by their whole resolved config except the seed; a group is named "
        "by the settings that vary across the table. Mean ± sample std (ddof=1) over seeds; "
        "accuracy in %.",
        "",
        *([f"Shared by all groups: {fixed}.", ""] if fixed else []),
        "## Results",
        "",
        results_table(table) if table.groups else "_No completed runs._",
        "",
        "## Per-class test accuracy (%)",
        "",
        per_class_table(table),
        "",
        "## Differences",
        "",
        "Pairs of groups that differ in exactly one setting (`n/a` matches anything when the "
        "model differs). B − A is the difference in mean test accuracy in percentage points; "
        f"the {100 * CONFIDENCE:.0f}% confidence interval comes from Welch's t test "
        "(Welch–Satterthwaite df); **significant** means the interval excludes 0. "
        "Needs at least 2 seeds per group.",
        "",
        differences_table(diffs),
        "",
        "## Notes",
        "",
        notes_list(table),
        "",
        "## Interrupted runs",
        "",
        "Stopped by a signal (SIGTERM, SIGINT); `ckpt_path=last` resumes them. Never pooled.",
        "",
        runs_table(found.interrupted, table, INTERRUPTED_COLUMNS),
        "",
    ]
    if include_debug:
        parts += [
            "## Debug runs",
            "",
            "Runs with debug flags (fast_dev_run, limit_*_batches, overfit_batches): not "
            "results, never pooled.",
            "",
            runs_table(found.debug, table, DEBUG_COLUMNS),
            "",
        ]
    parts += [
        "## Failed or unfinished runs",
        "",
        runs_table(found.failed, table, FAILED_COLUMNS),
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


def _seed_list(seeds: Iterable[int | None]) -> str:
    return ";".join("" if s is None else str(s) for s in seeds)


def write_csv(path: Path, table: Table) -> None:
    """``compare.csv``: one row per group; accuracies as fractions (0-1), blank if undefined."""
    class_cols: list[str] = []
    for g in table.groups:
        for name in g.class_names:
            if name not in class_cols:
                class_cols.append(name)
    head = [
        "group",
        *(setting_name(s) for s in table.names),
        "n",
        "seeds",
        "test_acc_mean",
        "test_acc_std",
        "test_loss_mean",
        "test_loss_std",
        "seconds_per_epoch_mean",
        "params_total",
        "params_stn",
        "diverged_seeds",
        "duplicate_seeds",
        *(f"acc_class_{c}" for c in class_cols),
    ]
    rows: list[list[Any]] = [head]
    for g in table.groups:
        per_class = dict(zip(g.class_names, g.acc_per_class, strict=False))
        rows.append(
            [
                g.label,
                *g.values,
                g.n,
                _seed_list(g.seeds),
                _num(g.acc_mean),
                _num(g.acc_std),
                _num(g.loss_mean),
                _num(g.loss_std),
                _num(g.seconds_per_epoch),
                _num(g.params_total),
                _num(g.params_stn),
                _seed_list(g.diverged_seeds),
                _seed_list(r.seed for r in g.duplicates),
                *(_num(per_class.get(c)) for c in class_cols),
            ]
        )
    atomic_write(path, _csv_text(rows))


def write_differences_csv(path: Path, diffs: Sequence[Difference]) -> None:
    """``differences.csv``: one row per compared pair; numbers as fractions (0-1)."""
    head = [
        "varied",
        "a_group",
        "b_group",
        "shared",
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
        w = d.welch
        rows.append(
            [
                d.varied,
                d.a.label,
                d.b.label,
                d.shared,
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


def write_plot(path: Path, table: Table) -> None:
    """``compare.png``: horizontal bars of mean test accuracy (%) with ±1 std error bars."""
    # The object-oriented API with an explicit Agg canvas: no pyplot state, no GUI backend,
    # nothing to close, and a notebook's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stats = table.groups
    n = max(len(stats), 1)
    fig = Figure(figsize=(8.0, 1.6 + 0.45 * n), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if not stats:
        ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        means = np.array([100 * g.acc_mean for g in stats])
        stds = np.array([0.0 if g.acc_std is None else 100 * g.acc_std for g in stats])
        y = np.arange(len(stats))[::-1]  # first group on top
        ax.barh(y, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=4)
        ax.set_yticks(y, [g.label for g in stats])
        lo = float(np.min(means - stds))
        left = max(0.0, math.floor(lo - 0.25 * max(float(np.ptp(means)), 2.0)))
        right = min(100.0, float(np.max(means + stds)) + 0.15 * max(float(np.ptp(means)), 4.0))
        right = max(right, float(np.max(means)) + 1.0)
        ax.set_xlim(left, right)
        for yi, m, s, g in zip(y, means, stds, stats, strict=True):
            ax.text(m + s, yi, f"  {m:.2f}% (n={g.n})", va="center", fontsize=9)
        xlabel = "mean test accuracy (%), error bars ±1 sample std over seeds"
        ax.set_xlabel(xlabel + ("; axis does not start at 0" if left > 0 else ""))
        shared = ", ".join(f"{k}={v}" for k, v in table.fixed.items())
        ax.set_title("Test accuracy per group" + (f"\n({shared})" if shared else ""))
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
        "one-setting differences (Welch 95%% CI). Reads only metrics.json files.",
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
    parser.add_argument(
        "--include-debug",
        action="store_true",
        help="list debug runs (fast_dev_run, limit_*_batches, overfit_batches) in their own "
        "section; they are never pooled with results",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the comparison. Returns 0 on success, 1 if no run completed, 2 if no runs exist."""
    args = build_parser().parse_args(argv)
    dirs = [str(d) for d in args.dirs]
    for d in dirs:
        if not Path(d).is_dir():
            print(f"compare: warning: {d} is not a folder, skipped", file=sys.stderr)
    found = load_runs(dirs)
    if not (found.results or found.debug or found.interrupted or found.failed):
        print(
            f"compare: error: no runs found in {', '.join(dirs)} "
            f"(looked for folders holding .hydra/ or {METRICS_FILE})",
            file=sys.stderr,
        )
        return 2
    table = build_table(found.results)
    for g in table.groups:
        if g.duplicates:
            seeds = _seeds(sorted({r.seed for r in g.duplicates}))
            print(
                f"compare: warning: group {g.label} ran seed {seeds} more than once; "
                "counted once (see Notes)",
                file=sys.stderr,
            )
    diffs = pair_differences(table)
    out = Path(args.out)
    text = render_markdown(table, diffs, found, dirs, args.include_debug)
    write_markdown(out / "compare.md", text)
    write_csv(out / "compare.csv", table)
    write_differences_csv(out / "differences.csv", diffs)
    write_plot(out / "compare.png", table)
    print(text)
    names = ", ".join(
        str(out / f) for f in ("compare.md", "compare.csv", "differences.csv", "compare.png")
    )
    print(f"Wrote {names}")
    if found.failed or found.interrupted:
        print(
            f"compare: {len(found.failed)} failed or unfinished and {len(found.interrupted)} "
            "interrupted run(s), listed apart above",
            file=sys.stderr,
        )
    if not found.results:
        print("compare: error: no completed runs to compare", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
