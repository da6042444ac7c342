"""The command line:
``python -m stn_lab.compare [DIR ...] [--out results] [--rope 0.5] [--include-debug]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stn_lab.compare.decisions import find_decisions, summary_line
from stn_lab.compare.groups import DEFAULT_ROPE, Analysis, build_table, pair_differences
from stn_lab.compare.records import METRICS_FILE, load_runs
from stn_lab.compare.report import write_report
from stn_lab.compare.sets import sets_analysis
from stn_lab.compare.stats import CONFIDENCE

#: Where ``train`` writes its runs unless ``paths.log_dir`` says otherwise (conf/paths).
LOGS_ENV = "STN_LAB_LOGS"


def default_logs() -> str:
    """``$STN_LAB_LOGS`` when set (where ``train`` writes its runs then), else ``logs``."""
    return os.environ.get(LOGS_ENV) or "logs"


def build_parser() -> argparse.ArgumentParser:
    script = Path(sys.argv[0]).name  # the console script, or __main__.py under python -m
    parser = argparse.ArgumentParser(
        prog=script if script == "stn-compare" else "python -m stn_lab.compare",
        description="Aggregate finished runs over seeds, tabulate them, plot them and test "
        "the differences between groups whose labels differ in one setting (paired t over "
        f"shared seeds, else Welch; {100 * CONFIDENCE:.0f}% CI; Holm across pairs; a verdict "
        "of better, "
        "equivalent or inconclusive, or none when the two groups differ in more than one "
        "setting: confounded). Reads metrics.json and predictions.npy files.",
    )
    parser.add_argument(
        "dirs",
        nargs="*",
        default=None,
        help=f"folders to search recursively for runs (default: ${LOGS_ENV} when set, where "
        "train writes its runs, else logs)",
    )
    parser.add_argument(
        "--out",
        default="results",
        help="output folder for compare.md/.csv/.tex/.png and differences.csv, and "
        "decisions.png for sequential sweeps (default: results)",
    )
    parser.add_argument(
        "--rope",
        type=float,
        default=DEFAULT_ROPE,
        metavar="DELTA",
        help="half-width of the region of practical equivalence, in accuracy points: a "
        "difference shown to lie within ±DELTA is 'equivalent' (default: %(default)s)",
    )
    parser.add_argument(
        "--include-debug",
        action="store_true",
        help="compare debug runs (fast_dev_run, limit_*_batches, overfit_batches) too, in "
        "groups of their own marked [debug]: their numbers come from a few batches, a check "
        "that the pipeline works, not a result. Without it they are listed apart",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the comparison. Returns 0 on success, 1 if no run completed, 2 if no runs exist."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.rope > 0:
        parser.error(f"--rope must be a positive number of accuracy points, got {args.rope}")
    dirs = [str(d) for d in args.dirs] if args.dirs else [default_logs()]
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
    compared = [*found.results, *found.debug] if args.include_debug else found.results
    table = build_table(compared)
    for g in table.groups:
        if g.duplicates:
            seeds = ", ".join(str(s) for s in sorted({r.seed for r in g.duplicates}))
            print(
                f"compare: warning: group {g.label} ran seed {seeds} more than once; "
                "counted once (see Notes)",
                file=sys.stderr,
            )
    diffs = pair_differences(table, Analysis(rope=args.rope / 100))
    for reason in dict.fromkeys(d.images_missing for d in diffs if d.images_damaged):
        print(f"compare: warning: no per-image evidence: {reason}", file=sys.stderr)
    for d in diffs:
        if d.confounded:
            print(
                f"compare: warning: {d.a.label} vs {d.b.label}: {d.verdict_text}", file=sys.stderr
            )
    sets = sets_analysis(table)
    decisions = find_decisions(found, dirs)
    for problem in decisions.problems:
        print(f"compare: warning: {problem}; left out", file=sys.stderr)
    text, written, skipped = write_report(
        Path(args.out), table, diffs, found, dirs, args.include_debug, sets, decisions
    )
    for line in skipped:
        print(f"compare: {line}", file=sys.stderr)
    print(text)
    if decisions.sweeps:
        print(summary_line(decisions))
    print(f"Wrote {', '.join(str(f) for f in written)}")
    if found.failed or found.interrupted:
        print(
            f"compare: {len(found.failed)} failed or unfinished and {len(found.interrupted)} "
            "interrupted run(s), listed apart above",
            file=sys.stderr,
        )
    if not compared:
        debug = (
            f" ({len(found.debug)} debug run(s), e.g. with limit_train_batches, are not "
            "results: train without the debug flags, or compare them as checks with "
            "--include-debug)"
            if found.debug
            else ""
        )
        print(f"compare: error: no completed runs to compare{debug}", file=sys.stderr)
        return 1
    return 0
