"""``compare.tex``: the results, the differences with their verdicts, the per-image evidence
and the results across distortion sets as booktabs tables for a paper, each with the variance
manifest under it. The columns are :mod:`.columns`' (those marked for TeX)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from stn_lab.compare.columns import (
    Column,
    difference_columns,
    group_columns,
    image_columns,
    set_columns,
    shown,
)
from stn_lab.compare.groups import Difference, Table
from stn_lab.compare.notes import POI_NOTE, manifest_text
from stn_lab.compare.sets import SetsAnalysis
from stn_lab.compare.stats import CONFIDENCE, POWER

#: Characters that LaTeX reads as commands, or that its default (OT1) font encoding prints as
#: other glyphs (``<`` and ``>`` come out as ¡ and ¿), and the text that prints them.
_TEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "<": r"$<$",
    ">": r"$>$",
    "δ": r"$\delta$",
    "▲": r"$\star$",
    "⚠": "(!)",
    "`": "",
}


def tex_escape(text: str) -> str:
    """``text`` as LaTeX prints it literally."""
    escaped = "".join(_TEX_SPECIAL.get(c, c) for c in text)
    # A minus sign before a number (not a hyphen inside a name such as ``mnist-10``).
    return re.sub(r"(?<![\w.])-(?=\d)", r"$-$", escaped)


def tex_tabular(columns: Sequence[Column], rows: Sequence[Any]) -> list[str]:
    """A booktabs tabular of ``rows`` with the columns marked for TeX."""
    columns = shown(columns, tex=True)
    lines = [r"\begin{tabular}{l" + "r" * (len(columns) - 1) + "}", r"\toprule"]
    lines.append(" & ".join(tex_escape(c.title) for c in columns) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(tex_escape(c.cell(r)) for c in columns) + r" \\" for r in rows]
    return [*lines, r"\bottomrule", r"\end{tabular}"]


def tex_table(caption: str, columns: Sequence[Column], rows: Sequence[Any], note: str) -> list[str]:
    """One booktabs table float with its caption and, under it, the variance manifest."""
    return [
        "",
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + caption + "}",
        *tex_tabular(columns, rows),
        r"\par\smallskip\footnotesize " + tex_escape(note),
        r"\end{table}",
    ]


def render_tex(table: Table, diffs: Sequence[Difference], sets: SetsAnalysis | None = None) -> str:
    """The whole ``compare.tex``."""
    level = f"{100 * CONFIDENCE:.0f}"
    note = manifest_text(table)
    lines = [
        r"% Written by python -m stn_lab.compare. Needs \usepackage{booktabs}.",
        *tex_table(
            r"Test accuracy (\%): mean $\pm$ sample std over seeds ($n$) and the "
            + level + r"\% confidence interval of the mean.",
            group_columns(table), table.groups, note,
        ),
    ]  # fmt: skip
    if diffs:
        rope = f"{100 * diffs[0].rope:.2g}"
        lines += tex_table(
            r"Differences in mean test accuracy (B $-$ A, percentage points): " + level
            + r"\% interval of a paired t test over shared seeds, else Welch's t test; Holm p "
            r"adjusts across the tested pairs. Verdict: better (interval excludes 0 and Holm "
            r"p $<$ " + f"{1 - CONFIDENCE:.2f}" + r"), equivalent within $\pm$" + rope
            + r" (TOST), else inconclusive, with the difference detectable at "
            + f"{100 * POWER:.0f}" + r"\% power and the seeds needed; confounded (no verdict) "
            r"when the groups differ in more than one setting. " + tex_escape(POI_NOTE),
            difference_columns(diffs[0].rope), diffs, note,
        )  # fmt: skip
        with_images = [d for d in diffs if d.images is not None]
        if with_images:
            lines += tex_table(
                r"Per-image evidence: B $-$ A (percentage points) with the " + level
                + r"\% interval of a bootstrap over seeds $\times$ test images.",
                image_columns(), with_images, note,
            )  # fmt: skip
    if sets is not None and sets.models:
        lines += tex_table(
            "Test accuracy (\\%) on each distortion set (mean over seeds), its mean over sets "
            "and its interquartile mean over all seed $\\times$ set scores, with " + level
            + "\\% stratified-bootstrap intervals.",
            set_columns(sets), sets.models, note,
        )  # fmt: skip
    return "\n".join(lines) + "\n"
