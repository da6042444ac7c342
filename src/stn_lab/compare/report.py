"""Writing a comparison: ``compare.md``, ``compare.csv``, ``differences.csv``, ``compare.tex``
and ``compare.png``, each written atomically (a reader never sees half a file).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stn_lab.atomic import atomic_write
from stn_lab.compare.groups import (
    SIGNIFICANT,
    Difference,
    GroupStats,
    Table,
    describe,
    setting_name,
)
from stn_lab.compare.records import RunRecord, RunSet
from stn_lab.compare.stats import CONFIDENCE


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


def group_cells(g: GroupStats) -> dict[str, str]:
    """One group's cells of the main table, by column name."""
    return {
        "group": g.label,
        "seeds": _seeds(g.seeds),
        "test acc (%)": f"{_pm(g.acc_mean, g.acc_std, 100.0, 2)} (n={g.n})",
        f"{100 * CONFIDENCE:.0f}% CI (%)": _interval(g.acc_ci, ".2f"),
        "test loss": _pm(g.loss_mean, g.loss_std, 1.0, 4),
        "s/epoch": "" if g.seconds_per_epoch is None else f"{g.seconds_per_epoch:.2f}",
        "params": "" if g.params_total is None else f"{g.params_total:,}",
        "STN params": "" if g.params_stn is None else f"{g.params_stn:,}",
        "notes": group_notes(g),
    }


def _interval(ci: tuple[float, float] | None, fmt: str) -> str:
    return "" if ci is None else f"[{100 * ci[0]:{fmt}}, {100 * ci[1]:{fmt}}]"


def _p(p: float | None) -> str:
    if p is None:
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def results_table(table: Table) -> str:
    """The main markdown table: one row per group."""
    rows = [group_cells(g) for g in table.groups]
    return _md_table(list(rows[0]), [list(r.values()) for r in rows])


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


def difference_cells(d: Difference) -> dict[str, str]:
    """One compared pair's cells of the differences table, by column name."""
    w = d.test
    return {
        "varied": d.varied,
        "A": d.a.label,
        "B": d.b.label,
        "other settings": d.shared,
        "n A": str(d.a.n),
        "n B": str(d.b.n),
        "B − A (pp)": f"{100 * d.diff:+.2f}",
        f"{100 * CONFIDENCE:.0f}% CI (pp)": _interval(
            None if w is None else (w.low, w.high), "+.2f"
        ),
        "test": "" if w is None else w.test,
        "df": "" if w is None else f"{w.df:.1f}",
        "p": _p(None if w is None else w.p),
        "Holm p": _p(d.holm_p),
        "Wilcoxon p": _p(None if w is None else w.wilcoxon_p),
        "r": "" if w is None or w.correlation is None else f"{w.correlation:.2f}",
        "result": d.verdict,
    }


def differences_table(diffs: Sequence[Difference]) -> str:
    if not diffs:
        return "_No pair of groups differs in exactly one setting._"
    rows = [difference_cells(d) for d in diffs]
    for r in rows:
        if r["result"] == SIGNIFICANT:
            r["result"] = f"**{SIGNIFICANT}**"
    return _md_table(list(rows[0]), [list(r.values()) for r in rows])


def per_seed_table(diffs: Sequence[Difference]) -> str:
    """B − A per seed (pp) for every paired comparison, one column per seed."""
    paired = [d for d in diffs if d.per_seed]
    if not paired:
        return "_No pair of groups ran the same seeds._"
    seeds = sorted({s for d in paired for s in d.per_seed})
    rows = [
        [
            d.a.label,
            d.b.label,
            *(f"{100 * d.per_seed[s]:+.2f}" if s in d.per_seed else "" for s in seeds),
            f"{100 * d.diff:+.2f}",
        ]
        for d in paired
    ]
    return _md_table(["A", "B", *(f"seed {s}" for s in seeds), "mean"], rows)


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
        "by the settings that vary across the table. Mean ± sample std (ddof=1) over seeds (n) "
        f"and the Student-t {100 * CONFIDENCE:.0f}% confidence interval of the mean; "
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
        f"the {100 * CONFIDENCE:.0f}% confidence interval and p come from the test the row "
        "names. When both groups ran the same seeds it is the **paired t** test on the "
        "per-seed differences (a seed shares the split, data order and distortion draws on "
        "both sides), with the Wilcoxon signed-rank p and the correlation r of the pairs "
        "beside it; otherwise **Welch**'s t test (Welch–Satterthwaite df). With more than one "
        "tested pair, Holm p adjusts p across all of them; **significant** means the Holm p "
        f"(else p) is below {1 - CONFIDENCE:.2f}. The interval is not adjusted. Needs at least "
        "2 seeds per group.",
        "",
        differences_table(diffs),
        "",
        "### Per-seed differences (pp)",
        "",
        per_seed_table(diffs),
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
        "test_acc_ci_low",
        "test_acc_ci_high",
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
                _num(None if g.acc_ci is None else g.acc_ci[0]),
                _num(None if g.acc_ci is None else g.acc_ci[1]),
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
        "test",
        "p",
        "p_holm",
        "wilcoxon_p",
        "correlation",
        "confidence",
        "result",
    ]
    rows: list[list[Any]] = [head]
    for d in diffs:
        w = d.test
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
                "" if w is None else w.test,
                _num(None if w is None else w.p),
                _num(d.holm_p),
                _num(None if w is None else w.wilcoxon_p),
                _num(None if w is None else w.correlation),
                CONFIDENCE,
                d.verdict,
            ]
        )
    atomic_write(path, _csv_text(rows))


#: Columns of the two booktabs tables in compare.tex (a subset of the markdown columns).
TEX_GROUP_COLUMNS = ("group", "test acc (%)", f"{100 * CONFIDENCE:.0f}% CI (%)")
TEX_DIFFERENCE_COLUMNS = (
    "A",
    "B",
    "B − A (pp)",
    f"{100 * CONFIDENCE:.0f}% CI (pp)",
    "test",
    "p",
    "Holm p",
    "result",
)
_TEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "<": r"$<$",
}


def _tex(text: str) -> str:
    escaped = "".join(_TEX_SPECIAL.get(c, c) for c in text)
    # A minus sign before a number (not a hyphen inside a name such as ``mnist-10``).
    return re.sub(r"(?<![\w.])-(?=\d)", r"$-$", escaped)


def _tex_tabular(columns: Sequence[str], rows: Sequence[dict[str, str]]) -> list[str]:
    lines = [r"\begin{tabular}{l" + "r" * (len(columns) - 1) + "}", r"\toprule"]
    lines.append(" & ".join(_tex(c) for c in columns) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(_tex(r[c]) for c in columns) + r" \\" for r in rows]
    return [*lines, r"\bottomrule", r"\end{tabular}"]


def render_tex(table: Table, diffs: Sequence[Difference]) -> str:
    """``compare.tex``: the results (and differences) as booktabs tables for a paper."""
    level = f"{100 * CONFIDENCE:.0f}"
    lines = [
        r"% Written by python -m stn_lab.compare. Needs \usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{Test accuracy (\%): mean $\pm$ sample std over seeds ($n$) and the "
        + level
        + r"\% confidence interval of the mean.}",
        *_tex_tabular(TEX_GROUP_COLUMNS, [group_cells(g) for g in table.groups]),
        r"\end{table}",
    ]
    if diffs:
        lines += [
            "",
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{Differences in mean test accuracy (B $-$ A, percentage points): "
            + level
            + r"\% interval and p of a paired t test over shared seeds, else Welch's t test; "
            r"Holm p adjusts across the tested pairs.}",
            *_tex_tabular(TEX_DIFFERENCE_COLUMNS, [difference_cells(d) for d in diffs]),
            r"\end{table}",
        ]
    return "\n".join(lines) + "\n"


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
