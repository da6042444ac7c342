"""``python -m stn_lab.bench``: throughput, overhead ratios, data-pipeline speed and memory.

Prints one table and writes it to ``bench/results.md``. The machine is noisy (+-40% run to run),
so every target is a ratio of two measurements taken in alternation within one run: models
take turns in runs of 10 steps, Lightning and the plain loop batch by batch, and each ratio is
the median of the per-turn ratios.

- train / inference img/s of the STN (default: the tutorial localiser), the STN with the light
  localiser (``localiser_net=light``), the STN's floor (a localiser that costs nothing: what
  sampling and the classifier's input gradient cost alone), and the CNN, at 28, 42 and 60 px,
  in a plain PyTorch loop over the DataModule's batches (one optimiser step per batch);
- Lightning/plain: stn_lab's Lightning path (ClassifierModule + Trainer, metrics included, with
  the default ``data.steps_per_batch``) against that plain loop, same model, same images;
- STN/CNN: the train-step time ratio;
- layout: the channels-last default against ``channels_last=false`` (NCHW), STN and CNN;
- data img/s: every distortion set alone, against the fastest model's training rate (the 28 px
  CNN), the two measured in alternating turns;
- peak RSS of a real 28x28 training run (``python -m stn_lab.train``, in a subprocess);
- with ``--accuracy-epochs N``: test accuracy of the tutorial and the light localiser after N
  epochs on Fashion-MNIST-RTS (minutes per epoch on a CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from stn_lab.build import build
from stn_lab.config_path import compose_config as compose_cfg
from stn_lab.cpu_runtime import tune_cpu_runtime

LIGHT_LOCALISER = ["localiser_net=light"]
# What every STN costs whatever its localiser: the localiser reads one averaged pixel (a 64x
# pool covers every bench size) straight into the head. Sampling, grid generation and the
# classifier's input gradient remain: the floor of the STN/CNN step ratio.
FLOOR_LOCALISER = ["arch.localiser.channels=[]", "arch.localiser.kernel_sizes=[]",
                   "arch.localiser.hidden=[]", "arch.localiser.input_downsample=64"]  # fmt: skip
NCHW = ["channels_last=false"]  # the layout the default (channels-last) is compared against
MODELS = {"stn": ["model=stn"], "stn_light": ["model=stn", *LIGHT_LOCALISER],
          "stn_floor": ["model=stn", *FLOOR_LOCALISER], "cnn": ["model=cnn"],
          "stn_nchw": ["model=stn", *NCHW], "cnn_nchw": ["model=cnn", *NCHW]}  # fmt: skip
BATCH = 64
WARMUP = 10  # untimed steps before timing either path
CHUNK = 10  # consecutive steps of one model before the next takes its turn


def setup(model: str, size: int, n_train: int, plain: bool = False):
    """A seeded (datamodule, network, module) on in-memory synthetic images of ``size`` px.

    ``plain``: batches of one optimiser step each (``data.steps_per_batch=1``), for the plain
    loop; otherwise the configured default, which the Lightning path uses.
    """
    cfg = compose_cfg([
        *MODELS[model], "data=synthetic", f"data.image_size={size}", f"data.num_train={n_train}",
        "data.num_test=64", f"data.batch_size={BATCH}", *(["data.steps_per_batch=1"] * plain),
    ])  # fmt: skip
    datamodule, network, module = build(cfg)
    datamodule.setup()
    return cfg, datamodule, network, module


def plain_optimizer(cfg, network) -> torch.optim.Optimizer:
    """The run's configured optimiser (fused Adam by default), as the Lightning path builds it."""
    return instantiate(cfg.optimizer)(network.parameters())


class PlainLoop:
    """A plain PyTorch training loop over the DataModule's batches (the reference): call it to
    run one step; it returns that step's seconds."""

    def __init__(self, cfg, datamodule, network):
        self.datamodule, self.network = datamodule, network
        self.optimizer = plain_optimizer(cfg, network)
        self.batches = iter(())

    def __call__(self) -> float:
        start = time.perf_counter()
        self.network.train()
        try:
            x, y = next(self.batches)
        except StopIteration:
            self.batches = iter(self.datamodule.train_dataloader())
            x, y = next(self.batches)
        x = self.datamodule.prepare_images(x, train=True)
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.network(x), y).backward()
        self.optimizer.step()
        return time.perf_counter() - start


def inference_seconds(datamodule, network, batches: int) -> float:
    network.eval()
    x, _ = next(iter(datamodule.train_dataloader()))
    x = datamodule.prepare_images(x, train=False)
    with torch.no_grad():
        network(x)
        start = time.perf_counter()
        for _ in range(batches):
            network(x)
    return time.perf_counter() - start


class _Interleave(L.Callback):
    """Runs the plain loop between Lightning batches and times both.

    A Lightning batch is the time from the end of one plain turn to the start of the next: one
    whole turn of Lightning's loop (data, hooks, training_step, optimiser), and nothing of the
    plain loop. Each plain turn is as many steps as one Lightning batch holds
    (``data.steps_per_batch``), so the two turns do the same work. Alternating turn by turn
    makes the machine's slow phases hit both paths alike.
    """

    def __init__(self, plain: PlainLoop, steps_per_batch: int, warmup: int):
        self.plain, self.steps_per_batch, self.warmup = plain, steps_per_batch, warmup
        self.lightning_seconds: list[float] = []
        self.plain_seconds: list[float] = []
        self.last_end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        begin = time.perf_counter()
        if self.last_end is not None and trainer.global_step > self.warmup:
            self.lightning_seconds.append(begin - self.last_end)
        plain = sum(self.plain() for _ in range(self.steps_per_batch))
        if trainer.global_step >= self.warmup:
            self.plain_seconds.append(plain)
        self.last_end = time.perf_counter()


def lightning_vs_plain(model: str, size: int, turns: int) -> float:
    """Lightning/plain throughput ratio over ``turns`` interleaved loaded batches (after one
    untimed batch), for fresh copies of one model."""
    per_batch = loaded_batch() // BATCH  # optimiser steps per Lightning batch
    n_train = BATCH * per_batch * (turns + 3)
    cfg, datamodule, _, module = setup(model, size, n_train=n_train)
    _, plain_data, plain_network, _ = setup(model, size, n_train=n_train, plain=True)
    timer = _Interleave(PlainLoop(cfg, plain_data, plain_network), per_batch, warmup=per_batch)
    trainer = instantiate(
        cfg.trainer, max_epochs=-1, max_steps=per_batch * (turns + 2), limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    pairs = zip(timer.plain_seconds, timer.lightning_seconds, strict=False)
    return statistics.median(p / light for p, light in pairs)


def throughput(size: int, steps: int, lightning_turns: int) -> dict:
    """Train/inference img/s per model, and the within-run ratios, at one image size."""
    torch.manual_seed(0)
    parts = {m: setup(m, size, n_train=BATCH * (steps + WARMUP + 5), plain=True) for m in MODELS}
    loops = {m: PlainLoop(cfg, dm, net) for m, (cfg, dm, net, _) in parts.items()}
    for loop in loops.values():
        for _ in range(WARMUP):
            loop()
    # Models take turns in short runs of CHUNK steps: warm caches within a run (as in training),
    # and the machine's slow phases still hit every model alike.
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
    for m in ("stn", "cnn"):
        row[f"{m}_lightning_ratio"] = lightning_vs_plain(m, size, lightning_turns)
    return row


def loaded_batch() -> int:
    """Images per training batch as the default config loads (and distorts) them."""
    data = compose_cfg([]).data
    return data.batch_size * data.steps_per_batch


def data_pipeline(turns: int) -> dict[str, tuple[float, float]]:
    """Per distortion set: its img/s alone (28 px batches as training loads them, the CPU's
    rate), and that rate over the fastest model's training rate (the 28 px CNN in the plain
    loop), the two measured in alternating turns and the ratio the median over turns."""
    sets = instantiate(compose_cfg([]).distortions)
    x = torch.rand(loaded_batch(), 1, 28, 28)
    cfg, datamodule, network, _ = setup("cnn", 28, n_train=BATCH * 50, plain=True)
    train_step = PlainLoop(cfg, datamodule, network)
    for _ in range(WARMUP):
        train_step()
    results = {}
    for name, distortion in sets.items():
        if distortion is None:
            continue
        for _ in range(3):  # warm-up
            distortion(x)
        rates, ratios = [], []
        for _ in range(turns):
            start = time.perf_counter()
            for _ in range(5):
                distortion(x)
            rate = len(x) * 5 / (time.perf_counter() - start)
            train_rate = BATCH * CHUNK / sum(train_step() for _ in range(CHUNK))
            rates.append(rate)
            ratios.append(rate / train_rate)
        results[name] = (statistics.median(rates), statistics.median(ratios))
    return results


def _child_peak_rss_mb(command: list[str], env: dict) -> float:
    """Peak RSS of one child process, read from its own ``/proc/<pid>/status`` (``VmHWM``).

    ``getrusage(RUSAGE_CHILDREN)`` would also count the parent's pages at fork time (2.3 GB
    after the throughput runs, more than the training run itself), so the child is polled.
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


def render(rows: list[dict], rates: dict, rss: tuple[float, str], acc: dict | None) -> str:
    lines = [
        "# stn_lab benchmark", "",
        f"Machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, batch {BATCH}, "
        "in-memory data. Command: `make bench` (`python -m stn_lab.bench`).", "",
        "## Training and inference throughput (img/s)", "",
        "| px | STN train | STN infer | STN-light train | CNN train | CNN infer "
        "| STN/CNN step | STN-light/CNN step | STN-floor/CNN step "
        "| Lightning/plain STN | Lightning/plain CNN |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['stn_train']:.0f} | {r['stn_infer']:.0f} "
            f"| {r['stn_light_train']:.0f} | {r['cnn_train']:.0f} | {r['cnn_infer']:.0f} "
            f"| {r['stn_cnn_ratio']:.2f}x | {r['stn_light_cnn_ratio']:.2f}x "
            f"| {r['stn_floor_cnn_ratio']:.2f}x "
            f"| {r['stn_lightning_ratio']:.2f} | {r['cnn_lightning_ratio']:.2f} |"
        )
    lines += ["", "## Layout: channels-last (default) against NCHW", "",
              "| px | STN train NCHW | CNN train NCHW | STN infer NCHW | CNN infer NCHW "
              "| STN step speed-up | CNN step speed-up |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {r['size']} | {r['stn_nchw_train']:.0f} | {r['cnn_nchw_train']:.0f} "
        f"| {r['stn_nchw_infer']:.0f} | {r['cnn_nchw_infer']:.0f} "
        f"| {r['stn_layout_speedup']:.2f}x | {r['cnn_layout_speedup']:.2f}x |"
        for r in rows
    ]
    heading = f"## Data pipeline (28 px, batches of {loaded_batch()} as training loads them, CPU)"
    lines += ["", heading, "",
              "| set | img/s | x fastest training (CNN, 28 px) |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {k} | {rate:.0f} | {ratio:.1f}x |" for k, (rate, ratio) in rates.items()]
    lines += ["", f"Peak RSS of a 28x28 training run ({rss[1]}): {rss[0]:.0f} MB", ""]
    if acc:
        lines += [f"## Accuracy, tutorial (default) vs light localiser (Fashion-MNIST-RTS, "
                  f"{acc['epochs']} epochs, test split)", "",
                  "| localiser | mean test acc | per seed |", "|---|---|---|"]  # fmt: skip
        for name in ("tutorial", "light"):
            runs = acc[name]
            per_seed = ", ".join(f"{100 * v:.2f}%" for v in runs)
            lines.append(f"| {name} | {100 * statistics.mean(runs):.2f}% | {per_seed} |")
        lines.append("")
    targets = [
        ("Lightning/plain >= 0.95", all(
            min(r["stn_lightning_ratio"], r["cnn_lightning_ratio"]) >= 0.95 for r in rows)),
        *((f"{label}: STN/CNN step <= 1.3 at 28 and 60", all(
            r[f"{m}_cnn_ratio"] <= 1.3 for r in rows if r["size"] in (28, 60)))
          for m, label in (("stn", "default localiser"), ("stn_light", "light localiser"),
                           ("stn_floor", "floor (any localiser)"))),
        ("data >= 10x fastest training", min(ratio for _, ratio in rates.values()) >= 10),
        ("peak RSS <= 2048 MB", rss[0] <= 2048),
    ]  # fmt: skip
    if acc:
        as_good = statistics.mean(acc["light"]) >= statistics.mean(acc["tutorial"])
        targets.append(("light localiser: acc >= tutorial's", as_good))
    lines += ["## Targets", "", "| target | met |", "|---|---|"]
    lines += [f"| {name} | {'yes' if ok else 'NO'} |" for name, ok in targets]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    tune_cpu_runtime()  # as the train entry point does, for both the plain and the Lightning path
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-Trainer banners
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description="stn_lab throughput and memory benchmark")
    parser.add_argument("--quick", action="store_true", help="28 px only, few steps (< 1 min)")
    parser.add_argument("--out", type=Path, default=Path("bench/results.md"))
    parser.add_argument(
        "--accuracy-epochs",
        type=int,
        default=0,
        help="also train both localisers this many epochs on Fashion-MNIST-RTS",
    )
    parser.add_argument("--accuracy-seeds", type=int, default=2, help="seeds per localiser")
    args = parser.parse_args(argv)
    sizes, steps, turns = ((28,), 30, 3) if args.quick else ((28, 42, 60), 200, 30)
    rows = []
    for size in sizes:
        print(f"measuring {size} px ...", flush=True)
        rows.append(throughput(size, steps, turns))
    print("measuring the data pipeline ...", flush=True)
    rates = data_pipeline(3 if args.quick else 9)
    print("measuring peak RSS of a 28x28 run ...", flush=True)
    rss = peak_rss_mb(20 if args.quick else 200)
    acc = None
    if args.accuracy_epochs:
        print("training both localisers on Fashion-MNIST-RTS ...", flush=True)
        acc = {"epochs": args.accuracy_epochs,
               **accuracy(args.accuracy_epochs, args.accuracy_seeds)}  # fmt: skip
    table = render(rows, rates, rss, acc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
