"""Sequential seed sweeps in the comparison: their ``decision.json`` as a section of
``compare.md`` and as ``decisions.png``.

A sweep run by ``hydra/sweeper=decide`` writes ``decision.json`` at its top, above its run
folders (:mod:`stn_lab.seed_rounds` writes it, :mod:`stn_lab.sequential` decides what is in
it). :func:`find_decisions` looks for it in the folders above every run that
:func:`.records.load_runs` found, up to the folder ``compare`` was given, so no second walk
of the logs is needed. :func:`decisions_section` tabulates each comparison's decision and
states each sweep's procedure; :func:`decisions_figure` draws the paired t statistic of each
look taken against the boundaries of every planned look.

Only the JSON is read: like the rest of ``compare`` this module imports no training code, nor
:mod:`stn_lab.sequential` (scipy's optimisers and a boundary simulation it does not need).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stn_lab.atomic import atomic_png
from stn_lab.compare.columns import Column, display_path
from stn_lab.compare.markdown import md_table
from stn_lab.compare.plots import _figure
from stn_lab.compare.records import RunSet

#: The file a sequential sweep writes at its top (``stn_lab.seed_rounds.DECISION``).
DECISION_FILE = "decision.json"
#: The picture :func:`write_decisions` draws into ``--out``.
DECISIONS_PNG = "decisions.png"
#: Decisions that end a comparison with a finding (set in bold in ``compare.md``).
FINDINGS = ("better", "worse", "equivalent")
CONTINUE = "continue"
NUMBER = (int, float)  #: what a JSON number reads as


class DecisionError(ValueError):
    """A ``decision.json`` that cannot be read or lacks what the report needs; one line."""


@dataclass(frozen=True)
class Sweep:
    """One sequential sweep: its folder and its ``decision.json``, checked by
    :func:`read_decision` (``design`` with its planned ``looks``, ``comparisons`` with the
    looks taken). The sweeper's own keys (``arms``, ``seeds``, ``status``, ...) may be absent.
    """

    folder: Path
    record: dict[str, Any]

    @property
    def design(self) -> dict[str, Any]:
        return self.record["design"]

    @property
    def comparisons(self) -> list[dict[str, Any]]:
        return list(self.record["comparisons"].values())

    @property
    def direction(self) -> float:
        """+1 when a larger score is better, else -1: t times this is positive for "better"."""
        return 1.0 if self.record["larger_is_better"] else -1.0

    def name(self, value: str) -> str:
        """An arm as ``setting=value`` (``model=stn``) when the sweep names its setting."""
        setting = (self.record.get("arms") or {}).get("setting")
        return f"{setting}={value}" if setting else str(value)

    def label(self, c: dict[str, Any]) -> str:
        return f"{self.name(c['arm'])} vs {self.name(c['baseline'])}"

    def seeds_run(self, value: str) -> int | None:
        seeds = (self.record.get("seeds") or {}).get(value)
        return len(seeds) if isinstance(seeds, list) else None


@dataclass
class Decisions:
    """The sweeps found, and one line for each ``decision.json`` that could not be used."""

    sweeps: list[Sweep] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sweeps or self.problems)


# ---------------------------------------------------------------- reading
def _need(obj: Any, key: str, kinds: tuple[type, ...], where: str) -> Any:
    """``obj[key]`` when it is one of ``kinds`` (JSON true/false only where ``bool`` is)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise DecisionError(f"{where}{key} is missing or malformed ({value!r:.40})")
    return value


def read_decision(path: Path) -> Sweep:
    """``path`` (a ``decision.json``) as a :class:`Sweep`; :class:`DecisionError` says in one
    line why it cannot be used (unreadable, half-written, a key missing)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DecisionError(f"cannot read it: {err}") from None
    except json.JSONDecodeError as err:
        raise DecisionError(f"not valid JSON: {err}") from None
    if not isinstance(record, dict):
        raise DecisionError("it does not hold a JSON object")
    _need(record, "larger_is_better", (bool,), "")
    design = _need(record, "design", (dict,), "")
    for key in ("alpha", "level_per_comparison", "first", "step", "max_seeds", "comparisons"):
        _need(design, key, NUMBER, "design.")
    if design.get("delta") is not None:
        _need(design, "delta", NUMBER, "design.")
    for look in _need(design, "looks", (list,), "design."):
        for key in ("n", "t_bound"):
            _need(look, key, NUMBER, "design.looks[].")
    for arm, c in _need(record, "comparisons", (dict,), "").items():
        where = f"comparisons.{arm}."
        for key in ("arm", "baseline", "decision"):
            _need(c, key, (str,), where)
        for look in _need(c, "looks", (list,), where):
            for key in ("n", "mean_difference", "sd", "t_bound"):
                _need(look, key, NUMBER, f"{where}looks[].")
            _need(look, "t", (*NUMBER, type(None)), f"{where}looks[].")  # null: infinite
    return Sweep(path.parent, record)


def find_decisions(found: RunSet, dirs: Iterable[str | os.PathLike[str]]) -> Decisions:
    """Every ``decision.json`` in a folder above a run of ``found``, up to the folder of
    ``dirs`` that holds the run (that folder included): a sweep's runs are its subfolders."""
    roots = [Path(d).resolve() for d in dirs]
    runs = [*found.results, *found.debug, *found.interrupted, *found.failed]
    folders = {
        folder: None
        for run in runs
        for root in roots
        if run.path != root
        for folder in run.path.parents
        if folder.is_relative_to(root)
    }
    out = Decisions()
    for folder in sorted(folders):
        path = folder / DECISION_FILE
        if not path.is_file():
            continue
        try:
            out.sweeps.append(read_decision(path))
        except DecisionError as err:
            out.problems.append(f"{display_path(path)}: {err}")
    return out


# ---------------------------------------------------------------- text
def decision_text(c: dict[str, Any]) -> str:
    """``better at n=4``, ``not decided at n=20``, ``continue (next look at n=7)``."""
    looks = c["looks"]
    if c["decision"] == CONTINUE:
        if looks and c.get("next_look"):
            return f"continue (next look at n={c['next_look']})"
        return "continue (no look yet)"
    return f"{c['decision']} at n={looks[-1]['n']}" if looks else c["decision"]


def _number(x: float, sign: bool = False) -> str:
    """A t statistic or bound: whole numbers with thousands separators from 100 up."""
    plus = "+" if sign else ""
    return f"{x:{plus},.0f}" if abs(x) >= 100 else f"{x:{plus}.2f}"


def _t_text(look: dict[str, Any]) -> str:
    """The look's t; null (no spread) as ∞ with the sign of the mean difference."""
    if look["t"] is not None:
        return _number(look["t"], sign=True)
    m = look["mean_difference"]
    return "undefined (no spread, no difference)" if m == 0 else f"{'+' if m > 0 else '-'}∞"


def _needed_text(c: dict[str, Any]) -> str:
    needed = c.get("seeds_needed")
    if c["decision"] != "not decided" or not isinstance(needed, dict):
        return ""
    parts = [f"{k} {needed[k] if needed[k] is not None else 'n/a'}" for k in needed]
    return "; ".join(parts)


def _seeds_text(sweep: Sweep, c: dict[str, Any]) -> str:
    counts = [(v, sweep.seeds_run(v)) for v in (c["arm"], c["baseline"])]
    return ", ".join(f"{v} {n}" for v, n in counts if n is not None)


def _last(c: dict[str, Any]) -> dict[str, Any] | None:
    return c["looks"][-1] if c["looks"] else None


def _on_last(text: Any) -> Any:
    """A cell read off the comparison's last look (blank before the first look)."""
    return lambda row: "" if _last(row[1]) is None else text(_last(row[1]))


def _columns() -> list[Column[tuple[Sweep, dict[str, Any]]]]:
    return [
        Column("sweep", lambda r: f"`{display_path(r[0].folder)}`"),
        Column("comparison", lambda r: r[0].label(r[1])),
        Column("decision", lambda r: decision_text(r[1]),
               strong=lambda r: r[1]["decision"] in FINDINGS),
        Column("seeds run", lambda r: _seeds_text(*r)),
        Column("pairs (last look)", _on_last(lambda look: str(look["n"]))),
        Column("arm − baseline, mean ± SD",
               _on_last(lambda look: f"{look['mean_difference']:+.2f} ± {look['sd']:.2f}")),
        Column("paired t", _on_last(_t_text)),
        Column("bound", _on_last(lambda look: f"±{_number(look['t_bound'])}")),
        Column("seeds a fixed design needs", lambda r: _needed_text(r[1])),
    ]  # fmt: skip


#: How the section names the spending functions of :data:`stn_lab.boundaries.SPENDING`.
SPENDING_NAMES = {"obf": "O'Brien–Fleming-type", "pocock": "Pocock-type"}


def procedure_text(sweep: Sweep) -> str:
    """One sweep's design in one bullet: its level, margin, looks and bounds, and its run."""
    d, r = sweep.design, sweep.record
    looks = d["looks"]
    k = d["comparisons"]
    spending = SPENDING_NAMES.get(d.get("spending_function", "obf"), d.get("spending_function"))
    parts = [
        f"{spending} spending",
        f"α = {d['alpha']:g} shared by {k} comparison{'s' if k != 1 else ''} (Bonferroni: "
        f"{d['level_per_comparison']:.4g} each)",
        f"δ = ±{d['delta']:g} (sequential TOST)" if d.get("delta") is not None
        else "no equivalence margin (δ unset)",
        f"looks at n = {d['first']}, {d['first'] + d['step']}, … ≤ {d['max_seeds']} seeds per "
        f"arm (first {d['first']}, step {d['step']}, max_seeds {d['max_seeds']}; "
        f"{len(looks)} looks)",
    ]  # fmt: skip
    if looks:
        parts.append(
            f"|t| bound {_number(looks[0]['t_bound'])} at n={looks[0]['n']} down to "
            f"{_number(looks[-1]['t_bound'])} at n={looks[-1]['n']}"
        )
    head = f"- `{display_path(sweep.folder)}`"
    run = []
    if r.get("status"):
        run.append(f"status **{r['status']}**")
    rounds = r.get("rounds")
    if isinstance(rounds, list):
        wall = r.get("wall_seconds")
        took = f" in {wall:.0f} s" if isinstance(wall, NUMBER) else ""
        run.append(f"{len(rounds)} round{'s' if len(rounds) != 1 else ''}{took}")
    if r.get("command"):
        run.append(f"`{' '.join(str(x) for x in r['command'])}`")
    if run:
        head += f" ({', '.join(run)})"
    score = f"score: {r['score']}; " if r.get("score") else ""
    return f"{head}: {score}{'; '.join(parts)}."


def decisions_section(decisions: Decisions) -> list[str]:
    """The "Sequential decisions" section of ``compare.md``, as lines."""
    rows = [(s, c) for s in decisions.sweeps for c in s.comparisons]
    parts = [
        "## Sequential decisions",
        "",
        "Sweeps run by `hydra/sweeper=decide`, each with its `decision.json`: every arm against "
        "the baseline, seed by seed, by a group-sequential paired t test (Lan–DeMets alpha "
        "spending, O'Brien–Fleming or Pocock type, bounds on the t scale) and, when δ is set, a "
        "sequential TOST within ±δ (docs/sequential.md). A comparison stops at its first "
        "deciding look: **better** or **worse** when the paired t reaches the look's bound, "
        "**equivalent** when both one-sided tests within ±δ do, **not decided** when the last "
        "look is spent; then the seeds a fixed-n design would need at the last look's mean and "
        "SD (80% power; n/a when none would do). The mean and SD are of the per-seed "
        "differences arm − baseline at the last look taken, over its pairs of seeds; seeds run "
        "counts each arm's completed seeds. The Differences table above treats these runs as "
        "a fixed design, whose p does not hold when the number of seeds depended on the "
        "results: for these arms the decision here is the test. `decisions.png` draws each "
        "comparison's t against the bounds, look by look.",
        "",
    ]
    if rows:
        parts += [md_table(_columns(), rows), ""]
    parts += [procedure_text(s) for s in decisions.sweeps]
    parts += [f"- Left out: {p}" for p in decisions.problems]
    return [*parts, ""]


def summary_line(decisions: Decisions) -> str:
    """The console's pointer: each comparison's decision, and where to read more."""
    said = "; ".join(
        f"{s.label(c)}: {decision_text(c)}" for s in decisions.sweeps for c in s.comparisons
    )
    return f"Sequential decisions: {said} (see compare.md, {DECISIONS_PNG})"


# ---------------------------------------------------------------- the picture
def _panel(ax: Any, sweep: Sweep, c: dict[str, Any]) -> None:
    """One comparison: ±bound of every planned look, t of each look taken (oriented so that
    up is better), the deciding look ringed."""
    from matplotlib.ticker import MaxNLocator  # as plots: matplotlib only when drawing

    planned = sweep.design["looks"]
    n_plan = [look["n"] for look in planned]
    bound = [look["t_bound"] for look in planned]
    taken = c["looks"]
    finite = [(look["n"], sweep.direction * look["t"]) for look in taken if look["t"] is not None]
    # The axis reaches past every bound and t; an infinite t (no spread) is drawn inside it.
    top = 4.0 * max([1.0, *bound, *(abs(t) for _, t in finite)])
    ax.plot(n_plan, bound, "--.", color="tab:red", label="±bound (better / worse)")
    ax.plot(n_plan, [-b for b in bound], "--.", color="tab:red")
    ax.fill_between(n_plan, [-b for b in bound], bound, color="tab:red", alpha=0.06, lw=0)
    if finite:
        ax.plot(*zip(*finite, strict=True), "-o", color="tab:blue", label="paired t")
    infinite = [
        (look["n"], math.copysign(top / 2, sweep.direction * look["mean_difference"]))
        for look in taken
        if look["t"] is None and look["mean_difference"] != 0
    ]
    if infinite:
        ax.plot(*zip(*infinite, strict=True), "^", color="tab:blue", ls="none",
                label="t = ∞ (no spread)")  # fmt: skip
    last = taken[-1] if taken else None
    if last is not None and c["decision"] != CONTINUE:
        y = (
            sweep.direction * last["t"]
            if last["t"] is not None
            else math.copysign(top / 2, sweep.direction * last["mean_difference"])
        )
        ax.plot([last["n"]], [y], "o", ms=14, mfc="none", mec="black", mew=2,
                label=f"{c['decision']} (n={last['n']})")  # fmt: skip
    # |t| spans 8,000 at 3 seeds to 2 at 20: logarithmic beyond ±1, linear through 0.
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(-top, top)
    ax.axhline(0, color="gray", lw=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("seeds per arm (n)")
    ax.set_ylabel("paired t (+: arm better)")
    ax.set_title(f"{sweep.label(c)}: {decision_text(c)}\n{sweep.folder.name}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def decisions_figure(sweeps: Sequence[Sweep]) -> Any:
    """``decisions.png``: one panel per comparison of every sweep, two panels a row."""
    panels = [(s, c) for s in sweeps for c in s.comparisons]
    cols = min(2, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig = _figure(6.0 * cols, 0.8 + 4.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (sweep, c) in zip(axes, panels, strict=False):
        _panel(ax, sweep, c)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "no comparisons", ha="center", va="center")
    fig.suptitle("Sequential decisions: the paired t at each look against its bounds")
    return fig


def write_decisions(path: Path, sweeps: Sequence[Sweep]) -> None:
    atomic_png(decisions_figure(sweeps), path)
