"""``python -m stn_lab.evaluate`` (a Hydra app) on tiny runs trained in-process.

Three one-epoch runs on synthetic data (STN, CNN, and an STN on the RTS 42x42 canvas) are
trained once per module; every test then scores their checkpoints, through the CLI's
``main`` (in-process, as Hydra parses ``sys.argv``) or the functions a notebook uses.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from stn_lab import evaluate as ev
from stn_lab import robustness as rb
from stn_lab.build import build
from stn_lab.config_path import compose_config
from stn_lab.errors import ConfigError
from stn_lab.train import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA = ["data=synthetic", "data.num_train=128", "data.num_test=64"]
TINY = [
    *DATA, "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]  # fmt: skip
RUNS = {
    "stn": ["model=stn"],
    "cnn": ["model=cnn"],
    "stn_rts": ["model=stn", "distortion=RTS"],
}


def train_run(run_dir: Path, overrides: list[str]) -> Path:
    """Train one tiny run into ``run_dir`` as the CLI would lay it out; return its best ckpt."""
    overrides = [*TINY, *overrides]
    cfg = compose_config(overrides)
    choices = dict(compose_config(overrides, return_hydra_config=True).hydra.runtime.choices)
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


@pytest.fixture
def evaluate_cli(monkeypatch, capsys):
    """Run ``python -m stn_lab.evaluate <args>`` in-process: ``(exit code, output)``."""

    def run(args: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["stn_lab.evaluate", *args])
        try:
            ev.main()
            code = 0
        except SystemExit as exit:
            code = exit.code
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


def clean_accuracy(ckpt: Path, overrides: list[str], pad_to: int | None = None) -> float:
    """The checkpoint's accuracy on the undistorted test images, computed without evaluate.py."""
    _, network, _ = build(compose_config([*TINY, *overrides]))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    network.load_state_dict({k.removeprefix("network."): v for k, v in state.items()})
    data = instantiate(compose_config([*TINY, *overrides, "distortion=none"]).data)
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


@pytest.mark.parametrize("kind", rb.KINDS)
def test_each_kind_writes_csv_png_and_one_log_line_per_value(
    runs, kind, tmp_path, evaluate_cli, caplog
):
    caplog.set_level("INFO", logger="stn_lab")
    ckpt, overrides = runs["stn"]
    code, output = evaluate_cli([f"ckpt_path={ckpt}", f"robustness={kind}", f"out_dir={tmp_path}"])
    assert code == 0, output
    rows = read_rows(tmp_path / f"robustness_{kind}.csv")
    assert list(rows[0]) == ["model", "value", "accuracy"]
    assert len(rows) == rb.DEFAULT_POINTS[kind] and {r["model"] for r in rows} == {"stn"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    (identity,) = [r for r in rows if float(r["value"]) == rb.IDENTITY[kind]]
    assert float(identity["accuracy"]) == pytest.approx(clean_accuracy(ckpt, overrides), abs=1e-6)
    assert (tmp_path / f"robustness_{kind}.png").read_bytes()[:8] == PNG_MAGIC
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"stn | {kind} ")]
    assert len(lines) == len(rows) and "acc" in lines[0] and "64 images" in lines[0]


def test_sweep_ranges():
    assert rb.sweep_values("rotation", 28) == list(range(-180, 181, 30))
    assert rb.sweep_values("scale", 28) == pytest.approx([0.5 + 0.1 * i for i in range(11)])
    assert 1.0 in rb.sweep_values("scale", 28)
    assert rb.sweep_values("shift", 28) == [0, 2, 4, 6, 8, 10, 12, 14]  # centre reaches the edge
    assert rb.sweep_values("shift", 42, num_points=4) == [0, 7, 14, 21]
    with pytest.raises(ConfigError, match="rotation, scale, shift"):
        rb.sweep_values("skew", 28)


def test_shift_moves_the_image_along_x():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3, 3] = 1.0
    params = rb.distortion_params("shift", 2.0, 1)
    moved = rb.AffineDistortion().apply(image, params)
    assert moved[0, 0].argmax().item() == 3 * 8 + 5


def test_canvas_model_sees_its_training_size(runs, tmp_path, evaluate_cli):
    """An RTS model (42x42 canvas) is swept on centred 42x42 images; shifts go up to 21 px."""
    ckpt, overrides = runs["stn_rts"]
    for kind in ("shift", "rotation"):
        args = [f"ckpt_path={ckpt}", f"robustness={kind}", f"out_dir={tmp_path}", "num_points=4"]
        code, output = evaluate_cli(args)
        assert code == 0, output
    shift = read_rows(tmp_path / "robustness_shift.csv")
    assert [float(r["value"]) for r in shift] == [0, 7, 14, 21]
    expected = clean_accuracy(ckpt, overrides, pad_to=42)
    assert float(shift[0]["accuracy"]) == pytest.approx(expected, abs=1e-6)
    assert len(read_rows(tmp_path / "robustness_rotation.csv")) == 4


def test_robustness_curve_and_score_functions(runs):
    ckpt, overrides = runs["cnn"]
    loaded = ev.load(ckpt, data=None, distortion=None)
    assert loaded.label == "cnn" and loaded.datamodule.distortion is None
    loaded.module.train()
    curve = rb.robustness_curve(loaded.module, loaded.datamodule, "rotation", [90.0, 0.0], limit=10)
    assert [v for v, _ in curve] == [90.0, 0.0]
    assert all(a * 10 == round(a * 10) for _, a in curve)  # 10 images
    assert loaded.module.training  # its own mode is restored
    full = rb.robustness_curve(loaded.module, loaded.datamodule, "scale", [1.0])
    assert full[0][1] == pytest.approx(clean_accuracy(ckpt, overrides), abs=1e-6)
    assert rb.score(loaded.module, loaded.datamodule) == full[0][1]


def test_compare_overlays_both_models(runs, tmp_path, evaluate_cli):
    stn, cnn = runs["stn"][0], runs["cnn"][0]
    args = [f"ckpt_path={stn}", f"compare={cnn}", "robustness=scale", "num_points=5"]
    code, output = evaluate_cli([*args, f"out_dir={tmp_path}"])
    assert code == 0, output
    curves = rb.read_csv(tmp_path / "robustness_scale.csv")
    assert list(curves) == ["stn", "cnn"] and all(len(c) == 5 for c in curves.values())
    for name in ("stn", "cnn"):
        identity = dict(curves[name])[1.0]
        assert identity == pytest.approx(clean_accuracy(*runs[name]), abs=1e-6)
    assert (tmp_path / "robustness_scale.png").read_bytes()[:8] == PNG_MAGIC


def test_out_dir_defaults_to_the_run_folder(runs, evaluate_cli):
    ckpt = runs["cnn"][0]
    code, output = evaluate_cli([f"ckpt_path={ckpt}", "robustness=shift", "limit=8"])
    assert code == 0, output
    assert len(read_rows(ckpt.parent.parent / "robustness_shift_limit8.csv")) == 8
    assert not (ckpt.parent.parent / "robustness_shift.csv").exists()


def test_score_on_the_runs_own_distortion_matches_its_test_accuracy(runs, evaluate_cli):
    """Without robustness=, the test accuracy: on the run's own data and distortion it is the
    accuracy the run recorded (the same best checkpoint, the same fixed test images)."""
    ckpt = runs["stn_rts"][0]
    recorded = json.loads((ckpt.parent.parent / "metrics.json").read_text())["test"]["acc"]
    code, output = evaluate_cli([f"ckpt_path={ckpt}", "distortion=RTS"])
    assert code == 0, output
    (row,) = read_rows(ckpt.parent.parent / "score_synthetic_RTS.csv")
    assert row == {"model": "stn", "data": "synthetic", "distortion": "RTS", "images": "64",
                   "accuracy": f"{recorded:.6f}"}  # fmt: skip


def test_score_defaults_to_the_runs_own_data_and_distortion(runs, evaluate_cli):
    """No data=, no distortion=: the run's own test images (RTS here), so the score is the one
    the run recorded; a limited look writes its own file and leaves the full one alone."""
    ckpt = runs["stn_rts"][0]
    run_dir = ckpt.parent.parent
    recorded = json.loads((run_dir / "metrics.json").read_text())["test"]["acc"]
    code, output = evaluate_cli([f"ckpt_path={ckpt}"])
    assert code == 0, output
    (row,) = read_rows(run_dir / "score_synthetic_RTS.csv")
    assert (row["distortion"], row["accuracy"]) == ("RTS", f"{recorded:.6f}")
    full = (run_dir / "score_synthetic_RTS.csv").read_bytes()
    code, output = evaluate_cli([f"ckpt_path={ckpt}", "limit=10"])
    assert code == 0, output
    assert read_rows(run_dir / "score_synthetic_RTS_limit10.csv")[0]["images"] == "10"
    assert (run_dir / "score_synthetic_RTS.csv").read_bytes() == full


def test_a_checkpoint_of_another_program_is_named_as_such(tmp_path, evaluate_cli):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, other)
    code, output = evaluate_cli([f"ckpt_path={other}"])
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert output.startswith(f"error: {other} is not a stn_lab checkpoint")


def test_a_results_folder_that_cannot_be_written_is_one_line(runs, tmp_path, evaluate_cli):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    code, output = evaluate_cli([f"ckpt_path={runs['cnn'][0]}", f"out_dir={blocked}/out"])
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert output.startswith("error: could not write the results: ")


def test_score_a_checkpoint_anywhere_on_any_data_and_distortion(runs, tmp_path, evaluate_cli):
    """A checkpoint copied out of its run folder loads by itself; data= and distortion= pick
    the test images (a 28 px model takes R's 28 px images, and RTS's 42 px ones do not fit)."""
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(runs["stn"][0], ckpt)
    compare = runs["cnn"][0]
    args = [f"ckpt_path={ckpt}", f"compare={compare}", *DATA, "data.eval_seed=3"]
    code, output = evaluate_cli([*args, "distortion=R", "limit=50"])
    assert code == 0, output
    rows = read_rows(tmp_path / "score_synthetic_R_limit50.csv")  # beside the checkpoint
    assert [(r["model"], r["distortion"], r["images"]) for r in rows] == [
        ("stn", "R", "50"),
        ("cnn", "R", "50"),
    ]
    code, output = evaluate_cli([*args, "distortion=RTS"])
    assert code == 2 and output.strip().splitlines() == [
        "error: the model takes 28px images, smaller than the 42px test images"
    ]
    code, output = evaluate_cli([f"ckpt_path={ckpt}"])  # no data=, no run folder to read it from
    assert code == 2 and output.startswith(f"error: no run config at {tmp_path}")


def test_data_the_model_cannot_take_is_one_line(runs, evaluate_cli):
    ckpt = runs["cnn"][0]
    code, output = evaluate_cli([f"ckpt_path={ckpt}", *DATA, "data.channels=3"])
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert "takes 1-channel images of 10 classes; synthetic has 3-channel images" in output


@pytest.mark.slow
def test_unusable_checkpoint_is_one_clear_line_from_the_real_cli(tmp_path):
    """Exit 2, one line, no traceback (a subprocess, as a user runs it)."""
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    proc = subprocess.run(
        [sys.executable, "-m", "stn_lab.evaluate", f"ckpt_path={bad}", "robustness=rotation"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"error: cannot load checkpoint {bad}: ")


def test_missing_or_truncated_checkpoint_exit_2(runs, tmp_path, evaluate_cli):
    truncated = tmp_path / "run" / "checkpoints" / "bad.ckpt"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(runs["stn"][0].read_bytes()[:1000])
    cases = {
        tmp_path / "nope.ckpt": "error: checkpoint not found: ",
        truncated: "error: cannot load checkpoint ",
    }
    for ckpt, start in cases.items():
        code, output = evaluate_cli([f"ckpt_path={ckpt}", "robustness=scale"])
        assert code == 2 and output.startswith(start), output
        assert len(output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["robustness=skew"], "unknown robustness kind 'skew'; valid choices: rotation, scale, "),
        (["robustness=shift", "num_points=1"], "num_points must be a whole number >= 2, got 1"),
        (["robustness=shift", "limit=all"], "limit must be a whole number >= 1, got 'all'"),
        (["device=tpu"], "device must be auto, cpu or cuda, got 'tpu'"),
        ([], "ckpt_path=<run>/checkpoints/<name>.ckpt is required"),
    ],
)
def test_bad_values_are_one_line_with_exit_2(runs, args, message, evaluate_cli):
    ckpt = [f"ckpt_path={runs['stn'][0]}"] if args else []
    code, output = evaluate_cli([*ckpt, *args])
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert output.startswith("error: ") and message in output
