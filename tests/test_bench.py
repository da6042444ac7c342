"""The bench's parts run and report what they measured (speed itself is measured by ``make bench``,
never here): the anchor's reference, the PyTorch STN tutorial's loop, as written and on tensors,
runs offline on IDX files laid out the way each side reads them; the Lightning/plain comparison
runs on a Trainer built by ``build_trainer``; the report refreshes its own sections."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from stn_lab.benchmarks.tutorial import tutorial_stn_epoch
from stn_lab.data.sources import copy_idx_folder


@pytest.mark.parametrize("as_written", [True, False])
def test_tutorial_reference_trains_and_tests_offline(
    tmp_path, make_idx_dataset, capsys, as_written
):
    folder = make_idx_dataset(tmp_path / "raw", n_train=128, n_test=64)
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        for kind in ("images", "labels"):
            plain = folder / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
            packed = plain.with_name(plain.name + ".gz")  # as Debian's package ships them
            packed.write_bytes(gzip.compress(plain.read_bytes()))
            files[f"{split}_{kind}"] = str(packed)
    copy_idx_folder(folder, tmp_path / "torchvision/FashionMNIST/raw")  # as the anchor does
    assert sorted(p.name for p in (tmp_path / "torchvision/FashionMNIST/raw").iterdir()) == [
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    ]  # fmt: skip
    tutorial_stn_epoch({**files, "root": str(tmp_path / "torchvision")}, as_written)
    accuracy = float(capsys.readouterr().out.rsplit(" ", 1)[1])
    assert accuracy * 64 == pytest.approx(round(accuracy * 64), abs=0.005)  # 64 images, 4 decimals


def test_refresh_rewrites_its_own_sections_and_keeps_the_rest(tmp_path):
    from stn_lab.benchmarks.report import refresh

    report = tmp_path / "bench" / "results.md"
    first = refresh(report, {"overhead": ["old table"], "memory": ["1000 MB"]}, "_stamp 1_")
    assert first.startswith("# stn_lab benchmark\n")  # a new file: a title and the sections
    report.write_text(first + "\n## Before and after\n\nprose kept\n")
    text = refresh(report, {"overhead": ["new table"]}, "_stamp 2_")
    assert "new table" in text and "old table" not in text
    assert "_stamp 1_\n\n1000 MB" in text  # the section this run did not measure stays
    assert text.endswith("## Before and after\n\nprose kept\n")
    assert text.count("<!-- bench:overhead -->") == 1 == text.count("<!-- /bench:overhead -->")


def test_the_committed_report_holds_every_section_the_bench_writes():
    from stn_lab.benchmarks.report import RESULTS

    text = (Path(__file__).resolve().parents[1] / RESULTS).read_text()
    for name in ("throughput", "overhead", "data", "memory", "anchor", "accuracy"):
        assert f"<!-- bench:{name} -->\n_Measured " in text, name
    assert "## Before and after" in text


def test_lightning_vs_plain_times_both_paths_on_the_runs_own_trainer(monkeypatch):
    from stn_lab import build
    from stn_lab.benchmarks import overhead

    built = []

    def recording_build_trainer(cfg, **overrides):
        trainer = build.build_trainer(cfg, **overrides)
        built.append((overrides["callbacks"], trainer))
        return trainer

    monkeypatch.setattr(overhead, "build_trainer", recording_build_trainer)
    monkeypatch.setattr(overhead, "WARMUP", 2)  # short turns: this checks the wiring, not speed
    monkeypatch.setattr(overhead, "CHUNK", 2)
    row = overhead.lightning_vs_plain("cnn", 28, "none", turns=1)
    # The CNN has a target, so its floor (LossOnlyModule) is measured too: two Trainers, each
    # with only the timing callback, no logger and no checkpoints.
    assert len(built) == 2
    for callbacks, trainer in built:
        assert [type(c).__name__ for c in callbacks] == ["_Interleave"]
        assert trainer.loggers == [] and trainer.checkpoint_callback is None
    assert row["model"] == "cnn" and row["px"] == 28
    assert row["lightning_ratio"] > 0 and row["floor_ratio"] > 0
    assert row["plain_ms"] > 0 and row["lightning_ms"] > 0
