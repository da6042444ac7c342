"""Plain-loop speed: train and inference img/s per model at one image size, the STN/CNN and
channels-last/NCHW step ratios, and each distortion set's rate against the fastest training.

Models take turns in short runs of ``CHUNK`` steps: caches stay warm within a run (as in
training), and the machine's slow phases still hit every model alike.
"""

from __future__ import annotations

import statistics
import time

import torch
from hydra.utils import instantiate

from stn_lab.benchmarks.workloads import BATCH, CHUNK, MODELS, WARMUP, PlainLoop, setup
from stn_lab.config_path import CONFIG_DIR, compose_config


def inference_seconds(datamodule, network, batches: int) -> float:
    """Seconds for ``batches`` forward passes of one prepared batch, after one untimed pass."""
    network.eval()
    x, _ = next(iter(datamodule.train_dataloader()))
    x = datamodule.prepare_images(x, train=False)
    with torch.no_grad():
        network(x)
        start = time.perf_counter()
        for _ in range(batches):
            network(x)
    return time.perf_counter() - start


def throughput(size: int, steps: int) -> dict:
    """Train/inference img/s per model, and the within-run ratios, at one image size."""
    torch.manual_seed(0)
    parts = {m: setup(m, size, n_train=BATCH * (steps + WARMUP + 5)) for m in MODELS}
    loops = {m: PlainLoop(cfg, dm, net) for m, (cfg, dm, net, _) in parts.items()}
    for loop in loops.values():
        for _ in range(WARMUP):
            loop()
    per_step: dict[str, list[float]] = {m: [] for m in MODELS}
    for _ in range(steps // CHUNK):
        for m, loop in loops.items():
            per_step[m].append(sum(loop() for _ in range(CHUNK)) / CHUNK)
    row = {"size": size}
    for m, (_, dm, net, _) in parts.items():
        row[f"{m}_train"] = BATCH / statistics.median(per_step[m])
        row[f"{m}_infer"] = BATCH * 20 / inference_seconds(dm, net, 20)
    for m in ("stn", "stn_light", "stn_floor"):
        ratios = [s / c for s, c in zip(per_step[m], per_step["cnn"], strict=True)]
        row[f"{m}_cnn_ratio"] = statistics.median(ratios)
    for m in ("stn", "cnn"):  # how much faster the channels-last step is than the NCHW one
        ratios = [n / c for n, c in zip(per_step[f"{m}_nchw"], per_step[m], strict=True)]
        row[f"{m}_layout_speedup"] = statistics.median(ratios)
    return row


def data_pipeline(turns: int) -> dict[str, tuple[float, float]]:
    """Per distortion set: its img/s alone (28 px batches of ``BATCH``, as training distorts
    them, the CPU's rate), and that rate over the fastest model's training rate (the
    28 px CNN in the plain loop), the two measured in alternating turns and the ratio the median
    over turns.

    Each set is built from its config group alone (a distortion is neither a DataModule nor a
    network, so :func:`stn_lab.build.build` has nothing to add), and timed on a bare batch
    without the DataModule's normalisation around it.
    """
    names = sorted(p.stem for p in (CONFIG_DIR / "distortion").glob("*.yaml") if p.stem != "none")
    x = torch.rand(BATCH, 1, 28, 28)
    cfg, datamodule, network, _ = setup("cnn", 28, n_train=BATCH * 50)
    train_step = PlainLoop(cfg, datamodule, network)
    for _ in range(WARMUP):
        train_step()
    results = {}
    for name in names:
        distortion = instantiate(compose_config([f"distortion={name}"]).distortion)
        for _ in range(3):  # warm-up
            distortion(x)
        rates, ratios = [], []
        for _ in range(turns):
            start = time.perf_counter()
            for _ in range(CHUNK):
                distortion(x)
            rate = len(x) * CHUNK / (time.perf_counter() - start)
            train_rate = BATCH * CHUNK / sum(train_step() for _ in range(CHUNK))
            rates.append(rate)
            ratios.append(rate / train_rate)
        results[name] = (statistics.median(rates), statistics.median(ratios))
    return results
