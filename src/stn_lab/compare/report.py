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
    BETTER,
    Difference,
    GroupStats,
    Table,
    describe,
    setting_name,
)
from stn_lab.compare.records import RunRecord, RunSet
from stn_lab.compare.sets import GuardRow, SetsAnalysis, design_guard
from stn_lab.compare.stats import CONFIDENCE, POI_THRESHOLD, POWER


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


def _poi(d: Difference) -> str:
    i = d.improvement
    if i is None:
        return ""
    return f"{i.p:.2f} [{i.low:.2f}, {i.high:.2f}]" + (" ▲" if i.flagged else "")


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
        "p": _p(None if w is None else w.p),
        "Holm p": _p(d.holm_p),
        "Wilcoxon p": _p(None if w is None else w.wilcoxon_p),
        "r": "" if w is None or w.correlation is None else f"{w.correlation:.2f}",
        f"TOST p (±{100 * d.rope:.2g})": _p(None if d.tost is None else d.tost.p),
        "P(B > A)": _poi(d),
        "verdict": d.verdict_text,
    }


def differences_table(diffs: Sequence[Difference]) -> str:
    if not diffs:
        return "_No pair of groups differs in exactly one setting._"
    rows = [difference_cells(d) for d in diffs]
    for r, d in zip(rows, diffs, strict=True):
        if d.verdict == BETTER:
            r["verdict"] = f"**{r['verdict']}**"
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


def _seed_pair(seed_a: int | None, seed_b: int | None) -> str:
    return f"seed {seed_a}" if seed_a == seed_b else f"seeds {seed_a}/{seed_b}"


def image_cells(d: Difference) -> dict[str, str]:
    """One pair's per-image evidence: the multibootstrap and McNemar for each seed pair."""
    e = d.images
    if e is None:
        return {"A": d.a.label, "B": d.b.label, "images": "", "B − A (pp)": "",
                f"{100 * CONFIDENCE:.0f}% CI (pp)": "", "McNemar (A only / B only, p)":
                f"n/a: {d.images_missing}"}  # fmt: skip
    tests = "; ".join(
        f"{_seed_pair(sa, sb)}: {m.a_only}/{m.b_only}, p {_p(m.p)}" for sa, sb, m in e.mcnemar
    )
    boot = e.bootstrap
    return {
        "A": d.a.label,
        "B": d.b.label,
        "images": str(e.n_images),
        "B − A (pp)": f"{100 * boot.diff:+.2f}",
        f"{100 * CONFIDENCE:.0f}% CI (pp)": _interval((boot.low, boot.high), "+.2f"),
        "McNemar (A only / B only, p)": tests,
    }


def images_table(diffs: Sequence[Difference]) -> str:
    if not diffs:
        return "_No pairs._"
    rows = [image_cells(d) for d in diffs]
    return _md_table(list(rows[0]), [list(r.values()) for r in rows])


def manifest(table: Table) -> str:
    """:func:`manifest_text` in italics, for under a markdown table."""
    return f"_{manifest_text(table)}_"


def _which(groups: Sequence[GroupStats], table: Table) -> str:
    """The groups ``groups`` in the fewest words: one ``setting=value`` that picks exactly
    them (``model=cnn``), else their labels."""
    chosen = {id(g) for g in groups}
    for i, setting in enumerate(table.names):
        for value in dict.fromkeys(g.values[i] for g in groups):
            if {id(g) for g in table.groups if g.values[i] == value} == chosen:
                return f"`{setting_name(setting)}={value}`"
    return ", ".join(f"`{g.label}`" for g in groups)


def manifest_text(table: Table) -> str:
    """What the seed randomises and what is fixed, from the runs' own records; items that only
    some groups record are marked with those groups, and a disagreement is said out loud."""
    runs = [(g, r) for g in table.groups for r in g.runs]
    recorded = [(g, r) for g, r in runs if r.variance is not None]
    if not runs:
        return "Variance: no completed runs to describe."
    if not recorded:
        return "Variance: these runs recorded no variance manifest (older metrics.json)."
    n_groups = len({id(g) for g, _ in recorded})
    parts = []
    disagree = False
    for key, title in (
        ("randomised_by_seed", "each seed randomises"),
        ("fixed_across_seeds", "fixed across seeds"),
    ):
        items: dict[str, dict[int, GroupStats]] = {}
        for g, r in recorded:
            for item in r.variance.get(key, ()):
                items.setdefault(item, {})[id(g)] = g
        cells = []
        for item, owners in items.items():
            if len(owners) == n_groups:
                cells.append(item)
            else:
                disagree = True
                cells.append(f"{item} (only {_which(list(owners.values()), table)})")
        parts.append(f"{title}: {', '.join(cells) or 'nothing'}")
    text = "Variance: " + "; ".join(parts) + "."
    if disagree:
        text += " ⚠ The runs' manifests disagree: what one seed changes differs between groups."
    missing = len(runs) - len(recorded)
    if missing:
        text += f" {missing} run(s) recorded no manifest."
    return text


POI_NOTE = (
    f"P(B > A) is the chance that a seed of B beats a seed of A (Mann-Whitney U / mn over all "
    f"seed pairs, ties half) with a {100 * CONFIDENCE:.0f}% bootstrap interval; ▲ marks it "
    f"above {POI_THRESHOLD}, the threshold recommended for claiming an improvement, which is "
    "significant only when the interval's lower end is above 0.5."
)


def guard_table(rows: Sequence[GuardRow]) -> str:
    cells = [[r.test, r.over, f"{r.floor:.3g}", "yes" if r.can_reject else "**no**"] for r in rows]
    return _md_table(["test", "over", "smallest possible p", f"can reach p < {1 - CONFIDENCE:.2f}"],
                     cells)  # fmt: skip


def _iv(iv: Any) -> str:
    return f"{100 * iv.point:.2f} [{100 * iv.low:.2f}, {100 * iv.high:.2f}]"


def set_score_cells(m) -> list[str]:
    """One model's mean accuracy on each set, its mean over sets and its IQM, with intervals
    (shared by the markdown and TeX tables)."""
    return [*(f"{100 * v:.2f}" for v in m.scores.mean(axis=0)), _iv(m.mean), _iv(m.iqm)]


def sets_section(sets: SetsAnalysis, note: str) -> list[str]:
    """The "Across distortion sets" section: aggregates, design guard, ranks or a refusal;
    ``note`` is the variance manifest that closes each table."""
    level = f"{100 * CONFIDENCE:.0f}%"
    head = ["model", "seeds", *(f"{v} (%)" for v in sets.sets), f"mean [{level} CI]",
            f"IQM [{level} CI]"]  # fmt: skip
    rows = [[m.label, _seeds(m.seeds), *set_score_cells(m)] for m in sets.models]
    parts = [
        f"## Across distortion sets ({sets.setting})",
        "",
        "Each model's test accuracy (%) on each set (mean over seeds), its mean over sets and "
        "its interquartile mean (IQM) over all seed x set scores, each with a "
        f"{level} stratified-bootstrap interval (seeds resampled within each set, as rliable). "
        "`profile.png` draws the performance profiles: the share of runs above each accuracy.",
        "",
        _md_table(head, rows) if rows else "_No model ran every set._",
        "",
        *([f"Left out: {'; '.join(sets.left_out)}.", ""] if sets.left_out else []),
        note,
        "",
    ]
    if sets.ranks is None:
        parts += [f"No critical-difference diagram: {sets.refusal.split(': ', 1)[-1]}.", ""]
    else:
        r = sets.ranks
        rank_rows = [[name, f"{rank:.2f}"] for name, rank in
                     sorted(r.mean_ranks.items(), key=lambda kv: kv[1])]  # fmt: skip
        pair_rows = [[a, b, _p(p), _p(q)] for a, b, p, q in r.pairwise]
        parts += [
            f"### Ranks across sets (Friedman p {_p(r.friedman_p)}, Nemenyi CD {r.cd:.2f})",
            "",
            "Models ranked within each set (1 = best), averaged over sets; two models whose mean "
            "ranks differ by less than the critical difference (CD) are not told apart "
            "(`cd.png`).",
            "",
            _md_table(["model", "mean rank"], rank_rows),
            "",
            _md_table(["model", "model", "Wilcoxon p (over sets)", "Holm p"], pair_rows),
            "",
            note,
            "",
        ]
    return parts


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


def _guard_rows(diffs: Sequence[Difference], sets: SetsAnalysis | None) -> list[GuardRow]:
    if sets is not None and sets.guard:
        return sets.guard
    tested = [min(d.a.n, d.b.n) for d in diffs if d.test is not None]
    return design_guard(min(tested), 0, 0) if tested else []


def render_markdown(
    table: Table,
    diffs: Sequence[Difference],
    found: RunSet,
    dirs: Sequence[str] = (),
    include_debug: bool = False,
    sets: SetsAnalysis | None = None,
) -> str:
    """The whole ``compare.md`` document."""
    n_runs = sum(g.n for g in table.groups)
    where = ", ".join(f"`{d}`" for d in dirs)
    debug_note = ""
    if found.debug and not include_debug:
        debug_note = f" {len(found.debug)} debug runs left out (`--include-debug` lists them)."
    fixed = " ".join(f"{k}={v}" for k, v in table.fixed.items())
    note = manifest(table)  # closes every table
    guard = _guard_rows(diffs, sets)
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
        note,
        "",
        "## Per-class test accuracy (%)",
        "",
        per_class_table(table),
        "",
        *([note, ""] if any(g.acc_per_class for g in table.groups) else []),
        "## Differences",
        "",
        "Pairs of groups that differ in exactly one setting (`n/a` matches anything when the "
        "model differs). B − A is the difference in mean test accuracy in percentage points; "
        f"the {100 * CONFIDENCE:.0f}% confidence interval and p come from the test the row "
        "names. When both groups ran the same seeds it is the **paired t** test on the "
        "per-seed differences (a seed shares the split, data order and distortion draws on "
        "both sides), with the Wilcoxon signed-rank p and the correlation r of the pairs "
        "beside it; otherwise **Welch**'s t test (Welch–Satterthwaite df). With more than one "
        "tested pair, Holm p adjusts p across all of them. The interval is not adjusted.",
        "",
        "The verdict is one of three. **better**: the interval excludes 0 and the Holm p "
        f"(else p) is below {1 - CONFIDENCE:.2f}. **equivalent within ±δ**: the two one-sided "
        f"tests (TOST, same pairing) put B − A inside ±δ at {1 - CONFIDENCE:.2f} (δ is "
        "`--rope`, in accuracy points). **inconclusive**: neither; it gives the smallest "
        f"difference this design detects with {100 * POWER:.0f}% power (at this n and spread) "
        "and the seeds per group needed to detect δ. Needs at least 2 seeds per group. " + POI_NOTE,
        "",
        differences_table(diffs),
        "",
        note,
        "",
        "### Per-seed differences (pp)",
        "",
        per_seed_table(diffs),
        "",
        note,
        "",
        "### Per-image evidence",
        "",
        "From each run's `predictions.npy`: every run scores the same test images. B − A and "
        f"its {100 * CONFIDENCE:.0f}% interval come from a bootstrap over seeds x test images "
        "(the multibootstrap: each replicate redraws the images, shared by both groups, and "
        "the seeds, shared when paired), so the interval holds both the seed's and the test "
        "set's variation. McNemar's exact test compares each seed pair on the images where "
        "exactly one of the two is right (counts: A right only / B right only). With few "
        "seeds the bootstrap cannot see the seed-to-seed spread (2 seeds give 3 distinct "
        "resamples), so its interval is too narrow; the verdict rests on the seed-level test.",
        "",
        images_table(diffs),
        "",
        note,
        "",
        *(
            [
                "### Design guard",
                "",
                "The smallest p each test can reach with this many seeds (and sets): a test whose "
                f"floor is above {1 - CONFIDENCE:.2f} can never reject, whatever the results.",
                "",
                guard_table(guard),
                "",
            ]
            if guard
            else []
        ),
        *(sets_section(sets, note) if sets is not None else []),
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
        "varied", "a_group", "b_group", "shared", "n_a", "n_b", "mean_a", "mean_b", "diff",
        "ci_low", "ci_high", "df", "t_crit", "test", "p", "p_holm", "wilcoxon_p", "correlation",
        "confidence", "rope", "tost_p", "mde", "seeds_needed", "p_improvement",
        "p_improvement_low", "p_improvement_high", "images", "multiboot_diff", "multiboot_low",
        "multiboot_high", "mcnemar_p", "verdict", "verdict_text",
    ]  # fmt: skip
    rows: list[list[Any]] = [head]
    for d in diffs:
        w, i, e = d.test, d.improvement, d.images
        boot = None if e is None else e.bootstrap
        rows.append(
            [
                d.varied, d.a.label, d.b.label, d.shared, d.a.n, d.b.n,
                _num(d.a.acc_mean), _num(d.b.acc_mean), _num(d.diff),
                _num(None if w is None else w.low), _num(None if w is None else w.high),
                _num(None if w is None else w.df), _num(None if w is None else w.t_crit),
                "" if w is None else w.test, _num(None if w is None else w.p), _num(d.holm_p),
                _num(None if w is None else w.wilcoxon_p),
                _num(None if w is None else w.correlation), CONFIDENCE, _num(d.rope),
                _num(None if d.tost is None else d.tost.p),
                _num(None if d.power is None else d.power.mde),
                _num(None if d.power is None else d.power.seeds_needed),
                _num(None if i is None else i.p), _num(None if i is None else i.low),
                _num(None if i is None else i.high), _num(None if e is None else e.n_images),
                _num(None if boot is None else boot.diff), _num(None if boot is None else boot.low),
                _num(None if boot is None else boot.high),
                "" if e is None else ";".join(_num(m.p) for _, _, m in e.mcnemar),
                d.verdict, d.verdict_text,
            ]
        )  # fmt: skip
    atomic_write(path, _csv_text(rows))


#: Columns of the booktabs tables in compare.tex (a subset of the markdown columns).
TEX_GROUP_COLUMNS = ("group", "test acc (%)", f"{100 * CONFIDENCE:.0f}% CI (%)")
TEX_DIFFERENCE_COLUMNS = (
    "A", "B", "B − A (pp)", f"{100 * CONFIDENCE:.0f}% CI (pp)", "test", "Holm p", "P(B > A)",
    "verdict",
)  # fmt: skip
TEX_IMAGE_COLUMNS = ("A", "B", "images", "B − A (pp)", f"{100 * CONFIDENCE:.0f}% CI (pp)")
_TEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "<": r"$<$",
    "δ": r"$\delta$",
    "▲": r"$\star$",
    "⚠": "(!)",
    "`": "",
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


def _tex_table(caption: str, columns: Sequence[str], rows: Sequence[dict[str, str]],
               note: str) -> list[str]:  # fmt: skip
    """One booktabs table float with its caption and, under it, the variance manifest."""
    return [
        "",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + caption + "}",
        *_tex_tabular(columns, rows),
        r"\par\smallskip\footnotesize " + _tex(note),
        r"\end{table}",
    ]


def render_tex(table: Table, diffs: Sequence[Difference], sets: SetsAnalysis | None = None) -> str:
    """``compare.tex``: the results, the differences with their verdicts, the per-image evidence
    and the results across distortion sets as booktabs tables for a paper, each with the
    variance manifest under it."""
    level = f"{100 * CONFIDENCE:.0f}"
    note = manifest_text(table)
    lines = [
        r"% Written by python -m stn_lab.compare. Needs \usepackage{booktabs}.",
        *_tex_table(
            r"Test accuracy (\%): mean $\pm$ sample std over seeds ($n$) and the "
            + level + r"\% confidence interval of the mean.",
            TEX_GROUP_COLUMNS, [group_cells(g) for g in table.groups], note,
        ),
    ]  # fmt: skip
    if diffs:
        rope = f"{100 * diffs[0].rope:.2g}"
        lines += _tex_table(
            r"Differences in mean test accuracy (B $-$ A, percentage points): " + level
            + r"\% interval of a paired t test over shared seeds, else Welch's t test; Holm p "
            r"adjusts across the tested pairs. Verdict: better (interval excludes 0 and Holm "
            r"p $<$ 0.05), equivalent within $\pm$" + rope + r" (TOST), else inconclusive, "
            r"with the difference detectable at 80\% power and the seeds needed. "
            + _tex(POI_NOTE),
            TEX_DIFFERENCE_COLUMNS, [difference_cells(d) for d in diffs], note,
        )  # fmt: skip
        with_images = [image_cells(d) for d in diffs if d.images is not None]
        if with_images:
            lines += _tex_table(
                r"Per-image evidence: B $-$ A (percentage points) with the " + level
                + r"\% interval of a bootstrap over seeds $\times$ test images.",
                TEX_IMAGE_COLUMNS, with_images, note,
            )  # fmt: skip
    if sets is not None and sets.models:
        columns = ["model", *(f"{v} (%)" for v in sets.sets), "mean", "IQM"]
        rows = [
            dict(zip(columns, [m.label, *set_score_cells(m)], strict=True)) for m in sets.models
        ]
        lines += _tex_table(
            "Test accuracy (\\%) on each distortion set (mean over seeds), its mean over sets "
            "and its interquartile mean over all seed $\\times$ set scores, with " + level
            + "\\% stratified-bootstrap intervals.",
            columns, rows, note,
        )  # fmt: skip
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
