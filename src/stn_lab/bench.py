"""``python -m stn_lab.bench``: throughput, Lightning's overhead, data-pipeline speed and memory.

Prints what it measured and refreshes those sections of ``bench/results.md``
(:mod:`stn_lab.benchmarks.report`). The machine is noisy (run to run, see
``docs/performance.md``), so every target is a ratio of two measurements taken in alternation
within one run: models take turns in runs of 10 steps, Lightning and the plain loop likewise,
and each ratio is the median of the per-turn ratios. The measurements live in
:mod:`stn_lab.benchmarks`, one module per job:

- train / inference img/s of the STN (default: the tutorial localiser), the STN with the light
  localiser (``localiser_size=light``), the STN's floor (a localiser that costs nothing: what
  sampling and the classifier's input gradient cost alone), and the CNN, at 28, 42 and 60 px,
  in a plain PyTorch loop over the DataModule's batches (one optimiser step per batch);
- STN/CNN: the train-step time ratio;
- layout: the channels-last default against ``channels_last=false`` (NCHW), STN and CNN;
- Lightning/plain: stn_lab's Lightning path (ClassifierModule + Trainer, one optimiser step
  per batch, metrics and fault checks included) against the plain loop on a fresh copy of the
  same model over the same batches, STN and CNN, at 28 px and at 42 px (RTS-distorted); for
  the two workloads with a target, also Lightning's floor (a training step that only computes
  the loss);
- data img/s: every distortion set alone, against the fastest model's training rate (the 28 px
  CNN), the two measured in alternating turns;
- peak RSS of a real 28x28 training run (``python -m stn_lab.train``, in a subprocess);
- with ``--anchor``: whole-process wall time of a 1-epoch STN run on Fashion-MNIST against the
  PyTorch STN tutorial's own loop for one epoch on the same data;
- with ``--accuracy-epochs N``: test accuracy of the tutorial and the light localiser after N
  epochs on Fashion-MNIST-RTS (whole training runs: the slowest part by far).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from stn_lab.benchmarks import report
from stn_lab.benchmarks.overhead import OVERHEAD_WORKLOADS, lightning_vs_plain
from stn_lab.benchmarks.processes import accuracy, anchor, peak_rss_mb
from stn_lab.benchmarks.throughput import data_pipeline, throughput
from stn_lab.benchmarks.workloads import BATCH
from stn_lab.cpu_runtime import tune_cpu_runtime


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="stn_lab throughput and memory benchmark")
    parser.add_argument(
        "--quick", action="store_true", help="few steps, 28 px (a minute); writes only with --out"
    )
    parser.add_argument("--out", type=Path, help=f"the file to refresh (default: {report.RESULTS})")
    parser.add_argument(
        "--anchor", action="store_true", help="also time a 1-epoch run against the tutorial's"
    )
    parser.add_argument("--anchor-runs", type=int, default=3, help="runs of each, alternated")
    parser.add_argument(
        "--accuracy-epochs",
        type=int,
        default=0,
        help="also train both localisers this many epochs on Fashion-MNIST-RTS",
    )
    parser.add_argument("--accuracy-seeds", type=int, default=2, help="seeds per localiser")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    user_env = dict(os.environ)  # before tuning: the anchor's tutorial runs untuned
    tune_cpu_runtime()  # as the train entry point does, for both the plain and the Lightning path
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-Trainer banners
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    sizes, steps, turns = ((28,), 30, 3) if args.quick else ((28, 42, 60), 200, 30)
    sections: dict[str, list[str]] = {}
    rows = []
    for size in sizes:
        print(f"measuring throughput at {size} px ...", flush=True)
        rows.append(throughput(size, steps))
    sections["throughput"] = report.render_throughput(rows)
    print("measuring Lightning against the plain loop ...", flush=True)
    overhead = [lightning_vs_plain(*workload, turns) for workload in OVERHEAD_WORKLOADS]
    sections["overhead"] = report.render_overhead(overhead)
    print("measuring the data pipeline ...", flush=True)
    sections["data"] = report.render_data(data_pipeline(3 if args.quick else 9), BATCH)
    print("measuring peak RSS of a 28x28 run ...", flush=True)
    sections["memory"] = report.render_memory(peak_rss_mb(20 if args.quick else 200))
    if args.anchor:
        print("timing a 1-epoch run against the tutorial's loop ...", flush=True)
        sections["anchor"] = report.render_anchor(anchor(args.anchor_runs, user_env))
    if args.accuracy_epochs:
        print("training both localisers on Fashion-MNIST-RTS ...", flush=True)
        acc = {"epochs": args.accuracy_epochs,
               **accuracy(args.accuracy_epochs, args.accuracy_seeds)}  # fmt: skip
        sections["accuracy"] = report.render_accuracy(acc)
    stamp = report.provenance(sys.argv[1:] if argv is None else argv)
    print("\n\n".join("\n".join(lines) for lines in sections.values()))
    out = args.out or (None if args.quick else report.RESULTS)
    if out is not None:
        report.refresh(out, sections, stamp)
        print(f"refreshed {', '.join(sections)} in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
