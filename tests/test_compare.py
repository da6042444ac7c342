"""Tests for ``stn_lab.compare`` on hand-made run folders (no training, no torch)."""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stn_lab import compare

STN = {
    "model": "stn", "localiser": "conv", "localiser_net": "light", "activation": "relu",
    "transform": "affine",
}  # fmt: skip
STN_LEAKY = {**STN, "activation": "leakyrelu"}
STN_PROJ = {**STN, "transform": "projective"}
CNN = {
    "model": "cnn", "localiser": "n/a", "localiser_net": "n/a", "activation": "n/a",
    "transform": "n/a",
}  # fmt: skip
DATA = "fashion_mnist_distorted"
CLASSES = ["T-shirt/top", "Trouser", "Pullover"]

# Chosen accuracies. Equal n and equal sample std (0.01) in each compared pair make the
# Welch-Satterthwaite df exactly 2 * (n - 1) = 4, so the critical value comes from a t table.
ACC = {
    "stn": [0.90, 0.91, 0.92],  # mean 0.91, std 0.01
    "cnn": [0.79, 0.80, 0.81],  # mean 0.80, std 0.01  -> far from stn
    "leaky": [0.905, 0.915, 0.925],  # mean 0.915, std 0.01 -> overlaps stn heavily
    "proj": [0.93],  # single seed -> n too small
}
T_975_DF4 = 2.776445  # t table: 97.5% quantile, 4 degrees of freedom


def write_metrics(run_dir: Path, payload: dict | str, hydra: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    if hydra:
        (run_dir / ".hydra").mkdir(exist_ok=True)
        (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    text = payload if isinstance(payload, str) else json.dumps(payload)
    (run_dir / "metrics.json").write_text(text)
    return run_dir


def metrics(choices: dict, seed: int, acc: float, loss: float | None = None, **extra) -> dict:
    model = choices["model"]
    data = {
        "schema_version": 1,
        "status": "completed",
        "error": None,
        "seed": seed,
        "choices": {
            **choices,
            "data": DATA,
            "distortion": "RTS",
            "trainer": "default",
            "experiment": None,
        },
        "overrides": [f"model={model}", f"seed={seed}"],
        "class_names": CLASSES,
        "test": {
            "acc": acc,
            "loss": 1.0 - acc if loss is None else loss,
            "acc_per_class": [acc - 0.01, acc + 0.02, acc - 0.01],
            "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        },
        "epochs": 2,
        "seconds_per_epoch": [10.0 + seed, 12.0 + seed],
        "params": {"total": 5000 if model == "stn" else 3000, "stn": 2000 if model == "stn" else 0},
        "best_checkpoint": "checkpoints/epoch=1-step=10.ckpt",
    }
    data.update(extra)
    return data


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """A logs/ tree: a multirun sweep, single runs, and four broken runs."""
    root = tmp_path / "logs"
    sweep = root / "multiruns" / "2024-05-01" / "12-00-00"
    (sweep).mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for name, choices in [("stn", STN), ("cnn", CNN), ("leaky", STN_LEAKY)]:
        for seed, acc in enumerate(ACC[name]):
            write_metrics(sweep / str(job), metrics(choices, seed, acc))
            job += 1
    write_metrics(root / "runs" / "2024-05-02" / "proj", metrics(STN_PROJ, 0, ACC["proj"][0]))
    # Broken runs: failed with an error, unfinished, half-written JSON, unknown schema version.
    failed = metrics(STN, 7, 0.1, status="failed", error="CUDA out of memory\nTraceback: ...")
    write_metrics(root / "runs" / "failed", failed)
    unfinished = root / "runs" / "unfinished"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "config.yaml").write_text("seed: 3\n")
    write_metrics(root / "runs" / "half", '{"schema_version": 1, "status": "compl')
    write_metrics(root / "runs" / "future", metrics(STN, 9, 0.5, schema_version=99))
    return root


def run_main(logs: Path, out: Path, capsys) -> tuple[int, str, str]:
    code = compare.main([str(logs), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- t distribution and Welch
@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139), (30, 2.042272)],
)
def test_t_quantile_matches_table(df: int, expected: float) -> None:
    assert compare.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-5)
    assert compare.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-5)


def test_t_quantile_other_levels_and_large_df() -> None:
    assert compare.t_quantile(0.995, 3) == pytest.approx(5.840909, abs=1e-5)
    assert compare.t_quantile(0.95, 5) == pytest.approx(2.015048, abs=1e-5)
    assert compare.t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert compare.t_quantile(0.5, 3.3) == 0.0
    # Fractional df (Welch): the CDF at the quantile gives back the probability.
    assert compare.t_cdf(compare.t_quantile(0.975, 5.37), 5.37) == pytest.approx(0.975, abs=1e-9)


def test_welch_ci_equal_variance_known_answer() -> None:
    res = compare.welch_ci(ACC["cnn"], ACC["stn"])
    assert res is not None
    se = math.sqrt(0.01**2 / 3 + 0.01**2 / 3)
    assert res.diff == pytest.approx(0.11)
    assert res.df == pytest.approx(4.0)
    assert res.low == pytest.approx(0.11 - T_975_DF4 * se, abs=1e-6)
    assert res.high == pytest.approx(0.11 + T_975_DF4 * se, abs=1e-6)
    assert res.significant


def test_welch_ci_unequal_variances_uses_satterthwaite_df() -> None:
    a = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, var 5/3
    b = [2.0, 6.0]  # mean 4.0, var 8
    va, vb = (5 / 3) / 4, 8 / 2
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 1)
    res = compare.welch_ci(a, b)
    assert res is not None
    assert res.df == pytest.approx(df)
    half = compare.t_quantile(0.975, df) * math.sqrt(va + vb)
    assert (res.low, res.high) == pytest.approx((1.5 - half, 1.5 + half))
    assert not res.significant


def test_welch_ci_needs_two_per_group() -> None:
    assert compare.welch_ci([0.9], [0.8, 0.85]) is None


def test_varied_key_treats_na_as_wildcard_only_across_models() -> None:
    stn = (*STN.values(), DATA, "RTS")
    cnn = (*CNN.values(), DATA, "RTS")
    assert compare.varied_key(cnn, stn) == "model"
    assert compare.varied_key(stn, (*STN_LEAKY.values(), DATA, "RTS")) == "activation"
    assert compare.varied_key(cnn, (*CNN.values(), "mnist", "RTS")) == "data"
    assert compare.varied_key(cnn, (*CNN.values(), DATA, "R")) == "distortion"
    assert compare.varied_key(stn, (*STN_LEAKY.values(), "mnist", "RTS")) is None  # two keys
    assert compare.varied_key(cnn, (*STN.values(), "mnist", "RTS")) is None  # model and data
    assert compare.varied_key(stn, ("stn", "n/a", "light", "relu", "affine", DATA, "RTS")) is None


def test_welch_ci_zero_variance_collapses_to_the_difference() -> None:
    res = compare.welch_ci([0.9, 0.9], [0.8, 0.8])
    assert res is not None
    assert res.low == res.high == pytest.approx(-0.1)
    assert res.significant
    same = compare.welch_ci([0.9, 0.9], [0.9, 0.9])
    assert same is not None and not same.significant


def test_missing_choice_reads_as_na(tmp_path: Path) -> None:
    data = metrics(STN, 0, 0.9)
    del data["choices"]["distortion"]
    write_metrics(tmp_path / "r", data)
    (run,), failed = compare.load_runs([tmp_path])
    assert not failed
    assert run.key == (*STN.values(), DATA, "n/a")


# ---------------------------------------------------------------- loading
def test_load_runs_lists_broken_runs_with_reasons(logs: Path) -> None:
    runs, failed = compare.load_runs([logs])
    assert len(runs) == 10
    by_name = {f.path.name: f for f in failed}
    assert set(by_name) == {"failed", "unfinished", "half", "future"}
    assert by_name["failed"].status == "failed"
    assert by_name["failed"].reason == "CUDA out of memory"
    assert by_name["failed"].seed == 7
    assert by_name["unfinished"].status == "unfinished"
    assert "no metrics.json" in by_name["unfinished"].reason
    assert by_name["half"].status == "unreadable"
    assert "not valid JSON" in by_name["half"].reason
    assert by_name["future"].status == "unknown schema"
    assert "schema_version 99" in by_name["future"].reason


def test_group_and_aggregate(logs: Path) -> None:
    runs, _ = compare.load_runs([logs])
    groups = compare.group_runs(runs)
    assert sorted(len(v) for v in groups.values()) == [1, 3, 3, 3]
    stats = {g.key[0] + "/" + g.key[3] + "/" + g.key[4]: g for g in compare.aggregate_all(groups)}
    stn = stats["stn/relu/affine"]
    assert stn.n == 3 and stn.seeds == [0, 1, 2]
    assert stn.acc_mean == pytest.approx(0.91)
    # Sample std by hand: deviations -0.01, 0, 0.01 -> sqrt(0.0002 / 2) = 0.01.
    assert stn.acc_std == pytest.approx(math.sqrt((0.01**2 + 0 + 0.01**2) / 2))
    assert stn.loss_mean == pytest.approx(0.09)
    assert stn.acc_per_class == pytest.approx([0.90, 0.93, 0.90])
    assert stn.class_names == CLASSES
    assert stn.seconds_per_epoch == pytest.approx(12.0)  # mean of 11, 12, 13
    assert (stn.params_total, stn.params_stn) == (5000, 2000)
    cnn = stats["cnn/n/a/n/a"]
    assert cnn.acc_mean == pytest.approx(0.80)
    assert cnn.params_stn == 0
    proj = stats["stn/relu/projective"]
    assert proj.n == 1 and proj.acc_std is None and proj.loss_std is None


def test_pair_differences(logs: Path) -> None:
    runs, _ = compare.load_runs([logs])
    stats = compare.aggregate_all(compare.group_runs(runs))
    diffs = compare.pair_differences(stats)
    rows = {(d.varied, d.a.key, d.b.key): d for d in diffs}
    stn, cnn = (*STN.values(), DATA, "RTS"), (*CNN.values(), DATA, "RTS")
    leaky, proj = (*STN_LEAKY.values(), DATA, "RTS"), (*STN_PROJ.values(), DATA, "RTS")
    assert set(rows) == {
        ("model", cnn, stn),
        ("model", cnn, leaky),
        ("model", cnn, proj),
        ("activation", leaky, stn),
        ("transform", stn, proj),
    }
    se = math.sqrt(2 * 0.01**2 / 3)
    stn_vs_cnn = rows[("model", cnn, stn)]
    assert stn_vs_cnn.diff == pytest.approx(0.11)
    assert stn_vs_cnn.welch.low == pytest.approx(0.11 - T_975_DF4 * se, abs=1e-6)
    assert stn_vs_cnn.welch.high == pytest.approx(0.11 + T_975_DF4 * se, abs=1e-6)
    assert stn_vs_cnn.verdict == "significant"
    relu_vs_leaky = rows[("activation", leaky, stn)]
    assert relu_vs_leaky.diff == pytest.approx(-0.005)
    assert relu_vs_leaky.welch.low == pytest.approx(-0.005 - T_975_DF4 * se, abs=1e-6)
    assert relu_vs_leaky.welch.high == pytest.approx(-0.005 + T_975_DF4 * se, abs=1e-6)
    assert relu_vs_leaky.verdict == "no significant difference"
    assert rows[("transform", stn, proj)].verdict == "n too small"
    assert rows[("model", cnn, proj)].welch is None


# ---------------------------------------------------------------- CLI and outputs
def test_main_writes_all_outputs(logs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    code, stdout, stderr = run_main(logs, out, capsys)
    assert code == 0
    for name in ("compare.md", "compare.csv", "compare.png", "differences.csv"):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes cleaned up
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = (out / "compare.md").read_text()
    assert md in stdout  # the markdown is printed
    assert "91.00 ± 1.00" in md and "80.00 ± 1.00" in md
    assert "| 93.00 |" in md  # n = 1: no ± std
    failed_section = md.split("## Failed or unfinished runs")[1]
    for name in ("failed", "unfinished", "half", "future"):
        assert f"runs/{name}`" in failed_section
    assert "CUDA out of memory" in failed_section
    assert "Traceback" not in failed_section  # only the error's first line
    assert "4 failed or unfinished" in stderr

    rows = read_csv(out / "compare.csv")
    assert len(rows) == 4
    stn = next(
        r
        for r in rows
        if r["model"] == "stn" and r["activation"] == "relu" and r["transform"] == "affine"
    )
    assert float(stn["test_acc_mean"]) == pytest.approx(0.91)
    assert float(stn["test_acc_std"]) == pytest.approx(0.01)
    assert stn["seeds"] == "0;1;2"
    assert float(stn["acc_class_Trouser"]) == pytest.approx(0.93)
    proj = next(r for r in rows if r["transform"] == "projective")
    assert proj["n"] == "1" and proj["test_acc_std"] == ""

    diffs = read_csv(out / "differences.csv")
    assert len(diffs) == 5
    # Both stn-relu and stn-leakyrelu pair with cnn (n/a is a wildcard); pick the relu one.
    model_rows = [
        r
        for r in diffs
        if r["varied"] == "model" and r["b_activation"] == "relu" and r["b_transform"] == "affine"
    ]
    assert len(model_rows) == 1
    model_row = model_rows[0]
    se = math.sqrt(2 * 0.01**2 / 3)
    assert float(model_row["ci_low"]) == pytest.approx(0.11 - T_975_DF4 * se, abs=1e-6)
    assert float(model_row["ci_high"]) == pytest.approx(0.11 + T_975_DF4 * se, abs=1e-6)
    assert model_row["result"] == "significant"
    act = next(r for r in diffs if r["varied"] == "activation")
    assert (act["a_value"], act["b_value"]) == ("leakyrelu", "relu")
    assert act["result"] == "no significant difference"
    assert next(r for r in diffs if r["varied"] == "transform")["result"] == "n too small"

    differences_section = md.split("## Differences")[1].split("## Failed")[0]
    assert "**significant**" in differences_section
    assert "no significant difference" in differences_section
    assert "n too small" in differences_section


def test_main_exit_2_when_no_runs(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    code, stdout, stderr = run_main(empty, tmp_path / "out", capsys)
    assert code == 2
    assert "no runs found" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    code, _, stderr = run_main(tmp_path / "missing", tmp_path / "out", capsys)
    assert code == 2 and "no runs found" in stderr


def test_main_exit_1_when_only_failed_runs(tmp_path: Path, capsys) -> None:
    logs = tmp_path / "logs"
    write_metrics(logs / "a", metrics(STN, 0, 0.1, status="failed", error="boom"))
    code, stdout, stderr = run_main(logs, tmp_path / "out", capsys)
    assert code == 1
    assert "boom" in stdout and "no completed runs" in stderr
    assert (tmp_path / "out" / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_module_runs_as_script(logs: Path, tmp_path: Path) -> None:
    src = str(Path(compare.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "script_out"
    proc = subprocess.run(
        [sys.executable, "-m", "stn_lab.compare", str(logs), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "## Differences" in proc.stdout
    assert (out / "compare.md").is_file()


def test_compare_imports_no_model_or_training_code() -> None:
    tree = ast.parse(Path(compare.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0] if node.level == 0 else "<relative>")
    allowed = set(sys.stdlib_module_names) | {"numpy", "matplotlib", "stn_lab"}
    assert imported <= allowed, imported - allowed
    from_stn_lab = {
        node.module for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stn_lab")
    }  # fmt: skip
    assert from_stn_lab <= {"stn_lab.atomic"}, from_stn_lab  # stdlib-only helpers, no models
