"""``python -m stn_lab.bench``: throughput, Lightning's overhead, data-pipeline speed and memory.

Prints what it measured and refreshes those sections of ``bench/results.md`` (each section
sits between ``<!-- bench:NAME -->`` markers, so the prose around them and the sections this run
did not measure stay as they are). The machine is noisy (+-40% run to run), so every target is a
ratio of two measurements taken in alternation within one run: models take turns in runs of 10
steps, Lightning and the plain loop likewise, and each ratio is the median of the per-turn
ratios.

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
  epochs on Fashion-MNIST-RTS (minutes per epoch on a CPU).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import logging
import os
import re
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
from stn_lab.config_path import CONFIG_DIR
from stn_lab.config_path import compose_config as compose_cfg
from stn_lab.cpu_runtime import tune_cpu_runtime
from stn_lab.module import ClassifierModule

LIGHT_LOCALISER = ["localiser_size=light"]
# What every STN costs whatever its localiser: the localiser reads one averaged pixel (a 64x
# pool covers every bench size) straight into the head. Sampling, grid generation and the
# classifier's input gradient remain: the floor of the STN/CNN step ratio.
FLOOR_LOCALISER = ["localiser_size.channels=[]", "localiser_size.kernel_sizes=[]",
                   "localiser_size.hidden=[]", "localiser_size.input_downsample=64"]  # fmt: skip
NCHW = ["channels_last=false"]  # the layout the default (channels-last) is compared against
MODELS = {"stn": ["model=stn"], "stn_light": ["model=stn", *LIGHT_LOCALISER],
          "stn_floor": ["model=stn", *FLOOR_LOCALISER], "cnn": ["model=cnn"],
          "stn_nchw": ["model=stn", *NCHW], "cnn_nchw": ["model=cnn", *NCHW]}  # fmt: skip
BATCH = 64
WARMUP = 10  # untimed steps before timing either path
CHUNK = 10  # consecutive steps of one model (or one path) before the next takes its turn
# Lightning/plain workloads: (model, raw px, distortion); RTS places 28 px on a 42 px canvas.
OVERHEAD_WORKLOADS = [("stn", 28, "none"), ("cnn", 28, "none"),
                      ("stn", 28, "RTS"), ("cnn", 28, "RTS")]  # fmt: skip
# Issue 13's floors for Lightning/plain: the default workload, and the cheapest model.
OVERHEAD_TARGETS = {("stn", "RTS"): 0.95, ("cnn", "none"): 0.85}
ANCHOR_RUN = ["data=fashion_mnist", "trainer.max_epochs=1"]
ANCHOR_REFERENCES = ("stn_lab", "tutorial", "tutorial_tensors")  # the processes timed in turn
RESULTS = Path("bench/results.md")  # the report; docs/performance.md explains it


def setup(model: str, size: int, n_train: int, distortion: str = "none", extra=()):
    """A seeded (cfg, datamodule, network, module) on in-memory synthetic images of ``size``
    px, distorted afresh in every training batch by ``distortion`` (RTS: onto 42 px);
    ``extra``: more overrides."""
    cfg = compose_cfg([
        *MODELS[model], "data=synthetic", f"data.image_size={size}", f"data.num_train={n_train}",
        "data.num_test=64", f"data.batch_size={BATCH}", f"distortion={distortion}", *extra,
    ])  # fmt: skip
    datamodule, network, module = build(cfg)
    datamodule.setup()
    return cfg, datamodule, network, module


class PlainLoop:
    """A plain PyTorch training loop over the DataModule's batches (the reference): forward,
    cross-entropy, backward and the run's configured optimiser (fused Adam by default). Call it
    to run one step; it returns that step's seconds."""

    def __init__(self, cfg, datamodule, network):
        self.datamodule, self.network = datamodule, network
        self.optimizer = instantiate(cfg.optimizer)(network.parameters())
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


def throughput(size: int, steps: int) -> dict:
    """Train/inference img/s per model, and the within-run ratios, at one image size."""
    torch.manual_seed(0)
    parts = {m: setup(m, size, n_train=BATCH * (steps + WARMUP + 5)) for m in MODELS}
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
    return row


class _Interleave(L.Callback):
    """Runs the plain loop between Lightning's batches and times both.

    Every ``CHUNK`` Lightning batches the plain loop takes ``CHUNK`` steps. Lightning's time is
    that from the end of one plain turn to the start of the next: ``CHUNK`` whole turns of its
    loop (data, hooks, training_step, backward, optimiser, logging) and nothing of the plain
    loop. Alternating turn by turn makes the machine's slow phases hit both paths alike.
    """

    def __init__(self, plain: PlainLoop):
        self.plain = plain
        self.lightning_seconds: list[float] = []
        self.plain_seconds: list[float] = []
        self.last_end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step < WARMUP or trainer.global_step % CHUNK:
            return
        begin = time.perf_counter()
        if self.last_end is not None:
            self.lightning_seconds.append(begin - self.last_end)
        self.plain_seconds.append(sum(self.plain() for _ in range(CHUNK)))
        self.last_end = time.perf_counter()


class LossOnlyModule(ClassifierModule):
    """Lightning's own loop at its cheapest: a training step that computes the loss and
    nothing else (no training metrics, fault check or logging). Timed against the same plain
    loop, it is the floor that Lightning/plain can reach under automatic optimisation."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)


def lightning_vs_plain(model: str, size: int, distortion: str, turns: int) -> dict:
    """Lightning/plain throughput over ``turns`` alternating turns of ``CHUNK`` steps each (after
    ``WARMUP`` untimed Lightning steps and one untimed plain turn), for fresh copies of one
    model on the same images; with each path's median ms per step. For the workloads with a
    target, the same again with :class:`LossOnlyModule` gives Lightning's floor."""
    row = {"model": model, "distortion": distortion}
    floor = (model, distortion) in OVERHEAD_TARGETS
    n_train = BATCH * (WARMUP + CHUNK * (turns + 2))
    for path in ("lightning", "floor") if floor else ("lightning",):
        floor_module = ["module._target_=stn_lab.bench.LossOnlyModule"] if path == "floor" else []
        cfg, datamodule, _, module = setup(model, size, n_train, distortion, floor_module)
        _, plain_data, plain_network, _ = setup(model, size, n_train, distortion)
        timer = _Interleave(PlainLoop(cfg, plain_data, plain_network))
        trainer = instantiate(
            cfg.trainer, max_epochs=-1, max_steps=WARMUP + CHUNK * turns + 1,
            limit_val_batches=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
            num_sanity_val_steps=0,
        )  # fmt: skip
        trainer.fit(module, datamodule=datamodule)
        # Turn k of Lightning follows plain turn k (plain turn 0 warmed the plain loop's caches).
        plain, light = timer.plain_seconds[1:], timer.lightning_seconds
        row["px"] = datamodule.image_size
        row[f"{path}_ratio"] = statistics.median(p / x for p, x in zip(plain, light, strict=True))
        if path == "lightning":
            row["plain_ms"] = 1000 * statistics.median(plain) / CHUNK
            row["lightning_ms"] = 1000 * statistics.median(light) / CHUNK
    return row


def data_pipeline(turns: int) -> dict[str, tuple[float, float]]:
    """Per distortion set: its img/s alone (28 px batches of ``BATCH``, as training distorts
    them, the CPU's rate), and that rate over the fastest model's training rate (the
    28 px CNN in the plain loop), the two measured in alternating turns and the ratio the median
    over turns."""
    names = sorted(p.stem for p in (CONFIG_DIR / "distortion").glob("*.yaml") if p.stem != "none")
    x = torch.rand(BATCH, 1, 28, 28)
    cfg, datamodule, network, _ = setup("cnn", 28, n_train=BATCH * 50)
    train_step = PlainLoop(cfg, datamodule, network)
    for _ in range(WARMUP):
        train_step()
    results = {}
    for name in names:
        distortion = instantiate(compose_cfg([f"distortion={name}"]).distortion)
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


def tutorial_stn_epoch(files: dict[str, str], as_written: bool) -> None:
    """One epoch of the PyTorch STN tutorial's own loop (its network, SGD at lr 0.01, batch 64,
    then its test pass), on Fashion-MNIST.

    ``as_written``: the tutorial's data path, torchvision's dataset with per-image ``ToTensor``
    and ``Normalize`` through 4 loader workers; ``files["root"]`` holds the dataset in
    torchvision's layout. Otherwise a stricter reference: the same loop over a DataLoader of the
    IDX tensors (``files["train_images"]`` ...), normalised once up front.

    Self-contained (imports inside, nothing from stn_lab): the anchor runs its source alone in
    a fresh interpreter, so that process pays for its own imports only, as the tutorial does.
    """
    import gzip

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn, optim
    from torch.utils.data import DataLoader, TensorDataset

    def read(path: str) -> torch.Tensor:
        raw = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
        header = 4 + 4 * raw[3]
        return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=header).copy())

    def dataset(split: str):
        if as_written:
            from torchvision import datasets, transforms

            normalise = transforms.Compose(
                [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
            )
            return datasets.FashionMNIST(files["root"], train=split == "train", transform=normalise)
        images = read(files[f"{split}_images"]).view(-1, 1, 28, 28).float() / 255
        labels = read(files[f"{split}_labels"]).long()
        return TensorDataset((images - 0.1307) / 0.3081, labels)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
            self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
            self.conv2_drop = nn.Dropout2d()
            self.fc1 = nn.Linear(320, 50)
            self.fc2 = nn.Linear(50, 10)
            self.localization = nn.Sequential(
                nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
                nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            )  # fmt: skip
            self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 6))
            self.fc_loc[2].weight.data.zero_()
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

        def stn(self, x):
            theta = self.fc_loc(self.localization(x).view(-1, 10 * 3 * 3)).view(-1, 2, 3)
            return F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False))

        def forward(self, x):
            x = self.stn(x)
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = F.relu(self.fc1(x.view(-1, 320)))
            x = F.dropout(x, training=self.training)
            return F.log_softmax(self.fc2(x), dim=1)

    workers = 4 if as_written else 0
    train_loader = DataLoader(dataset("train"), batch_size=64, shuffle=True, num_workers=workers)
    test_loader = DataLoader(dataset("test"), batch_size=64, shuffle=True, num_workers=workers)
    model = Net()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for data, target in train_loader:
        optimizer.zero_grad()
        F.nll_loss(model(data), target).backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            correct += int((model(data).argmax(1) == target).sum())
    print(f"tutorial STN, 1 epoch: test accuracy {correct / len(test_loader.dataset):.4f}")


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

    cfg = compose_cfg(ANCHOR_RUN)
    datamodule = instantiate(cfg.data)
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


# ---------------------------------------------------------------------------- report
def _met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def render_throughput(rows: list[dict]) -> list[str]:
    lines = [
        "### Training and inference throughput (img/s, plain loop)", "",
        "| px | STN train | STN infer | STN-light train | CNN train | CNN infer "
        "| STN/CNN step | STN-light/CNN step | STN-floor/CNN step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    lines += [
        f"| {r['size']} | {r['stn_train']:.0f} | {r['stn_infer']:.0f} "
        f"| {r['stn_light_train']:.0f} | {r['cnn_train']:.0f} | {r['cnn_infer']:.0f} "
        f"| {r['stn_cnn_ratio']:.2f}x | {r['stn_light_cnn_ratio']:.2f}x "
        f"| {r['stn_floor_cnn_ratio']:.2f}x |"
        for r in rows
    ]
    lines += ["", "### Layout: channels-last (default) against NCHW", "",
              "| px | STN train NCHW | CNN train NCHW | STN infer NCHW | CNN infer NCHW "
              "| STN step speed-up | CNN step speed-up |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {r['size']} | {r['stn_nchw_train']:.0f} | {r['cnn_nchw_train']:.0f} "
        f"| {r['stn_nchw_infer']:.0f} | {r['cnn_nchw_infer']:.0f} "
        f"| {r['stn_layout_speedup']:.2f}x | {r['cnn_layout_speedup']:.2f}x |"
        for r in rows
    ]
    for m, label in (("stn", "default localiser"), ("stn_light", "light localiser"),
                     ("stn_floor", "floor (any localiser)")):  # fmt: skip
        ok = all(r[f"{m}_cnn_ratio"] <= 1.3 for r in rows if r["size"] in (28, 60))
        lines.append(f"- Target, {label}: STN/CNN step <= 1.3 at 28 and 60 px: {_met(ok)}")
    return lines


def render_overhead(rows: list[dict]) -> list[str]:
    lines = [
        "### Lightning against a plain PyTorch loop (one optimiser step per batch)",
        "",
        "Floor: the same Lightning loop with a training step that only computes the loss "
        "(`LossOnlyModule`), against the same plain loop.",
        "",
        "| model | px | plain ms/step | Lightning ms/step | Lightning/plain | floor/plain "
        "| target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = OVERHEAD_TARGETS.get((r["model"], r["distortion"]))
        verdict = "" if target is None else f">= {target}: {_met(r['lightning_ratio'] >= target)}"
        floor = f"{r['floor_ratio']:.3f}" if "floor_ratio" in r else ""
        px = f"{r['px']} ({r['distortion']})" if r["distortion"] != "none" else str(r["px"])
        lines.append(
            f"| {r['model'].upper()} | {px} | {r['plain_ms']:.1f} | {r['lightning_ms']:.1f} "
            f"| {r['lightning_ratio']:.3f} | {floor} | {verdict} |"
        )
    return lines


def render_data(rates: dict, batch: int) -> list[str]:
    lines = [f"### Data pipeline (28 px, batches of {batch} as training distorts them, CPU)", "",
             "| set | img/s | x fastest training (CNN, 28 px) |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {k} | {rate:.0f} | {ratio:.1f}x |" for k, (rate, ratio) in rates.items()]
    ok = min(ratio for _, ratio in rates.values()) >= 10
    return [*lines, "", f"- Target: every set >= 10x the fastest training: {_met(ok)}"]


def render_memory(rss: tuple[float, str]) -> list[str]:
    return ["### Memory", "", f"Peak RSS of a 28x28 training run ({rss[1]}): {rss[0]:.0f} MB", "",
            f"- Target: <= 2048 MB: {_met(rss[0] <= 2048)}"]  # fmt: skip


def render_anchor(result: dict) -> list[str]:
    return [
        "### Anchor: a 1-epoch STN run against the PyTorch tutorial's loop", "",
        f"Whole processes, wall time, median of {result['runs']} runs each in alternation: "
        f"`python -m stn_lab.train {' '.join(ANCHOR_RUN)}` (train, validation, test, "
        "checkpoints and pictures) against the tutorial's own STN loop and test pass "
        "(`tutorial_stn_epoch` in `stn_lab/bench.py`): as written (torchvision's dataset, "
        "per-image transforms, 4 loader workers), and the same loop over pre-normalised "
        "tensors (a stricter reference than the tutorial itself).", "",
        "| stn_lab | tutorial as written | stn_lab/tutorial | tutorial on tensors "
        "| stn_lab/tutorial on tensors |", "|---|---|---|---|---|",
        f"| {result['stn_lab']:.1f} s | {result['tutorial']:.1f} s "
        f"| {result['ratio_tutorial']:.2f} | {result['tutorial_tensors']:.1f} s "
        f"| {result['ratio_tutorial_tensors']:.2f} |", "",
        f"- Target: stn_lab ahead of the tutorial's own loop (< 1): "
        f"{_met(result['ratio_tutorial'] < 1)}",
    ]  # fmt: skip


def render_accuracy(acc: dict) -> list[str]:
    lines = [f"### Accuracy, tutorial (default) vs light localiser (Fashion-MNIST-RTS, "
             f"{acc['epochs']} epochs, test split)", "",
             "| localiser | mean test acc | per seed |", "|---|---|---|"]  # fmt: skip
    for name in ("tutorial", "light"):
        per_seed = ", ".join(f"{100 * v:.2f}%" for v in acc[name])
        lines.append(f"| {name} | {100 * statistics.mean(acc[name]):.2f}% | {per_seed} |")
    ok = statistics.mean(acc["light"]) >= statistics.mean(acc["tutorial"])
    return [*lines, "", f"- Target: light localiser as accurate as the tutorial's: {_met(ok)}"]


def provenance(argv: list[str]) -> str:
    """When, on what and by which command a section was measured."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    command = " ".join(["python -m stn_lab.bench", *argv])
    return (f"_Measured {datetime.date.today()} at commit {commit}: {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}, batch {BATCH}, `{command}`._")  # fmt: skip


def refresh(path: Path, sections: dict[str, list[str]], stamp: str) -> str:
    """Write each section between its ``<!-- bench:NAME -->`` markers in ``path`` (appended when
    the file lacks them; a new file holds the sections alone) and return the file's text."""
    text = path.read_text() if path.exists() else "# stn_lab benchmark\n"
    for name, lines in sections.items():
        block = "\n".join([f"<!-- bench:{name} -->", stamp, "", *lines, f"<!-- /bench:{name} -->"])
        old = re.search(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", text, re.DOTALL)
        if old:
            text = text[: old.start()] + block + text[old.end() :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    user_env = dict(os.environ)  # before tuning: the anchor's tutorial runs untuned
    tune_cpu_runtime()  # as the train entry point does, for both the plain and the Lightning path
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-Trainer banners
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description="stn_lab throughput and memory benchmark")
    parser.add_argument(
        "--quick", action="store_true", help="few steps, 28 px (a minute); writes only with --out"
    )
    parser.add_argument("--out", type=Path, help=f"the file to refresh (default: {RESULTS})")
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
    args = parser.parse_args(argv)
    sizes, steps, turns = ((28,), 30, 3) if args.quick else ((28, 42, 60), 200, 30)
    sections: dict[str, list[str]] = {}
    rows = []
    for size in sizes:
        print(f"measuring throughput at {size} px ...", flush=True)
        rows.append(throughput(size, steps))
    sections["throughput"] = render_throughput(rows)
    print("measuring Lightning against the plain loop ...", flush=True)
    overhead = [lightning_vs_plain(*workload, turns) for workload in OVERHEAD_WORKLOADS]
    sections["overhead"] = render_overhead(overhead)
    print("measuring the data pipeline ...", flush=True)
    sections["data"] = render_data(data_pipeline(3 if args.quick else 9), BATCH)
    print("measuring peak RSS of a 28x28 run ...", flush=True)
    sections["memory"] = render_memory(peak_rss_mb(20 if args.quick else 200))
    if args.anchor:
        print("timing a 1-epoch run against the tutorial's loop ...", flush=True)
        sections["anchor"] = render_anchor(anchor(args.anchor_runs, user_env))
    if args.accuracy_epochs:
        print("training both localisers on Fashion-MNIST-RTS ...", flush=True)
        acc = {"epochs": args.accuracy_epochs,
               **accuracy(args.accuracy_epochs, args.accuracy_seeds)}  # fmt: skip
        sections["accuracy"] = render_accuracy(acc)
    stamp = provenance(sys.argv[1:] if argv is None else argv)
    print("\n\n".join("\n".join(lines) for lines in sections.values()))
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        refresh(out, sections, stamp)
        print(f"refreshed {', '.join(sections)} in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
