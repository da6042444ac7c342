"""Compare finished training runs: group them, aggregate over seeds, test differences, report.

Usage::

    python -m stn_lab.compare [DIR ...] [--out results] [--rope 0.5] [--include-debug]

``compare`` never imports model or training code: it reads the ``metrics.json`` and
``predictions.npy`` files that every training run writes into its Hydra output folder (and looks
whether ``.hydra/`` exists, to spot runs that started but never finished), and the ``decision.json``
of a sequential sweep (``hydra/sweeper=decide``) above its runs. It needs numpy, scipy and
matplotlib (drawn off-screen with the Agg canvas). Only ``disagreements.png`` needs the test images:
:func:`.plots.load_test_images` rebuilds them from the run's data config, importing the DataModule
(torch, Lightning) when called, and the picture is skipped with one line when it cannot.

The layers, each a few pure functions usable from a notebook:

- :mod:`.records` -- :func:`load_runs` reads every run folder into one :class:`RunRecord` and
  sorts them into a :class:`RunSet`: results, debug runs, interrupted runs, failed runs. The
  result-neutral keys and debug flags come from :mod:`stn_lab.run_record` (one definition);
  callbacks are judged one by one, however they were added.
- :mod:`.groups` -- :func:`build_table` groups results by their whole resolved config minus the
  seed and the result-neutral keys, counts a repeated seed once and names each group by the
  settings that vary; :func:`pair_differences` lists the pairs whose names differ in one
  setting, with the verdict (better / equivalent / inconclusive, none when confounded) and the
  evidence behind it. :mod:`.contrast` names every setting two groups differ in.
- :mod:`.stats` -- paired (by seed) and Welch t tests with their intervals, Wilcoxon, Holm,
  TOST, power, P(improvement), the smallest p a design can reach and the one bootstrap, on
  ``scipy.stats``.
- :mod:`.predictions` -- per-image evidence: the multibootstrap over seeds x test images,
  McNemar per seed pair, the images two models disagree on.
- :mod:`.sets` -- results across distortion sets: mean and IQM with stratified-bootstrap
  intervals, performance profiles, the design guard, Friedman/Nemenyi ranks.
- :mod:`.columns` -- one column specification per table, shared by :mod:`.markdown`
  (``compare.md``), :mod:`.tex` (``compare.tex``) and the CSV files; :mod:`.notes` -- the
  variance manifest under every table; :mod:`.plots` -- ``compare.png``, ``profile.png``,
  ``cd.png`` and ``disagreements.png``; :mod:`.report` -- writes them all into ``--out``.
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
