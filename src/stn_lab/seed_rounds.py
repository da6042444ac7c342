"""The bookkeeping of a sequential seed sweep (``hydra/sweeper=decide``), apart from Hydra.

The sweeper (``hydra_plugins.stn_lab_decide``) runs every arm seed by seed, in rounds; this
module holds what it needs that is not launching: the sweep's own folder (the same command
always gets the same one, so a re-run continues it), each job's folder, the scores read back
from the jobs' ``metrics.json`` records, which jobs the next round needs, and
``decision.json``. The statistics are :mod:`stn_lab.sequential`'s.

Scores are test accuracies in percentage points, as ``compare`` reports them, so ``delta`` is
in points too. Every job is an ordinary run folder: ``compare`` reads a decided sweep as any
other.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stn_lab.atomic import atomic_write
from stn_lab.sequential import DECISIONS, SweepDecision, decide

DECISION = "decision.json"
SCORE = "test accuracy (percentage points)"
#: ``decision.json``'s ``status``: still running (or interrupted), finished, or stopped by a
#: job that failed twice.
RUNNING, STOPPED = "running", "stopped"


@dataclass(frozen=True)
class Plan:
    """What a sequential sweep compares, fixed before its first job.

    ``setting`` is the swept setting whose ``values`` are the arms (as the command line spells
    them); ``baseline`` is one of them; ``fixed`` are the overrides every job shares. The rest
    are :func:`stn_lab.sequential.decide`'s design.
    """

    setting: str
    values: tuple[str, ...]
    baseline: str
    fixed: tuple[str, ...]
    delta: float | None
    alpha: float
    first: int
    step: int
    max_seeds: int
    spending: str = "obf"

    @property
    def arms(self) -> tuple[str, ...]:
        """The values compared with the baseline."""
        return tuple(v for v in self.values if v != self.baseline)

    def signature(self) -> str:
        """A short hash of everything that decides which runs the sweep holds and how they are
        judged: the same command gets the same folder, another one a new folder."""
        text = json.dumps(
            {**self.__dict__, "fixed": sorted(self.fixed)}, sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def folder(self, parent: Path) -> Path:
        """The sweep's folder under ``parent`` when none is given: ``decide_<setting>_<hash>``."""
        return parent / f"decide_{_safe(self.setting)}_{self.signature()}"

    def job_name(self, value: str, seed: int) -> str:
        """The run folder of one arm's seed, inside the sweep's folder: ``stn_seed3``."""
        return f"{_safe(value)}_seed{seed}"

    def overrides(self, value: str, seed: int, sweep_dir: Path) -> list[str]:
        """One job's overrides: the shared ones, its arm, its seed and its folder."""
        return [
            *self.fixed,
            f"{self.setting}={value}",
            f"seed={seed}",
            f"hydra.sweep.dir={quote(str(sweep_dir))}",
            f"hydra.sweep.subdir={self.job_name(value, seed)}",
        ]

    def decide(self, scores: dict[str, dict[int, float]]) -> SweepDecision:
        """:func:`stn_lab.sequential.decide` on the scores so far, alpha shared by every arm."""
        return decide(
            {v: scores.get(v, {}) for v in self.values},
            self.baseline,
            self.delta,
            alpha=self.alpha,
            first=self.first,
            step=self.step,
            max_seeds=self.max_seeds,
            comparisons=len(self.arms),
            spending=self.spending,
        )


def _safe(text: str) -> str:
    """``text`` as a folder name: anything but letters, digits, ``.``, ``+`` and ``-`` as ``-``."""
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text.strip("'\"")) or "-"


def quote(value: str) -> str:
    """A Hydra override value that reads back as ``value`` (quoted when it has to be)."""
    if re.fullmatch(r"[\w./+~-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_names(plan: Plan) -> None:
    """Refuse arms whose folder names would collide (``a/b`` and ``a-b``)."""
    names = [_safe(v) for v in plan.values]
    if len(set(names)) < len(names):
        raise ValueError(
            f"the values of {plan.setting} ({', '.join(plan.values)}) give the same folder "
            "names; rename them"
        )


# ---------------------------------------------------------------- reading the jobs back
def read_record(folder: Path) -> dict | None:
    """A job folder's ``metrics.json``, or None when it has none that can be read."""
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def score(record: dict | None, seed: int) -> float | None:
    """The test accuracy in points of a completed record of ``seed``, else None."""
    if not record or record.get("status") != "completed":
        return None
    if (record.get("config") or {}).get("seed") != seed:
        return None
    return 100.0 * float(record["test"]["acc"])


def read_scores(plan: Plan, sweep_dir: Path) -> tuple[dict[str, dict[int, float]], dict]:
    """Every completed job's score, ``{value: {seed: points}}``, and its folder (relative to
    ``sweep_dir``), ``{value: {seed: name}}``."""
    scores: dict[str, dict[int, float]] = {v: {} for v in plan.values}
    runs: dict[str, dict[int, str]] = {v: {} for v in plan.values}
    for value in plan.values:
        for seed in range(plan.max_seeds):
            name = plan.job_name(value, seed)
            points = score(read_record(sweep_dir / name), seed)
            if points is not None:
                scores[value][seed], runs[value][seed] = points, name
    return scores, runs


def next_jobs(plan: Plan, decision: SweepDecision, scores: dict) -> list[tuple[str, int]]:
    """The jobs of the next round, ``(value, seed)``: every arm still undecided, and the
    baseline, up to the next look's number of seeds, less those already completed."""
    open_ = [c for c in decision.comparisons.values() if c.decision == DECISIONS[0]]
    if not open_:
        return []
    target = min(c.next_look for c in open_)
    values = [plan.baseline, *(c.arm for c in open_)]
    return [(v, s) for s in range(target) for v in values if s not in scores.get(v, {})]


# ---------------------------------------------------------------- decision.json
def previous_rounds(sweep_dir: Path) -> list[dict]:
    """The rounds an earlier, interrupted run of this sweep recorded."""
    try:
        return list(json.loads((sweep_dir / DECISION).read_text()).get("rounds", []))
    except (OSError, ValueError):
        return []


def status(decision: SweepDecision, stopped: bool) -> str:
    """``decision.json``'s status: ``stopped``, ``running``, ``decided`` (every comparison
    decided) or ``not decided`` (some ran out of seeds)."""
    if stopped:
        return STOPPED
    if not decision.done:
        return RUNNING
    undecided = any(c.decision == "not decided" for c in decision.comparisons.values())
    return "not decided" if undecided else "decided"


def write_decision(
    sweep_dir: Path,
    plan: Plan,
    decision: SweepDecision,
    runs: dict,
    rounds: Sequence[dict],
    command: Sequence[str],
    stopped: bool = False,
) -> dict:
    """Write ``decision.json``: the design, each comparison's looks and decision, the seeds and
    folders of every arm, the rounds and the wall time. Returns what it wrote."""
    record: dict[str, Any] = {
        "status": status(decision, stopped),
        "arms": {"setting": plan.setting, "values": list(plan.values), "baseline": plan.baseline},
        "score": SCORE,
        **decision.to_dict(),
        "seeds": {v: sorted(runs[v]) for v in plan.values},
        "runs": {v: {str(s): name for s, name in sorted(runs[v].items())} for v in plan.values},
        "rounds": list(rounds),
        "wall_seconds": round(sum(r["seconds"] for r in rounds), 1),
        "command": list(command),
    }
    atomic_write(sweep_dir / DECISION, json.dumps(record, indent=2))
    return record


def describe(plan: Plan, decision: SweepDecision) -> list[str]:
    """One line per comparison: its decision, or where it stands, at its last look."""
    lines = []
    for c in decision.comparisons.values():
        head = f"{plan.setting}={c.arm} vs {c.baseline}: {c.decision}"
        if not c.looks:
            lines.append(f"{head} (no look yet)")
            continue
        last = c.looks[-1]
        t = "inf" if last["t"] is None else f"{last['t']:+.2f}"
        line = f"{head} at {last['n']} seeds (mean difference {last['mean_difference']:+.2f} pp"
        if c.decision == "equivalent":  # the TOST decided: its bound, not the difference test's
            line += (f", inside ±{plan.delta:g} pp by two one-sided t tests, each bound "
                     f"{last['t_bound_equivalence']:.3g})")  # fmt: skip
        else:
            line += f", t {t}, bound ±{last['t_bound']:.3g})"
        if c.seeds_needed:
            wanted = c.seeds_needed.get("difference")
            line += f"; a fixed design would need {wanted or 'more than 100,000'} seeds"
        lines.append(line)
    return lines
