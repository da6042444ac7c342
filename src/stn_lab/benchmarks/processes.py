"""Measurements of whole processes: the peak RSS of a real training run, the anchor (a 1-epoch
``python -m stn_lab.train`` against the PyTorch tutorial's loop, wall time), and the test
accuracy of the tutorial and the light localiser after a few epochs."""

from __future__ import annotations

import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stn_lab.benchmarks.tutorial import tutorial_stn_epoch
from stn_lab.benchmarks.workloads import LIGHT_LOCALISER
from stn_lab.build import build
from stn_lab.config_path import compose_config

ANCHOR_RUN = ["data=fashion_mnist", "trainer.max_epochs=1"]
ANCHOR_REFERENCES = ("stn_lab", "tutorial", "tutorial_tensors")  # the processes timed in turn


def _child_peak_rss_mb(command: list[str], env: dict) -> float:
    """Peak RSS of one child process, read from its own ``/proc/<pid>/status`` (``VmHWM``).

    ``getrusage(RUSAGE_CHILDREN)`` would also count the parent's pages at fork time (after the
    throughput runs, more than the training run itself), so the child is polled.
    """
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status, peak_kb = Path(f"/proc/{child.pid}/status"), 0
    while child.poll() is None:
        try:
            line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM"))
            peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, StopIteration):
            pass  # not on Linux, or the process is just ending
        time.sleep(0.05)
    _, stderr = child.communicate()
    if child.returncode:
        raise RuntimeError(f"training run failed: {stderr.decode()[-2000:]}")
    return peak_kb / 1024


def peak_rss_mb(steps: int) -> tuple[float, str]:
    """Peak RSS of a real 28x28 training run in a subprocess, and which data it used."""
    from stn_lab.data.sources import debian_fashion_dirs

    fashion = ["data=fashion_mnist"]
    data = fashion if debian_fashion_dirs() else ["data=synthetic", "data.num_train=60000"]
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "stn_lab.train", *data, f"trainer.max_steps={steps}",
            "trainer.max_epochs=-1", "trainer.limit_val_batches=20",
            "trainer.enable_progress_bar=false",
        ]  # fmt: skip
        return _child_peak_rss_mb(command, {**os.environ, "STN_LAB_LOGS": tmp}), data[0]


def _wall_seconds(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{command[:3]} failed: {done.stderr[-2000:]}")
    return seconds


def anchor(runs: int, env: dict) -> dict:
    """Whole-process wall seconds of ``python -m stn_lab.train`` on Fashion-MNIST for one epoch
    and of the tutorial's loop for one epoch on the same IDX files, as written and with
    pre-normalised tensors, ``runs`` of each in alternation; the medians and the median per-run
    ratios. ``env`` is the caller's environment before this process tuned its own (the
    tutorial runs as its users run it)."""
    from stn_lab.data import sources

    cfg = compose_config(ANCHOR_RUN)
    datamodule, _, _ = build(cfg)  # the run's own DataModule, so both read the same files
    datamodule.prepare_data()  # the copy out of Debian's package is not timed
    folder = Path(cfg.paths.data_dir) / datamodule.folder_name / "raw"
    files = {
        f"{split}_{kind}": str(sources.find_idx_file(folder, stem))
        for split, stems in sources.IDX_SPLITS.items()
        for kind, stem in zip(("images", "labels"), stems, strict=True)
    }
    source = inspect.getsource(tutorial_stn_epoch)
    times: dict[str, list[float]] = {name: [] for name in ANCHOR_REFERENCES}
    with tempfile.TemporaryDirectory() as tmp:
        # torchvision.datasets.FashionMNIST reads the unpacked files from root/FashionMNIST/raw.
        sources.copy_idx_folder(folder, Path(tmp) / "torchvision" / "FashionMNIST" / "raw")
        files["root"] = str(Path(tmp) / "torchvision")
        commands = {
            name: [sys.executable, "-c", f"{source}\ntutorial_stn_epoch({files!r}, {as_written})"]
            for name, as_written in (("tutorial", True), ("tutorial_tensors", False))
        }
        commands["stn_lab"] = [sys.executable, "-m", "stn_lab.train", *ANCHOR_RUN]
        logs = {**env, "STN_LAB_LOGS": str(Path(tmp) / "logs")}
        for _ in range(runs):
            for name in ANCHOR_REFERENCES:
                times[name].append(
                    _wall_seconds(commands[name], logs if name == "stn_lab" else env)
                )
    result = {"runs": runs, **{name: statistics.median(t) for name, t in times.items()}}
    for name in ("tutorial", "tutorial_tensors"):
        pairs = zip(times["stn_lab"], times[name], strict=True)
        result[f"ratio_{name}"] = statistics.median(s / t for s, t in pairs)
    return result


def accuracy(epochs: int, seeds: int) -> dict[str, list[float]]:
    """Test accuracy per seed of the tutorial (default) vs the light localiser on
    Fashion-MNIST-RTS."""
    results: dict[str, list[float]] = {"tutorial": [], "light": []}
    for seed in range(seeds):
        for name, extra in (("tutorial", []), ("light", LIGHT_LOCALISER)):
            print(f"  {name} localiser, seed {seed}, {epochs} epochs ...", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                env = {**os.environ, "STN_LAB_LOGS": tmp}
                subprocess.run(
                    [sys.executable, "-m", "stn_lab.train", "data=fashion_mnist_distorted",
                     *extra, f"seed={seed}", f"trainer.max_epochs={epochs}",
                     "trainer.enable_progress_bar=false"],
                    env=env, check=True, capture_output=True,
                )  # fmt: skip
                (metrics,) = Path(tmp).glob("runs/*/metrics.json")
                results[name].append(json.loads(metrics.read_text())["test"]["acc"])
    return results
