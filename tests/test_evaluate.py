"""Robustness curves (``python -m stn_lab.evaluate``) on tiny runs trained in-process.

Three one-epoch runs on synthetic data (STN, CNN, and an STN on the RTS 42x42 canvas) are
trained once per module;
every test then sweeps their checkpoints.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stn_lab import evaluate as ev
from stn_lab.build import build
from stn_lab.train import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = [
    "data=synthetic", "data.num_train=128", "data.num_test=64", "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
]  # fmt: skip
RUNS = {
    "stn": ["model=stn"],
    "cnn": ["model=cnn"],
    "stn_rts": ["model=stn", "data.distortion=RTS"],
}


def train_run(run_dir: Path, overrides: list[str]) -> Path:
    """Train one tiny run into ``run_dir`` as the CLI would lay it out; return its best ckpt."""
    overrides = [*TINY, *overrides]
    cfg = compose_cfg(overrides)
    choices = {o.split("=")[0]: o.split("=")[1] for o in overrides if o.startswith("model=")}
    record = train(cfg, run_dir, choices, overrides)
    # In-process train() does not write Hydra's copy of the composed config: do it here.
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir / record["best_checkpoint"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches run faster on one thread, and much faster when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    root = tmp_path_factory.mktemp("runs")
    return {name: (train_run(root / name, o), o) for name, o in RUNS.items()}


def clean_accuracy(ckpt: Path, overrides: list[str], pad_to: int | None = None) -> float:
    """The checkpoint's accuracy on the undistorted test images, computed without evaluate.py."""
    _, network, _ = build(compose_cfg([*TINY, *overrides]))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    network.load_state_dict({k.removeprefix("network."): v for k, v in state.items()})
    data = instantiate(compose_cfg([*TINY, *overrides, "data.distortion=none"]).data)
    data.setup()
    images, labels = data.splits["test"].tensors
    if pad_to:  # centred on the canvas: zero borders all round
        border = (pad_to - images.shape[-1]) // 2
        images = F.pad(images, (border,) * 4)
    with torch.no_grad():
        preds = network.eval()(data.prepare_images(images, train=False)).argmax(dim=1)
    return float((preds == labels).float().mean())


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_main(args: list[str], capsys) -> tuple[int, str]:
    code = ev.main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("kind", ev.KINDS)
def test_each_kind_writes_csv_png_and_one_log_line_per_value(runs, kind, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="stn_lab")
    ckpt, overrides = runs["stn"]
    code, output = run_main(
        [f"ckpt_path={ckpt}", f"robustness={kind}", f"out_dir={tmp_path}"], capsys
    )
    assert code == 0, output
    rows = read_rows(tmp_path / f"robustness_{kind}.csv")
    assert list(rows[0]) == ["model", "value", "accuracy"]
    assert len(rows) == ev.DEFAULT_POINTS[kind] and {r["model"] for r in rows} == {"stn"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    (identity,) = [r for r in rows if float(r["value"]) == ev.IDENTITY[kind]]
    assert float(identity["accuracy"]) == pytest.approx(clean_accuracy(ckpt, overrides), abs=1e-6)
    assert (tmp_path / f"robustness_{kind}.png").read_bytes()[:8] == PNG_MAGIC
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"stn | {kind} ")]
    assert len(lines) == len(rows) and "acc" in lines[0] and "64 images" in lines[0]


def test_sweep_ranges():
    assert ev.sweep_values("rotation", 28) == list(range(-180, 181, 30))
    assert ev.sweep_values("scale", 28) == pytest.approx([0.5 + 0.1 * i for i in range(11)])
    assert 1.0 in ev.sweep_values("scale", 28)
    assert ev.sweep_values("shift", 28) == [0, 2, 4, 6, 8, 10, 12, 14]  # centre reaches the edge
    assert ev.sweep_values("shift", 42, num_points=4) == [0, 7, 14, 21]
    with pytest.raises(ev.UsageError, match="rotation, scale, shift"):
        ev.sweep_values("skew", 28)


def test_shift_moves_the_image_along_x():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3, 3] = 1.0
    params = ev.distortion_params("shift", 2.0, 1)
    moved = ev.AffineDistortion().apply(image, params)
    assert moved[0, 0].argmax().item() == 3 * 8 + 5


def test_canvas_model_sees_its_training_size(runs, tmp_path, capsys):
    """An RTS model (42x42 canvas) is swept on centred 42x42 images; shifts go up to 21 px."""
    ckpt, overrides = runs["stn_rts"]
    for kind in ("shift", "rotation"):
        code, output = run_main(
            [f"ckpt_path={ckpt}", f"robustness={kind}", f"out_dir={tmp_path}", "num_points=4"],
            capsys,
        )
        assert code == 0, output
    shift = read_rows(tmp_path / "robustness_shift.csv")
    assert [float(r["value"]) for r in shift] == [0, 7, 14, 21]
    expected = clean_accuracy(ckpt, overrides, pad_to=42)
    assert float(shift[0]["accuracy"]) == pytest.approx(expected, abs=1e-6)
    assert len(read_rows(tmp_path / "robustness_rotation.csv")) == 4


def test_robustness_curve_function(runs):
    ckpt, overrides = runs["cnn"]
    loaded = ev.load_run(ckpt)
    assert loaded.label == "cnn" and loaded.datamodule.distortion is None
    loaded.module.train()
    curve = ev.robustness_curve(loaded.module, loaded.datamodule, "rotation", [90.0, 0.0], limit=10)
    assert [v for v, _ in curve] == [90.0, 0.0]
    assert all(a * 10 == round(a * 10) for _, a in curve)  # 10 images
    assert loaded.module.training  # its own mode is restored
    full = ev.robustness_curve(loaded.module.network, loaded.datamodule, "scale", [1.0])
    assert full[0][1] == pytest.approx(clean_accuracy(ckpt, overrides), abs=1e-6)


def test_compare_overlays_both_models(runs, tmp_path, capsys):
    stn, cnn = runs["stn"][0], runs["cnn"][0]
    args = [f"ckpt_path={stn}", f"compare={cnn}", "robustness=scale", "num_points=5"]
    code, output = run_main([*args, f"out_dir={tmp_path}"], capsys)
    assert code == 0, output
    curves = ev.read_csv(tmp_path / "robustness_scale.csv")
    assert list(curves) == ["stn", "cnn"] and all(len(c) == 5 for c in curves.values())
    for name in ("stn", "cnn"):
        identity = dict(curves[name])[1.0]
        assert identity == pytest.approx(clean_accuracy(*runs[name]), abs=1e-6)
    assert (tmp_path / "robustness_scale.png").read_bytes()[:8] == PNG_MAGIC


def test_out_dir_defaults_to_the_run_folder(runs, capsys):
    ckpt = runs["cnn"][0]
    code, output = run_main([f"ckpt_path={ckpt}", "robustness=shift", "limit=8"], capsys)
    assert code == 0, output
    assert len(read_rows(ckpt.parent.parent / "robustness_shift.csv")) == 8


def test_checkpoint_of_another_model_is_one_clear_line(runs, tmp_path):
    """A CNN checkpoint inside an STN run folder: exit 2, one line, no traceback (real CLI)."""
    stn_run = tmp_path / "stn_run"
    shutil.copytree(runs["stn"][0].parent.parent / ".hydra", stn_run / ".hydra")
    foreign = stn_run / "checkpoints" / "foreign.ckpt"
    foreign.parent.mkdir()
    shutil.copy(runs["cnn"][0], foreign)
    proc = subprocess.run(
        [sys.executable, "-m", "stn_lab.evaluate", f"ckpt_path={foreign}", "robustness=rotation"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ") and "does not fit the model" in lines[0]
    assert "missing key" in lines[0] and "model=stn" in lines[0]


def test_size_mismatch_is_reported(runs, tmp_path, capsys):
    """An STN checkpoint trained on 28x28 inside an RTS (42x42) run folder."""
    rts_run = tmp_path / "rts_run"
    shutil.copytree(runs["stn_rts"][0].parent.parent / ".hydra", rts_run / ".hydra")
    (rts_run / "checkpoints").mkdir()
    shutil.copy(runs["stn"][0], rts_run / "checkpoints" / "x.ckpt")
    code, output = run_main([f"ckpt_path={rts_run}/checkpoints/x.ckpt", "robustness=shift"], capsys)
    assert code == 2 and "size mismatch" in output and len(output.strip().splitlines()) == 1


def test_missing_corrupt_or_orphan_checkpoint_exit_2(runs, tmp_path, capsys):
    run_dir = runs["stn"][0].parent.parent
    shutil.copytree(run_dir / ".hydra", tmp_path / "run" / ".hydra")
    bad = tmp_path / "run" / "checkpoints" / "bad.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(runs["stn"][0].read_bytes()[:1000])  # truncated
    orphan = tmp_path / "elsewhere" / "model.ckpt"  # not inside a run folder
    orphan.parent.mkdir()
    shutil.copy(runs["stn"][0], orphan)
    cases = {
        run_dir / "checkpoints" / "nope.ckpt": "error: checkpoint not found: ",
        bad: "error: cannot read checkpoint ",
        orphan: "error: no run config at ",
    }
    for ckpt, start in cases.items():
        code, output = run_main([f"ckpt_path={ckpt}", "robustness=scale"], capsys)
        assert code == 2 and output.startswith(start), output
        assert len(output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["robustness=skew"],
            "unknown robustness kind 'skew'; valid choices: rotation, scale, shift",
        ),
        (["robustness=shift", "points=3"], "unknown argument 'points'"),
        (["robustness=shift", "num_points=1"], "num_points must be >= 2"),
        (["robustness=shift", "limit=all"], "limit must be an integer"),
        (["rotation"], "arguments are key=value"),
        ([], "missing ckpt_path= and robustness="),
    ],
)
def test_usage_errors(runs, args, message, capsys):
    ckpt = runs["stn"][0]
    args = args if not args or args[0] == "rotation" else [f"ckpt_path={ckpt}", *args]
    code, output = run_main(args, capsys)
    assert code == 2 and message in output
    assert output.startswith("error: ") and "usage: python -m stn_lab.evaluate" in output
