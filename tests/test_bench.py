"""The bench's anchor reference: the PyTorch STN tutorial's loop, as written and on tensors, runs
offline on IDX files laid out the way each side reads them (speed is measured by ``make bench``,
never here)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from stn_lab.bench import tutorial_stn_epoch
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
    from stn_lab.bench import refresh

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
    from stn_lab.bench import RESULTS

    text = (Path(__file__).resolve().parents[1] / RESULTS).read_text()
    for name in ("throughput", "overhead", "data", "memory", "anchor", "accuracy"):
        assert f"<!-- bench:{name} -->\n_Measured " in text, name
    assert "## Before and after" in text
