"""The tables of a comparison, one column specification each, shared by every format.

A :class:`Column` says what a column is called, how its cell reads in ``compare.md`` and
``compare.tex``, whether ``compare.tex`` shows it, and which CSV columns it becomes (raw
numbers, accuracies as fractions). The markdown, TeX and CSV writers only lay these out, so a
new statistic is one column here beside the function that computes it.

The tables: :func:`group_columns` (``compare.md``'s results, ``compare.csv``, the first TeX
table), :func:`difference_columns` and :func:`image_columns` (the differences and their
per-image evidence; together ``differences.csv``), :func:`per_seed_columns`,
:func:`set_columns` (results across distortion sets) and the small markdown-only tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from stn_lab.compare.groups import BETTER, Difference, GroupStats, Table, setting_name
from stn_lab.compare.records import RunRecord
from stn_lab.compare.sets import GuardRow, ModelScores, SetsAnalysis
from stn_lab.compare.stats import CONFIDENCE, Interval

Row = TypeVar("Row")
LEVEL = f"{100 * CONFIDENCE:.0f}%"  # the confidence level as headers print it


@dataclass(frozen=True)
class Column(Generic[Row]):
    """One column of a table.

    ``title`` heads it in compare.md (and compare.tex when ``tex``); a column with no title is
    in the CSV only. ``cell`` is its text there; ``strong`` marks the cells markdown sets in
    bold. ``csv`` lists the CSV columns it becomes, each a name and a raw value (a number, text
    or None for blank).
    """

    title: str = ""
    cell: Callable[[Row], str] = lambda _: ""
    csv: tuple[tuple[str, Callable[[Row], Any]], ...] = ()
    tex: bool = False
    strong: Callable[[Row], bool] | None = None


def shown(columns: Iterable[Column], tex: bool = False) -> list[Column]:
    """The columns compare.md shows (``tex``: those compare.tex shows)."""
    return [c for c in columns if c.title and (c.tex or not tex)]


def csv_header(columns: Iterable[Column]) -> list[str]:
    return [name for c in columns for name, _ in c.csv]


def csv_row(columns: Iterable[Column[Row]], row: Row) -> list[str]:
    return [raw(value(row)) for c in columns for _, value in c.csv]


# ---------------------------------------------------------------- how values read
def raw(value: Any) -> str:
    """A CSV value: blank for None, floats to 10 significant digits, ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def pm(mean: float, std: float | None, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std``, or the mean alone without a spread."""
    if std is None:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def seeds_text(seeds: Sequence[int | None]) -> str:
    return ", ".join("?" if s is None else str(s) for s in seeds)


def seed_list(seeds: Iterable[int | None]) -> str:
    """Seeds as one CSV value: ``0;1;2``."""
    return ";".join("" if s is None else str(s) for s in seeds)


def interval(ci: tuple[float, float] | None, fmt: str) -> str:
    """An interval of fractions in percent: ``[88.52, 93.48]``."""
    return "" if ci is None else f"[{100 * ci[0]:{fmt}}, {100 * ci[1]:{fmt}}]"


def p_text(p: float | None) -> str:
    if p is None:
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def display_path(path: Path) -> str:
    """A path relative to the working folder when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _attr(obj: Any, *names: str) -> Any:
    """``obj.names[0].names[1]...``, or None when any step is None."""
    for name in names:
        if obj is None:
            return None
        obj = getattr(obj, name)
    return obj


# ---------------------------------------------------------------- groups
def group_notes(g: GroupStats) -> str:
    """The results table's notes cell: debug runs, diverged runs, seeds counted once."""
    notes = []
    if g.debug:
        notes.append(f"debug runs ({', '.join(g.debug)}): a check, not a result")
    if g.diverged_seeds:
        notes.append(f"⚠ diverged: seed {seeds_text(g.diverged_seeds)}")
    if g.duplicates:
        notes.append(f"duplicate seed {seeds_text(sorted({r.seed for r in g.duplicates}))}")
    return "; ".join(notes)


def group_columns(table: Table) -> list[Column[GroupStats]]:
    """One row per group: compare.md's results table, compare.csv and the first TeX table."""
    classes: list[str] = list(dict.fromkeys(c for g in table.groups for c in g.class_names))

    def per_class(g: GroupStats, name: str) -> float | None:
        return dict(zip(g.class_names, g.acc_per_class, strict=False)).get(name)

    return [
        Column("group", lambda g: g.label, (("group", lambda g: g.label),), tex=True),
        *(
            Column(csv=((setting_name(s), lambda g, i=i: g.values[i]),))
            for i, s in enumerate(table.names)
        ),
        Column("seeds", lambda g: seeds_text(g.seeds),
               (("n", lambda g: g.n), ("seeds", lambda g: seed_list(g.seeds)))),
        Column("test acc (%)", lambda g: f"{pm(g.acc_mean, g.acc_std, 100.0, 2)} (n={g.n})",
               (("test_acc_mean", lambda g: g.acc_mean), ("test_acc_std", lambda g: g.acc_std)),
               tex=True),
        Column(f"{LEVEL} CI (%)", lambda g: interval(g.acc_ci, ".2f"),
               (("test_acc_ci_low", lambda g: None if g.acc_ci is None else g.acc_ci[0]),
                ("test_acc_ci_high", lambda g: None if g.acc_ci is None else g.acc_ci[1])),
               tex=True),
        Column("test loss", lambda g: pm(g.loss_mean, g.loss_std, 1.0, 4),
               (("test_loss_mean", lambda g: g.loss_mean),
                ("test_loss_std", lambda g: g.loss_std))),
        Column("s/epoch",
               lambda g: "" if g.seconds_per_epoch is None else f"{g.seconds_per_epoch:.2f}",
               (("seconds_per_epoch_mean", lambda g: g.seconds_per_epoch),)),
        Column("params", lambda g: "" if g.params_total is None else f"{g.params_total:,}",
               (("params_total", lambda g: g.params_total),)),
        Column("STN params", lambda g: "" if g.params_stn is None else f"{g.params_stn:,}",
               (("params_stn", lambda g: g.params_stn),)),
        Column("notes", group_notes,
               (("diverged_seeds", lambda g: seed_list(g.diverged_seeds)),
                ("duplicate_seeds", lambda g: seed_list(r.seed for r in g.duplicates)),
                ("debug", lambda g: ";".join(g.debug)))),
        *(
            Column(csv=((f"acc_class_{c}", lambda g, c=c: per_class(g, c)),))
            for c in classes
        ),
    ]  # fmt: skip


# ---------------------------------------------------------------- differences
def poi_text(d: Difference) -> str:
    i = d.improvement
    if i is None:
        return ""
    return f"{i.p:.2f} [{i.low:.2f}, {i.high:.2f}]" + (" ▲" if i.flagged else "")


def difference_columns(rope: float) -> list[Column[Difference]]:
    """One row per compared pair: the differences in compare.md and compare.tex, and the first
    part of differences.csv. ``rope`` (accuracy units) titles the TOST column."""
    return [
        Column("varied", lambda d: ", ".join(d.differs_in),
               (("varied", lambda d: ";".join(d.differs_in)),
                ("confounded", lambda d: d.confounded),
                ("follows", lambda d: ";".join(d.follows)))),
        Column("A", lambda d: d.a.label, (("a_group", lambda d: d.a.label),), tex=True),
        Column("B", lambda d: d.b.label, (("b_group", lambda d: d.b.label),), tex=True),
        Column("other settings", lambda d: d.shared, (("shared", lambda d: d.shared),)),
        Column("n A", lambda d: str(d.a.n), (("n_a", lambda d: d.a.n),)),
        Column("n B", lambda d: str(d.b.n), (("n_b", lambda d: d.b.n),)),
        Column("B − A (pp)", lambda d: f"{100 * d.diff:+.2f}",
               (("mean_a", lambda d: d.a.acc_mean), ("mean_b", lambda d: d.b.acc_mean),
                ("diff", lambda d: d.diff)), tex=True),
        Column(f"{LEVEL} CI (pp)",
               lambda d: "" if d.test is None else interval((d.test.low, d.test.high), "+.2f"),
               (("ci_low", lambda d: _attr(d, "test", "low")),
                ("ci_high", lambda d: _attr(d, "test", "high")),
                ("df", lambda d: _attr(d, "test", "df")),
                ("t_crit", lambda d: _attr(d, "test", "t_crit"))), tex=True),
        Column("test", lambda d: _attr(d, "test", "test") or "",
               (("test", lambda d: _attr(d, "test", "test")),), tex=True),
        Column("p", lambda d: p_text(_attr(d, "test", "p")),
               (("p", lambda d: _attr(d, "test", "p")),)),
        Column("Holm p", lambda d: p_text(d.holm_p), (("p_holm", lambda d: d.holm_p),), tex=True),
        Column("Wilcoxon p", lambda d: p_text(_attr(d, "test", "wilcoxon_p")),
               (("wilcoxon_p", lambda d: _attr(d, "test", "wilcoxon_p")),)),
        Column("r", lambda d: "" if _attr(d, "test", "correlation") is None
               else f"{d.test.correlation:.2f}",
               (("correlation", lambda d: _attr(d, "test", "correlation")),
                ("confidence", lambda d: CONFIDENCE))),
        Column(f"TOST p (±{100 * rope:.2g})", lambda d: p_text(_attr(d, "tost", "p")),
               (("rope", lambda d: d.rope), ("tost_p", lambda d: _attr(d, "tost", "p")),
                ("mde", lambda d: _attr(d, "power", "mde")),
                ("seeds_needed", lambda d: _attr(d, "power", "seeds_needed")))),
        Column("P(B > A)", poi_text,
               (("p_improvement", lambda d: _attr(d, "improvement", "p")),
                ("p_improvement_low", lambda d: _attr(d, "improvement", "low")),
                ("p_improvement_high", lambda d: _attr(d, "improvement", "high"))), tex=True),
        Column("verdict", lambda d: d.verdict_text,
               (("verdict", lambda d: d.verdict), ("verdict_text", lambda d: d.verdict_text)),
               tex=True, strong=lambda d: d.verdict == BETTER),
    ]  # fmt: skip


def _seed_pair(seed_a: int | None, seed_b: int | None) -> str:
    return f"seed {seed_a}" if seed_a == seed_b else f"seeds {seed_a}/{seed_b}"


def _mcnemar_text(d: Difference) -> str:
    if d.images is None:
        return f"n/a: {d.images_missing}"
    return "; ".join(
        f"{_seed_pair(sa, sb)}: {m.a_only}/{m.b_only}, p {p_text(m.p)}"
        for sa, sb, m in d.images.mcnemar
    )


def image_columns() -> list[Column[Difference]]:
    """One row per compared pair: its per-image evidence in compare.md and compare.tex, and
    the last columns of differences.csv."""
    return [
        Column("A", lambda d: d.a.label, tex=True),
        Column("B", lambda d: d.b.label, tex=True),
        Column("images", lambda d: "" if d.images is None else str(d.images.n_images),
               (("images", lambda d: _attr(d, "images", "n_images")),), tex=True),
        Column("B − A (pp)",
               lambda d: "" if d.images is None else f"{100 * d.images.bootstrap.diff:+.2f}",
               (("multiboot_diff", lambda d: _attr(d, "images", "bootstrap", "diff")),),
               tex=True),
        Column(f"{LEVEL} CI (pp)",
               lambda d: "" if d.images is None
               else interval((d.images.bootstrap.low, d.images.bootstrap.high), "+.2f"),
               (("multiboot_low", lambda d: _attr(d, "images", "bootstrap", "low")),
                ("multiboot_high", lambda d: _attr(d, "images", "bootstrap", "high"))),
               tex=True),
        Column("McNemar (A only / B only, p)", _mcnemar_text,
               (("mcnemar_p", lambda d: None if d.images is None
                 else ";".join(raw(m.p) for _, _, m in d.images.mcnemar)),)),
    ]  # fmt: skip


def per_seed_columns(seeds: Sequence[int]) -> list[Column[Difference]]:
    """B − A per seed (pp) of the paired comparisons, one column per seed."""
    return [
        Column("A", lambda d: d.a.label),
        Column("B", lambda d: d.b.label),
        *(
            Column(f"seed {s}",
                   lambda d, s=s: f"{100 * d.per_seed[s]:+.2f}" if s in d.per_seed else "")
            for s in seeds
        ),
        Column("mean", lambda d: f"{100 * d.diff:+.2f}"),
    ]  # fmt: skip


# ---------------------------------------------------------------- across sets, and the rest
def interval_text(iv: Interval) -> str:
    return f"{100 * iv.point:.2f} [{100 * iv.low:.2f}, {100 * iv.high:.2f}]"


def set_columns(sets: SetsAnalysis) -> list[Column[ModelScores]]:
    """One row per model: its mean accuracy on each set, the mean over sets and the IQM."""
    return [
        Column("model", lambda m: m.label, tex=True),
        Column("seeds", lambda m: seeds_text(m.seeds)),
        *(
            Column(f"{name} (%)", lambda m, i=i: f"{100 * m.scores[:, i].mean():.2f}", tex=True)
            for i, name in enumerate(sets.sets)
        ),
        Column(f"mean [{LEVEL} CI]", lambda m: interval_text(m.mean), tex=True),
        Column(f"IQM [{LEVEL} CI]", lambda m: interval_text(m.iqm), tex=True),
    ]  # fmt: skip


GUARD_COLUMNS: list[Column[GuardRow]] = [
    Column("test", lambda r: r.test),
    Column("over", lambda r: r.over),
    Column("smallest possible p", lambda r: f"{r.floor:.3g}"),
    Column(f"can reach p < {1 - CONFIDENCE:.2f}", lambda r: "yes" if r.can_reject else "no",
           strong=lambda r: not r.can_reject),
]  # fmt: skip


def run_columns(kind: str) -> list[Column[tuple[RunRecord, str]]]:
    """Runs kept apart from the results (``interrupted``, ``debug``, ``failed``): the folder,
    the run's group in the table's terms, the seed, then what says why it is apart. A row is
    ``(run, group label)``."""
    head: list[Column[tuple[RunRecord, str]]] = [
        Column("run", lambda rl: f"`{display_path(rl[0].path)}`"),
        Column("group", lambda rl: rl[1]),
        Column("seed", lambda rl: "?" if rl[0].seed is None else str(rl[0].seed)),
    ]
    why: dict[str, list[Column[tuple[RunRecord, str]]]] = {
        "interrupted": [
            Column("step", lambda rl: "?" if rl[0].step is None else str(rl[0].step)),
            Column("best val acc (%)", lambda rl: "" if rl[0].best_val_acc is None
                   else f"{100 * rl[0].best_val_acc:.2f}"),
        ],
        "debug": [
            Column("debug", lambda rl: ", ".join(rl[0].debug)),
            Column("test acc (%)", lambda rl: f"{100 * rl[0].test_acc:.2f}"),
        ],
        "failed": [
            Column("status", lambda rl: rl[0].status),
            Column("reason", lambda rl: rl[0].reason),
        ],
    }  # fmt: skip
    return head + why[kind]
