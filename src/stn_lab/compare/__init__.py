"""Compare finished training runs: group them, aggregate over seeds, test differences, report.

Usage::

    python -m stn_lab.compare [DIR ...] [--out results] [--include-debug]

``compare`` never imports model or training code: it reads only the ``metrics.json`` file that
every training run writes into its Hydra output folder (and looks whether ``.hydra/`` exists, to
spot runs that started but never finished). It needs numpy, scipy and matplotlib (drawn
off-screen with the Agg canvas).

The layers, each a few pure functions usable from a notebook:

- :mod:`.records` -- :func:`load_runs` reads every run folder into one :class:`RunRecord` and
  sorts them into a :class:`RunSet`: results, debug runs, interrupted runs, failed runs.
- :mod:`.groups` -- :func:`build_table` groups results by their whole resolved config minus the
  seed and the result-neutral keys, counts a repeated seed once and names each group by the
  settings that vary; :func:`pair_differences` lists the pairs that differ in one setting.
- :mod:`.stats` -- paired (by seed) and Welch t tests with their intervals, Wilcoxon, the
  mean's interval and Holm's correction, on ``scipy.stats``.
- :mod:`.report` -- ``compare.md``, ``compare.csv``, ``differences.csv``, ``compare.tex`` and
  ``compare.png``.
- :mod:`.cli` -- :func:`main`, the command line.
"""

from stn_lab.compare.cli import main
from stn_lab.compare.groups import Difference, GroupStats, Table, build_table, pair_differences
from stn_lab.compare.records import RunRecord, RunSet, load_runs

__all__ = [
    "Difference",
    "GroupStats",
    "RunRecord",
    "RunSet",
    "Table",
    "build_table",
    "load_runs",
    "main",
    "pair_differences",
]
