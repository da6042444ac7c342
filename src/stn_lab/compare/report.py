"""Writing a comparison into ``--out``: ``compare.md`` (:mod:`.markdown`), ``compare.csv`` and
``differences.csv`` (the CSV columns of :mod:`.columns`), ``compare.tex`` (:mod:`.tex`) and
the pictures (:mod:`.plots`; ``decisions.png`` from :mod:`.decisions` when sequential sweeps
were found). Every file is written atomically: a reader never sees half a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stn_lab.atomic import atomic_csv, atomic_write
from stn_lab.compare.columns import (
    csv_header,
    csv_row,
    difference_columns,
    group_columns,
    image_columns,
)
from stn_lab.compare.decisions import DECISIONS_PNG, Decisions, decisions_section, write_decisions
from stn_lab.compare.groups import DEFAULT_ROPE, Difference, Table
from stn_lab.compare.markdown import render_markdown
from stn_lab.compare.plots import write_cd, write_comparison, write_disagreements, write_profile
from stn_lab.compare.records import RunSet
from stn_lab.compare.sets import SetsAnalysis
from stn_lab.compare.tex import render_tex

#: The files :func:`write_report` always writes; ``profile.png``, ``cd.png`` and
#: ``disagreements.png`` follow when the runs allow them.
OUTPUTS = ("compare.md", "compare.csv", "differences.csv", "compare.tex", "compare.png")


def write_csv(path: Path, table: Table) -> None:
    """``compare.csv``: one row per group; accuracies as fractions (0-1), blank if undefined."""
    columns = group_columns(table)
    atomic_csv(path, csv_header(columns), [csv_row(columns, g) for g in table.groups])


def write_differences_csv(path: Path, diffs: Sequence[Difference]) -> None:
    """``differences.csv``: one row per compared pair, its test and then its per-image
    evidence; numbers as fractions (0-1)."""
    rope = diffs[0].rope if diffs else DEFAULT_ROPE / 100
    columns = [*difference_columns(rope), *image_columns()]
    atomic_csv(path, csv_header(columns), [csv_row(columns, d) for d in diffs])


def write_report(
    out: Path,
    table: Table,
    diffs: Sequence[Difference],
    found: RunSet,
    dirs: Sequence[str],
    include_debug: bool,
    sets: SetsAnalysis | None,
    decisions: Decisions | None = None,
) -> tuple[str, list[Path], list[str]]:
    """Write every output into ``out``: ``(compare.md's text, the files written, one line for
    each picture that could not be drawn)``. ``decisions`` (the sequential sweeps found) add
    their section to compare.md and, when any could be read, ``decisions.png``."""
    decisions = Decisions() if decisions is None else decisions
    sections = decisions_section(decisions) if decisions else []
    text = render_markdown(table, diffs, found, dirs, include_debug, sets, sections)
    atomic_write(out / "compare.md", text)
    write_csv(out / "compare.csv", table)
    write_differences_csv(out / "differences.csv", diffs)
    atomic_write(out / "compare.tex", render_tex(table, diffs, sets))
    write_comparison(out / "compare.png", table)
    written = [out / f for f in OUTPUTS]
    skipped: list[str] = []
    if sets is not None and sets.models:
        write_profile(out / "profile.png", sets)
        written.append(out / "profile.png")
        if sets.ranks is not None:
            write_cd(out / "cd.png", sets)
            written.append(out / "cd.png")
        else:
            skipped.append(sets.refusal)
    if decisions.sweeps:
        write_decisions(out / DECISIONS_PNG, decisions.sweeps)
        written.append(out / DECISIONS_PNG)
    names = next((list(g.class_names) for g in table.groups if g.class_names), [])
    why = write_disagreements(out / "disagreements.png", diffs, names)
    if why:
        skipped.append(f"no disagreements.png: {why}")
    else:
        written.append(out / "disagreements.png")
    return text, written, skipped
