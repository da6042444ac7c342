"""The sentences that go with the tables in both compare.md and compare.tex: the variance
manifest under every table (what each seed randomised, what all runs shared) and the note on
P(B > A)."""

from __future__ import annotations

from collections.abc import Sequence

from stn_lab.compare.groups import GroupStats, Table, setting_name
from stn_lab.compare.stats import CONFIDENCE, POI_THRESHOLD

POI_NOTE = (
    f"P(B > A) is the chance that a seed of B beats a seed of A (Mann-Whitney U / mn over all "
    f"seed pairs, ties half) with a {100 * CONFIDENCE:.0f}% bootstrap interval; ▲ marks it "
    f"above {POI_THRESHOLD}, the threshold recommended for claiming an improvement, which is "
    "significant only when the interval's lower end is above 0.5."
)


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
