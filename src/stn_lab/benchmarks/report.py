"""The bench's report: each measurement as a Markdown section with its targets, and how
``bench/results.md`` is refreshed (each section between ``<!-- bench:NAME -->`` markers, so the
prose around them and the sections a run did not measure stay as they are)."""

from __future__ import annotations

import datetime
import os
import re
import statistics
import subprocess
from pathlib import Path

import torch

from stn_lab.benchmarks.overhead import OVERHEAD_TARGETS
from stn_lab.benchmarks.processes import ANCHOR_RUN
from stn_lab.benchmarks.workloads import BATCH

RESULTS = Path("bench/results.md")  # the report; docs/performance.md explains it


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
        "(`tutorial_stn_epoch` in `stn_lab/benchmarks/tutorial.py`): as written "
        "(torchvision's dataset, per-image transforms, 4 loader workers), and the same loop "
        "over pre-normalised tensors (a stricter reference than the tutorial itself).", "",
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
