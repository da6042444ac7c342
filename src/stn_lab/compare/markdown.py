"""``compare.md``: the whole comparison as one markdown document, which ``compare`` also prints.

The tables come from :mod:`.columns`; this module lays them out with the text that explains
them, in the order a reader needs: results, per-class accuracy, differences (with per-seed and
per-image evidence), the design guard, results across distortion sets, notes, and the runs
kept apart from the results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stn_lab.compare.columns import (
    GUARD_COLUMNS,
    Column,
    difference_columns,
    display_path,
    group_columns,
    image_columns,
    p_text,
    per_seed_columns,
    run_columns,
    set_columns,
    shown,
)
from stn_lab.compare.contrast import conjunction
from stn_lab.compare.groups import Difference, GroupStats, Table, describe
from stn_lab.compare.notes import POI_NOTE, manifest_text
from stn_lab.compare.records import RunRecord, RunSet
from stn_lab.compare.sets import GuardRow, SetsAnalysis, design_guard
from stn_lab.compare.stats import CONFIDENCE, POWER


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(columns: Sequence[Column], rows: Iterable[Any]) -> str:
    """A markdown table of ``rows`` with the columns that have a title."""
    columns = shown(columns)
    lines = ["| " + " | ".join(_md(c.title) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            text = c.cell(row)
            cells.append(f"**{text}**" if text and c.strong and c.strong(row) else text)
        lines.append("| " + " | ".join(_md(cell) for cell in cells) + " |")
    return "\n".join(lines)


def per_class_table(table: Table) -> str:
    """Mean per-class test accuracy (%), one table per distinct set of class names."""
    by_names: dict[tuple[str, ...], list[GroupStats]] = {}
    for g in table.groups:
        if g.acc_per_class:
            by_names.setdefault(tuple(g.class_names), []).append(g)
    blocks = [
        md_table(
            [
                Column("group", lambda g: g.label),
                *(
                    Column(name, lambda g, i=i: f"{100 * g.acc_per_class[i]:.1f}")
                    for i, name in enumerate(names)
                ),
            ],
            groups,
        )
        for names, groups in by_names.items()
    ]
    return "\n\n".join(blocks) if blocks else "_No per-class accuracies recorded._"


def differences_table(diffs: Sequence[Difference]) -> str:
    if not diffs:
        return "_No pair of groups differs in exactly one setting._"
    return md_table(difference_columns(diffs[0].rope), diffs)


def unnamed_differences(diffs: Sequence[Difference]) -> list[str]:
    """Settings that confound a compared pair although its labels do not name them (they
    vary together with the named one in this table)."""
    return list(dict.fromkeys(s for d in diffs if d.confounded for s in d.causes if s != d.varied))


def per_seed_table(diffs: Sequence[Difference]) -> str:
    """B − A per seed (pp) for every paired comparison, one column per seed."""
    paired = [d for d in diffs if d.per_seed]
    if not paired:
        return "_No pair of groups ran the same seeds._"
    seeds = sorted({s for d in paired for s in d.per_seed})
    return md_table(per_seed_columns(seeds), paired)


def images_table(diffs: Sequence[Difference]) -> str:
    return md_table(image_columns(), diffs) if diffs else "_No pairs._"


def sets_section(sets: SetsAnalysis, note: str) -> list[str]:
    """The "Across distortion sets" section: aggregates, design guard, ranks or a refusal;
    ``note`` is the variance manifest that closes each table."""
    level = f"{100 * CONFIDENCE:.0f}%"
    parts = [
        f"## Across distortion sets ({sets.setting})",
        "",
        "Each model's test accuracy (%) on each set (mean over seeds), its mean over sets and "
        "its interquartile mean (IQM) over all seed x set scores, each with a "
        f"{level} stratified-bootstrap interval (seeds resampled within each set, as rliable). "
        "`profile.png` draws the performance profiles: the share of runs above each accuracy.",
        "",
        md_table(set_columns(sets), sets.models) if sets.models else "_No model ran every set._",
        "",
        *([f"Left out: {'; '.join(sets.left_out)}.", ""] if sets.left_out else []),
        note,
        "",
    ]
    if sets.ranks is None:
        parts += [f"No critical-difference diagram: {sets.refusal.split(': ', 1)[-1]}.", ""]
    else:
        r = sets.ranks
        ranks = sorted(r.mean_ranks.items(), key=lambda kv: kv[1])
        parts += [
            f"### Ranks across sets (Friedman p {p_text(r.friedman_p)}, Nemenyi CD {r.cd:.2f})",
            "",
            "Models ranked within each set (1 = best), averaged over sets; two models whose mean "
            "ranks differ by less than the critical difference (CD) are not told apart "
            "(`cd.png`).",
            "",
            md_table([Column("model", lambda kv: kv[0]),
                      Column("mean rank", lambda kv: f"{kv[1]:.2f}")], ranks),
            "",
            md_table([Column("model", lambda t: t[0]), Column("model", lambda t: t[1]),
                      Column("Wilcoxon p (over sets)", lambda t: p_text(t[2])),
                      Column("Holm p", lambda t: p_text(t[3]))], r.pairwise),
            "",
            note,
            "",
        ]  # fmt: skip
    return parts


def notes_list(table: Table) -> str:
    """Duplicate seeds (counted once) and diverged runs, one bullet per run."""
    lines = []
    for g in table.groups:
        for dup in g.duplicates:
            kept = next(r for r in g.runs if r.seed == dup.seed)
            lines.append(
                f"- Duplicate: seed {dup.seed} of `{g.label}` ran more than once; counted once "
                f"(kept `{display_path(kept.path)}`, {100 * kept.test_acc:.2f}%; left out "
                f"`{display_path(dup.path)}`, {100 * dup.test_acc:.2f}%)."
            )
        for run in g.runs:
            if run.diverged:
                lines.append(
                    f"- Diverged: seed {run.seed} of `{g.label}` (`{display_path(run.path)}`): "
                    "the loss exploded but stayed finite; its accuracy is pooled, check it."
                )
    return "\n".join(lines) if lines else "None."


def runs_table(runs: Sequence[RunRecord], table: Table, kind: str) -> str:
    """Runs kept apart from the results (``interrupted``, ``debug`` or ``failed``)."""
    if not runs:
        return "None."
    return md_table(run_columns(kind), [(r, describe(r, table)) for r in runs])


def guard_rows(diffs: Sequence[Difference], sets: SetsAnalysis | None) -> list[GuardRow]:
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
    sections: Sequence[str] = (),
) -> str:
    """The whole ``compare.md`` document. With ``include_debug`` the debug runs are in
    ``table`` (their groups marked ``[debug]``); else they are listed apart. ``sections`` are
    further lines placed before the Notes (the sequential decisions)."""
    n_runs = sum(g.n for g in table.groups)
    where = ", ".join(f"`{d}`" for d in dirs)
    debug_note = ""
    if found.debug and not include_debug:
        debug_note = (
            f" {len(found.debug)} debug runs listed apart, not compared (`--include-debug` "
            "compares them, marked [debug])."
        )
    fixed = " ".join(f"{k}={v}" for k, v in table.fixed.items())
    note = f"_{manifest_text(table)}_"  # closes every table
    guard = guard_rows(diffs, sets)
    unnamed = unnamed_differences(diffs)
    level = f"{100 * CONFIDENCE:.0f}%"
    parts = [
        "# Run comparison",
        "",
        f"{n_runs} completed runs in {len(table.groups)} groups"
        + (f" from {where}" if where else "")
        + f"; {len(found.interrupted)} interrupted; {len(found.failed)} failed or unfinished."
        + debug_note
        + " Runs are grouped by their whole resolved config except the seed and the settings "
        "that cannot change a result; a group is named by the settings that vary across the "
        "table. Mean ± sample std (ddof=1) over seeds (n) and the Student-t "
        f"{level} confidence interval of the mean, cut to 0–100 (accuracy cannot leave it; "
        "the cut keeps the interval's coverage); accuracy in %.",
        "",
        *([f"Shared by all groups: {fixed}.", ""] if fixed else []),
        "## Results",
        "",
        md_table(group_columns(table), table.groups) if table.groups else "_No completed runs._",
        "",
        *(
            [
                f"⚠ Also differing between compared groups, though no label names it (it "
                f"varies together with a named setting): {conjunction(unnamed)}.",
                "",
            ]
            if unnamed
            else []
        ),
        note,
        "",
        "## Per-class test accuracy (%)",
        "",
        per_class_table(table),
        "",
        *([note, ""] if any(g.acc_per_class for g in table.groups) else []),
        "## Differences",
        "",
        "Pairs of groups whose labels differ in exactly one setting (`n/a` matches anything "
        "when the model differs); the varied column names every setting in which the two "
        "groups differ, and a choice (such as `optimizer`) stands for the values it sets. B − A "
        "is the difference in mean test accuracy in percentage points; the "
        f"{level} confidence interval and p come from the test the row names. When both groups "
        "ran the same seeds it is the **paired t** test on the per-seed differences (a seed "
        "shares the split, data order and distortion draws on both sides), with the Wilcoxon "
        "signed-rank p and the correlation r of the pairs beside it; otherwise **Welch**'s t "
        "test (Welch–Satterthwaite df). With more than one tested pair that is not confounded, "
        "Holm p adjusts p across them. The interval is not adjusted.",
        "",
        "The verdict is one of three. **better**: the interval excludes 0 and the Holm p "
        f"(else p) is below {1 - CONFIDENCE:.2f}. **equivalent within ±δ**: the two one-sided "
        f"tests (TOST, same pairing) put B − A inside ±δ at {1 - CONFIDENCE:.2f} (δ is "
        "`--rope`, in accuracy points). **inconclusive**: neither; it gives the smallest "
        f"difference this design detects with {100 * POWER:.0f}% power (at this n and spread) "
        "and the seeds per group needed to detect δ. Needs at least 2 seeds per group. "
        "A pair that differs in more than one setting is **confounded**: its difference cannot "
        "be given to any one of them, so it gets no verdict and stays out of Holm's family. "
        + POI_NOTE,
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
        f"its {level} interval come from a bootstrap over seeds x test images "
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
                md_table(GUARD_COLUMNS, guard),
                "",
            ]
            if guard
            else []
        ),
        *(sets_section(sets, note) if sets is not None else []),
        *sections,
        "## Notes",
        "",
        notes_list(table),
        "",
        "## Interrupted runs",
        "",
        "Stopped by a signal (SIGTERM, SIGINT); `ckpt_path=last` resumes them. Never pooled.",
        "",
        runs_table(found.interrupted, table, "interrupted"),
        "",
    ]
    if found.debug and not include_debug:
        parts += [
            "## Debug runs",
            "",
            "Runs with debug flags (fast_dev_run, limit_*_batches, overfit_batches): checks, "
            "not results, never pooled with them. `--include-debug` compares them in groups "
            "of their own, marked [debug].",
            "",
            runs_table(found.debug, table, "debug"),
            "",
        ]
    parts += [
        "## Failed or unfinished runs",
        "",
        runs_table(found.failed, table, "failed"),
        "",
    ]
    return "\n".join(parts)
