"""The command line:
``python -m stn_lab.compare [DIR ...] [--out results] [--rope 0.5] [--include-debug]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stn_lab.atomic import atomic_write
from stn_lab.compare.groups import DEFAULT_ROPE, Analysis, build_table, pair_differences
from stn_lab.compare.plots import write_cd, write_disagreements, write_profile
from stn_lab.compare.records import METRICS_FILE, load_runs
from stn_lab.compare.report import (
    render_markdown,
    render_tex,
    write_csv,
    write_differences_csv,
    write_plot,
)
from stn_lab.compare.sets import sets_analysis

#: The files ``main`` always writes into ``--out``; ``profile.png``, ``cd.png`` and
#: ``disagreements.png`` follow when the runs allow them.
OUTPUTS = ("compare.md", "compare.csv", "differences.csv", "compare.tex", "compare.png")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stn_lab.compare",
        description="Aggregate finished runs over seeds, tabulate them, plot them and test "
        "one-setting differences (paired t over shared seeds, else Welch; 95%% CI; Holm across "
        "pairs; a verdict of better, equivalent or inconclusive). Reads metrics.json and "
        "predictions.npy files.",
    )
    parser.add_argument(
        "dirs",
        nargs="*",
        default=["logs"],
        help="folders to search recursively for runs (default: logs)",
    )
    parser.add_argument(
        "--out",
        default="results",
        help="output folder for compare.md/.csv/.tex/.png and differences.csv (default: results)",
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
        help="list debug runs (fast_dev_run, limit_*_batches, overfit_batches) in their own "
        "section; they are never pooled with results",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the comparison. Returns 0 on success, 1 if no run completed, 2 if no runs exist."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.rope > 0:
        parser.error(f"--rope must be a positive number of accuracy points, got {args.rope}")
    dirs = [str(d) for d in args.dirs]
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
    table = build_table(found.results)
    for g in table.groups:
        if g.duplicates:
            seeds = ", ".join(str(s) for s in sorted({r.seed for r in g.duplicates}))
            print(
                f"compare: warning: group {g.label} ran seed {seeds} more than once; "
                "counted once (see Notes)",
                file=sys.stderr,
            )
    diffs = pair_differences(table, Analysis(rope=args.rope / 100))
    sets = sets_analysis(table)
    out = Path(args.out)
    text = render_markdown(table, diffs, found, dirs, args.include_debug, sets)
    atomic_write(out / "compare.md", text)
    write_csv(out / "compare.csv", table)
    write_differences_csv(out / "differences.csv", diffs)
    atomic_write(out / "compare.tex", render_tex(table, diffs, sets))
    write_plot(out / "compare.png", table)
    written = [out / f for f in OUTPUTS]
    if sets is not None and sets.models:
        write_profile(out / "profile.png", sets)
        written.append(out / "profile.png")
        if sets.ranks is not None:
            write_cd(out / "cd.png", sets)
            written.append(out / "cd.png")
        else:
            print(f"compare: {sets.refusal}", file=sys.stderr)
    names = next((list(g.class_names) for g in table.groups if g.class_names), [])
    skipped = write_disagreements(out / "disagreements.png", diffs, names)
    if skipped:
        print(f"compare: no disagreements.png: {skipped}", file=sys.stderr)
    else:
        written.append(out / "disagreements.png")
    print(text)
    print(f"Wrote {', '.join(str(f) for f in written)}")
    if found.failed or found.interrupted:
        print(
            f"compare: {len(found.failed)} failed or unfinished and {len(found.interrupted)} "
            "interrupted run(s), listed apart above",
            file=sys.stderr,
        )
    if not found.results:
        debug = (
            f" ({len(found.debug)} debug run(s), e.g. with limit_train_batches, are never "
            "compared: train without the debug flags)"
            if found.debug
            else ""
        )
        print(f"compare: error: no completed runs to compare{debug}", file=sys.stderr)
        return 1
    return 0
