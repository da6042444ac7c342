"""Tests for ``stn_lab.compare`` on run folders written as ``train`` writes them (records from
the real writer and composed configs, see ``test_compare_helpers``; no training, no torch)."""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats import multitest, weightstats
from test_compare_helpers import CLASSES, read_csv, record, v1, write_run

from stn_lab import compare, run_record
from stn_lab.atomic import atomic_write
from stn_lab.compare import groups, notes, records, stats, tex

DATA = "fashion_mnist_distorted"
STN = ("model=stn", f"data={DATA}")
STN_LEAKY = (*STN, "activation=leakyrelu")
STN_PROJ = (*STN, "transform=projective")
CNN = ("model=cnn", f"data={DATA}")
SYNTHETIC_CNN = ("model=cnn", "data=synthetic", "trainer.max_epochs=2")

# Chosen accuracies. Equal n and equal sample std (0.01) in each compared pair make the
# Welch-Satterthwaite df exactly 2 * (n - 1) = 4, so the critical value comes from a t table.
# stn and leaky run seeds 0-2 (paired), cnn seeds 3-5 (Welch against both).
ACC = {
    "stn": [0.90, 0.91, 0.92],  # mean 0.91, std 0.01
    "cnn": [0.79, 0.80, 0.81],  # mean 0.80, std 0.01  -> far from stn
    "leaky": [0.915, 0.905, 0.925],  # mean 0.915, std 0.01; stn - leaky: -0.015, 0.005, -0.005
    "proj": [0.93],  # single seed -> inconclusive, no test
}
FIRST_SEED = {"stn": 0, "cnn": 3, "leaky": 0}
T_975_DF4 = 2.776445  # t table: 97.5% quantile, 4 degrees of freedom
T_975_DF2 = 4.302653  # and 2 degrees of freedom


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """A logs/ tree: a multirun sweep, single runs, and four broken runs."""
    root = tmp_path / "logs"
    sweep = root / "multiruns" / "2024-05-01" / "12-00-00"
    (sweep).mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for name, overrides in [("stn", STN), ("cnn", CNN), ("leaky", STN_LEAKY)]:
        for seed, acc in enumerate(ACC[name], start=FIRST_SEED[name]):
            write_run(sweep / str(job), record(seed, acc, *overrides))
            job += 1
    write_run(root / "runs" / "2024-05-02" / "proj", record(0, ACC["proj"][0], *STN_PROJ))
    # Broken runs: failed with an error, unfinished, half-written JSON, unknown schema version.
    failed = record(7, 0.1, *STN, status="failed", error="CUDA out of memory\nTraceback: ...")
    write_run(root / "runs" / "failed", failed)
    unfinished = root / "runs" / "unfinished"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "config.yaml").write_text("seed: 3\n")
    write_run(root / "runs" / "half", '{"schema_version": 2, "status": "compl')
    write_run(root / "runs" / "future", {**record(9, 0.5, *STN), "schema_version": 99})
    return root


def run_main(logs: Path, out: Path, capsys, *flags: str) -> tuple[int, str, str]:
    code = compare.main([str(logs), "--out", str(out), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- Welch, intervals, Holm
@pytest.mark.parametrize(
    ("n", "expected"),
    [(2, 4.302653), (3, 2.776445), (6, 2.228139), (16, 2.042272)],
)
def test_welch_critical_value_matches_t_table(n: int, expected: float) -> None:
    # Equal n and equal sample std make the Welch-Satterthwaite df exactly 2 * (n - 1).
    a = [0.5 + 0.01 * i for i in range(n)]
    b = [x + 0.1 for x in a]
    res = stats.welch_ci(a, b)
    assert res is not None
    assert res.df == pytest.approx(2 * (n - 1))
    assert res.t_crit == pytest.approx(expected, abs=1e-5)
    assert (res.low, res.high) == pytest.approx((0.1 - expected * res.se, 0.1 + expected * res.se))


def test_welch_matches_statsmodels() -> None:
    a, b = [0.71, 0.74, 0.70, 0.78], [0.80, 0.86, 0.79]
    res = stats.welch_ci(a, b)
    assert res is not None
    t, p, df = weightstats.ttest_ind(b, a, usevar="unequal")
    low, high = weightstats.CompareMeans.from_data(b, a).tconfint_diff(usevar="unequal")
    assert (res.p, res.df) == pytest.approx((p, df))
    assert (res.low, res.high) == pytest.approx((low, high))


def test_mean_interval() -> None:
    x = [0.90, 0.91, 0.925]
    ci = scipy_stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert stats.mean_interval(x) == pytest.approx((ci.low, ci.high))
    assert stats.mean_interval([0.9]) is None
    assert stats.mean_interval([0.9, 0.9]) == (0.9, 0.9)  # scipy would give NaN


# Paired inputs (a[i] and b[i] share seed i) for n = 2, 3 and 5, with unequal variances.
PAIRED_CASES = [
    ([0.80, 0.83], [0.86, 0.87]),
    ([0.80, 0.81, 0.79], [0.90, 0.85, 0.95]),
    ([0.71, 0.74, 0.70, 0.78, 0.75], [0.80, 0.86, 0.79, 0.81, 0.90]),
]


@pytest.mark.parametrize(("a", "b"), PAIRED_CASES)
def test_paired_ci_matches_scipy_and_statsmodels(a: list[float], b: list[float]) -> None:
    res = stats.paired_ci(a, b)
    assert res is not None and res.test == "paired t"
    ref = scipy_stats.ttest_rel(b, a)
    ci = ref.confidence_interval(0.95)
    assert (res.low, res.high, res.p, res.df) == pytest.approx(
        (ci.low, ci.high, ref.pvalue, ref.df)
    )
    assert res.wilcoxon_p == pytest.approx(scipy_stats.wilcoxon(b, a).pvalue)
    d = weightstats.DescrStatsW([y - x for x, y in zip(a, b, strict=True)])
    assert (res.low, res.high) == pytest.approx(d.tconfint_mean(0.05))
    assert res.p == pytest.approx(d.ttest_mean(0.0)[1])


def test_paired_wilcoxon_exact_and_correlation() -> None:
    # All differences positive: the exact two-sided signed-rank p is 2 / 2**n.
    a, b = PAIRED_CASES[2]
    res = stats.paired_ci(a, b)
    assert res.wilcoxon_p == pytest.approx(2 / 2**5)
    assert res.correlation == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert stats.paired_ci(*PAIRED_CASES[1]).wilcoxon_p == pytest.approx(2 / 2**3)
    assert stats.paired_ci(*PAIRED_CASES[0]).correlation is None  # two points always give ±1
    assert stats.paired_ci([0.9], [0.8]) is None
    with pytest.raises(ValueError, match="aligned"):
        stats.paired_ci([0.9, 0.8], [0.8])


def test_paired_without_spread_collapses_to_the_difference() -> None:
    # 0.55 - 0.50 and 0.57 - 0.52 differ only by float rounding: no spread, no scipy warning.
    res = stats.paired_ci([0.50, 0.52, 0.54], [0.55, 0.57, 0.59])
    assert res.low == res.high == pytest.approx(0.05)
    assert res.p == 0.0 and res.wilcoxon_p == pytest.approx(0.25)
    same = stats.paired_ci([0.5, 0.6], [0.5, 0.6])
    assert same.p == 1.0 and same.wilcoxon_p == 1.0 and not same.significant


def test_pairs_only_when_seeds_match(tmp_path: Path) -> None:
    runs = [record(s, 0.70 + s / 100, *SYNTHETIC_CNN) for s in (0, 1, 2)]
    runs += [record(s, 0.80 + s / 50, *SYNTHETIC_CNN, "optimizer=sgd") for s in (0, 1, 2)]
    runs += [record(s, 0.75, *SYNTHETIC_CNN, "trainer.max_epochs=3") for s in (5, 6)]
    table = write_runs(tmp_path, runs)
    tests = {(d.a.label, d.b.label): d.test.test for d in compare.pair_differences(table)}
    assert tests == {
        ("optimizer=adam trainer.max_epochs=2", "optimizer=sgd trainer.max_epochs=2"): "paired t",
        ("optimizer=adam trainer.max_epochs=2", "optimizer=adam trainer.max_epochs=3"): "Welch",
    }


HOLM_CASE = ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02])  # by hand: 4p, 3p, 2p, 1p


def test_holm_hand_computed() -> None:
    p, expected = HOLM_CASE
    assert stats.holm(p) == pytest.approx(expected)
    assert stats.holm([0.04]) == [0.04]
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1


@pytest.mark.parametrize(
    "p",
    [HOLM_CASE[0], [0.001, 0.2, 0.2, 0.04, 0.5], [0.3, 0.01], [0.02, 0.02, 0.02]],
)
def test_holm_matches_statsmodels(p: list[float]) -> None:
    _, expected, _, _ = multitest.multipletests(p, method="holm")
    assert stats.holm(p) == pytest.approx(expected.tolist())


def test_welch_ci_equal_variance_known_answer() -> None:
    res = stats.welch_ci(ACC["cnn"], ACC["stn"])
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
    res = stats.welch_ci(a, b)
    assert res is not None
    assert res.df == pytest.approx(df)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (res.low, res.high) == pytest.approx((1.5 - half, 1.5 + half))
    assert not res.significant


def test_welch_ci_needs_two_per_group() -> None:
    assert stats.welch_ci([0.9], [0.8, 0.85]) is None


def test_welch_ci_zero_variance_collapses_to_the_difference() -> None:
    res = stats.welch_ci([0.9, 0.9], [0.8, 0.8])
    assert res is not None
    assert res.low == res.high == pytest.approx(-0.1)
    assert res.significant
    same = stats.welch_ci([0.9, 0.9], [0.9, 0.9])
    assert same is not None and not same.significant


def test_missing_choice_reads_as_na(tmp_path: Path) -> None:
    data = v1(record(0, 0.9, *STN))
    del data["choices"]["distortion"]
    write_run(tmp_path / "r", data)
    write_run(tmp_path / "s", v1(record(0, 0.8, *STN)))
    table = compare.build_table(compare.load_runs([tmp_path]).results)
    assert [g.label for g in table.groups] == ["distortion=RTS", "distortion=n/a"]


# ---------------------------------------------------------------- loading
def test_load_runs_lists_broken_runs_with_reasons(logs: Path) -> None:
    found = compare.load_runs([logs])
    assert len(found.results) == 10
    by_name = {f.path.name: f for f in found.failed}
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


def logs_table(logs: Path) -> compare.Table:
    return compare.build_table(compare.load_runs([logs]).results)


def test_group_and_aggregate(logs: Path) -> None:
    table = logs_table(logs)
    assert sorted(g.n for g in table.groups) == [1, 3, 3, 3]
    stats = {g.label: g for g in table.groups}
    assert set(stats) == {
        "model=cnn",
        "model=stn transform=affine activation=leakyrelu",
        "model=stn transform=affine activation=relu",
        "model=stn transform=projective activation=relu",
    }
    assert list(stats) == sorted(stats)  # groups in the order of their naming values
    stn = stats["model=stn transform=affine activation=relu"]
    assert stn.n == 3 and stn.seeds == [0, 1, 2]
    assert stn.acc_mean == pytest.approx(0.91)
    # Sample std by hand: deviations -0.01, 0, 0.01 -> sqrt(0.0002 / 2) = 0.01.
    assert stn.acc_std == pytest.approx(math.sqrt((0.01**2 + 0 + 0.01**2) / 2))
    assert stn.loss_mean == pytest.approx(0.09)
    assert stn.acc_per_class == pytest.approx([0.90, 0.93, 0.90])
    assert stn.class_names == CLASSES
    assert stn.seconds_per_epoch == pytest.approx(12.0)  # mean of 11, 12, 13
    assert (stn.params_total, stn.params_stn) == (5000, 2000)
    cnn = stats["model=cnn"]
    assert cnn.acc_mean == pytest.approx(0.80)
    assert cnn.params_stn == 0
    proj = stats["model=stn transform=projective activation=relu"]
    assert proj.n == 1 and proj.acc_std is None and proj.loss_std is None
    assert table.fixed == {
        "trainer": "default", "optimizer": "adam", "data": DATA, "distortion": "RTS",
        "arch": "tutorial",
    }  # fmt: skip


def test_pair_differences(logs: Path) -> None:
    diffs = compare.pair_differences(logs_table(logs))
    rows = {(d.varied, d.a.label, d.b.label): d for d in diffs}
    cnn, stn = "model=cnn", "model=stn transform=affine activation=relu"
    leaky = "model=stn transform=affine activation=leakyrelu"
    proj = "model=stn transform=projective activation=relu"
    assert set(rows) == {
        ("model", cnn, stn),
        ("model", cnn, leaky),
        ("model", cnn, proj),
        ("activation", leaky, stn),
        ("transform", stn, proj),
    }
    assert [d.varied for d in diffs] == ["model"] * 3 + ["transform", "activation"]
    se = math.sqrt(2 * 0.01**2 / 3)
    stn_vs_cnn = rows[("model", cnn, stn)]
    assert stn_vs_cnn.shared == "transform=affine activation=relu"
    assert stn_vs_cnn.diff == pytest.approx(0.11)
    assert stn_vs_cnn.test.low == pytest.approx(0.11 - T_975_DF4 * se, abs=1e-6)
    assert stn_vs_cnn.test.high == pytest.approx(0.11 + T_975_DF4 * se, abs=1e-6)
    assert stn_vs_cnn.verdict == "better"
    assert stn_vs_cnn.verdict_text == "B better"
    assert stn_vs_cnn.test.test == "Welch" and not stn_vs_cnn.per_seed  # seeds 0-2 vs 3-5
    relu_vs_leaky = rows[("activation", leaky, stn)]
    assert relu_vs_leaky.test.test == "paired t"  # both ran seeds 0, 1, 2
    assert relu_vs_leaky.diff == pytest.approx(-0.005)
    assert relu_vs_leaky.per_seed == pytest.approx({0: -0.015, 1: 0.005, 2: -0.005})
    half = T_975_DF2 * 0.01 / math.sqrt(3)  # the differences' std is 0.01, df = n - 1 = 2
    assert relu_vs_leaky.test.low == pytest.approx(-0.005 - half, abs=1e-6)
    assert relu_vs_leaky.test.high == pytest.approx(-0.005 + half, abs=1e-6)
    assert relu_vs_leaky.verdict == "inconclusive"  # -0.5 pp sits on the ±0.5 bound
    assert rows[("transform", stn, proj)].verdict_text == "inconclusive: needs 2+ seeds per group"
    assert rows[("model", cnn, proj)].test is None


def test_pair_differences_holm_across_tested_pairs(logs: Path) -> None:
    diffs = compare.pair_differences(logs_table(logs))
    tested = [d for d in diffs if d.test is not None]
    assert len(tested) == 3  # the projective group has one seed: no test, not in the family
    _, expected, _, _ = multitest.multipletests([d.test.p for d in tested], method="holm")
    assert [d.holm_p for d in tested] == pytest.approx(expected.tolist())
    assert any(d.holm_p > d.test.p for d in tested)  # the adjustment changed something
    assert all(d.holm_p is None for d in diffs if d.test is None)
    # One comparison in the table: nothing to adjust.
    two = [
        g
        for g in logs_table(logs).groups
        if g.label in ("model=cnn", "model=stn transform=affine activation=relu")
    ]
    (only,) = compare.pair_differences(compare.Table(two, logs_table(logs).names, {}))
    assert only.holm_p is None and only.verdict == "better"


def test_holm_can_overturn_a_raw_significance() -> None:
    def group(label: str, accs: list[float]) -> compare.GroupStats:
        values = (label,)
        seeds = [10 * ord(label) + i for i in range(len(accs))]  # no shared seeds: Welch
        return compare.GroupStats(
            key=(("x", label),), n=len(accs), seeds=seeds, accs=accs,
            acc_mean=sum(accs) / len(accs), acc_std=None, acc_ci=None, loss_mean=0.0,
            loss_std=None, label=f"x={label}", values=values,
        )  # fmt: skip

    # Three levels of one setting: three pairs, raw p of a-b just under 0.05.
    a, b, c = (
        group("a", [0.50, 0.52, 0.54]),
        group("b", [0.55, 0.57, 0.59]),
        group("c", [0.5, 0.51, 0.52]),
    )
    table = compare.Table([a, b, c], [("config", "x")], {})
    ab = next(
        d for d in compare.pair_differences(table) if (d.a.label, d.b.label) == ("x=a", "x=b")
    )
    assert ab.test.p < 0.05 and ab.test.significant
    assert ab.holm_p >= 0.05 and ab.verdict == "inconclusive"


# ---------------------------------------------------------------- CLI and outputs
def test_main_writes_all_outputs(logs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    code, stdout, stderr = run_main(logs, out, capsys)
    assert code == 0
    for name in ("compare.md", "compare.csv", "compare.png", "differences.csv", "compare.tex"):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes cleaned up
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = (out / "compare.md").read_text()
    assert md in stdout  # the markdown is printed
    # mean ± std (n) and the mean's 95% interval: 91 ± t(0.975, 2) * 1 / sqrt(3).
    assert "| 91.00 ± 1.00 (n=3) | [88.52, 93.48] |" in md and "80.00 ± 1.00 (n=3)" in md
    assert "| 93.00 (n=1) |  |" in md  # n = 1: no ± std, no interval
    failed_section = md.split("## Failed or unfinished runs")[1]
    for name in ("failed", "unfinished", "half", "future"):
        assert f"runs/{name}`" in failed_section
    assert "CUDA out of memory" in failed_section
    assert "Traceback" not in failed_section  # only the error's first line
    assert "4 failed or unfinished" in stderr

    rows = read_csv(out / "compare.csv")
    assert len(rows) == 4
    stn = next(r for r in rows if r["group"] == "model=stn transform=affine activation=relu")
    assert (stn["model"], stn["activation"], stn["transform"]) == ("stn", "relu", "affine")
    assert float(stn["test_acc_mean"]) == pytest.approx(0.91)
    assert float(stn["test_acc_std"]) == pytest.approx(0.01)
    assert stn["seeds"] == "0;1;2"
    assert float(stn["acc_class_Trouser"]) == pytest.approx(0.93)
    proj = next(r for r in rows if r["transform"] == "projective")
    assert proj["n"] == "1" and proj["test_acc_std"] == ""

    diffs = read_csv(out / "differences.csv")
    assert len(diffs) == 5
    # Both stn-relu and stn-leakyrelu pair with cnn (n/a is a wildcard); pick the relu one.
    (model_row,) = [r for r in diffs if r["varied"] == "model" and r["b_group"] == stn["group"]]
    assert model_row["a_group"] == "model=cnn"
    se = math.sqrt(2 * 0.01**2 / 3)
    assert float(model_row["ci_low"]) == pytest.approx(0.11 - T_975_DF4 * se, abs=1e-6)
    assert float(model_row["ci_high"]) == pytest.approx(0.11 + T_975_DF4 * se, abs=1e-6)
    assert (model_row["verdict"], model_row["verdict_text"]) == ("better", "B better")
    act = next(r for r in diffs if r["varied"] == "activation")
    assert "activation=leakyrelu" in act["a_group"] and "activation=relu" in act["b_group"]
    assert act["verdict"] == "inconclusive"
    assert next(r for r in diffs if r["varied"] == "transform")["verdict"] == "inconclusive"

    assert float(stn["test_acc_ci_low"]) == pytest.approx(0.91 - 4.302653 * 0.01 / math.sqrt(3))
    assert float(stn["test_acc_ci_high"]) == pytest.approx(0.91 + 4.302653 * 0.01 / math.sqrt(3))
    assert float(model_row["p_holm"]) >= float(model_row["p"]) > 0

    tex = (out / "compare.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrr}"):
        assert rule in tex
    assert (
        r"model=stn transform=affine activation=relu & 91.00 $\pm$ 1.00 (n=3) & [88.52, 93.48] \\"
        in tex
    )
    assert r"$-$0.50 & [$-$2.98, +1.98] & paired t" in tex  # a minus, not a hyphen
    assert "%" not in tex.replace(r"\%", "").split("\n", 1)[1]  # every % escaped after line 1

    per_seed = md.split("### Per-seed differences (pp)")[1].split("##")[0]
    assert "| A | B | seed 0 | seed 1 | seed 2 | mean |" in per_seed
    assert "| −1.50 |" not in per_seed and "| -1.50 | +0.50 | -0.50 | -0.50 |" in per_seed
    assert len([line for line in per_seed.splitlines() if line.startswith("|")]) == 3  # one row
    assert {r["test"] for r in diffs} == {"Welch", "paired t", ""}
    assert act["test"] == "paired t" and act["wilcoxon_p"] and act["correlation"]

    differences_section = md.split("## Differences")[1].split("## Failed")[0]
    assert "**B better**" in differences_section
    assert "inconclusive: detects" in differences_section
    assert "needs 2+ seeds per group" in differences_section


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
    write_run(logs / "a", record(0, 0.1, *STN, status="failed", error="boom"))
    code, stdout, stderr = run_main(logs, tmp_path / "out", capsys)
    assert code == 1
    assert "boom" in stdout and "no completed runs" in stderr
    assert (tmp_path / "out" / "compare.png").is_file()


def test_first_line_of_an_error_is_the_one_helper() -> None:
    assert not hasattr(records, "_first_line")
    assert records.first_line is __import__("stn_lab.errors").errors.first_line
    assert records.first_line("a\nb", records.REASON_LIMIT) == "a"


#: The one function that may import the training side, lazily: it rebuilds a run's DataModule
#: to draw disagreements.png, and nothing else in compare needs torch.
LAZY_DATA_IMPORT = ("plots.py", "load_test_images")


def test_compare_imports_no_model_or_training_code() -> None:
    package = Path(compare.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "__main__.py", "records.py", "stats.py"}
    imported: set[str] = set()
    from_stn_lab: set[str] = set()
    for module in modules:
        tree = ast.parse(module.read_text())
        exempt: set[int] = set()
        for func in ast.walk(tree):
            if isinstance(func, ast.FunctionDef) and (module.name, func.name) == LAZY_DATA_IMPORT:
                lazy = [n for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert [n.module for n in lazy] == ["hydra.utils"]
                exempt |= {id(n) for n in lazy}
        for node in ast.walk(tree):
            if id(node) in exempt:
                continue
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                name = node.module or ""
                imported.add(name.split(".")[0] if node.level == 0 else "<relative>")
                if name.startswith("stn_lab"):
                    from_stn_lab.add(name)
    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy", "matplotlib", "stn_lab"}
    assert imported <= allowed, imported - allowed
    own = {"stn_lab.atomic", "stn_lab.errors", "stn_lab.run_record"}
    own |= {f"stn_lab.compare.{m.stem}" for m in modules}
    assert from_stn_lab <= own, from_stn_lab - own  # stdlib-only helpers, no models
    # And at run time: importing compare loads neither torch, Lightning nor Hydra.
    code = (
        "import sys, stn_lab.compare; "
        "print(sorted({'torch', 'lightning', 'hydra'} & set(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stderr


# ---------------------------------------------------------------- schema v2: grouping by config
def write_runs(root: Path, runs: list[dict]) -> compare.Table:
    for i, run in enumerate(runs):
        write_run(root / str(i), run)
    return compare.build_table(compare.load_runs([root]).results)


def test_optimizer_sweep_gives_one_group_per_optimizer(tmp_path: Path) -> None:
    # -m model=cnn data=synthetic optimizer=adam,sgd seed=0,1: one group per optimizer, not n=4.
    runs = [
        record(s, 0.5 + s / 10, *SYNTHETIC_CNN, f"optimizer={o}")
        for o in ("adam", "sgd")
        for s in (0, 1)
    ]
    table = write_runs(tmp_path, runs)
    assert [(g.label, g.n, g.seeds) for g in table.groups] == [
        ("optimizer=adam", 2, [0, 1]),
        ("optimizer=sgd", 2, [0, 1]),
    ]
    assert table.fixed["model"] == "cnn" and table.fixed["data"] == "synthetic"
    (diff,) = compare.pair_differences(table)
    assert diff.varied == "optimizer"
    # Every optimizer.* value follows from the choice: one cause, a verdict.
    assert diff.causes == ("optimizer",) and not diff.confounded
    assert {"optimizer._target_", "optimizer.lr"} <= set(diff.follows)


def test_config_value_sweep_gives_one_group_per_value(tmp_path: Path) -> None:
    # optimizer=adam,sgd model.stn.lr_mult=0.5,1.0 seed=0,1: four groups, not one of 8 runs.
    runs = [
        record(s, 0.9, "model=stn", "data=synthetic", f"optimizer={o}", f"model.stn.lr_mult={m}")
        for o in ("adam", "sgd")
        for m in (0.5, 1.0)
        for s in (0, 1)
    ]
    table = write_runs(tmp_path, runs)
    assert [(g.label, g.n) for g in table.groups] == [
        ("optimizer=adam model.stn.lr_mult=0.5", 2),
        ("optimizer=adam model.stn.lr_mult=1.0", 2),
        ("optimizer=sgd model.stn.lr_mult=0.5", 2),
        ("optimizer=sgd model.stn.lr_mult=1.0", 2),
    ]
    # optimizer.lr follows from the optimizer choice, so it never names a group.
    assert [groups.setting_name(s) for s in table.names] == ["optimizer", "model.stn.lr_mult"]
    diffs = compare.pair_differences(table)
    pairs = {(d.varied, d.a.label, d.b.label) for d in diffs}
    assert len(pairs) == 4
    sgd = tuple(f"optimizer=sgd model.stn.lr_mult={m}" for m in ("0.5", "1.0"))
    assert ("model.stn.lr_mult", *sgd) in pairs
    assert (
        "optimizer",
        "optimizer=adam model.stn.lr_mult=0.5",
        "optimizer=sgd model.stn.lr_mult=0.5",
    ) in pairs
    assert sorted(d.causes for d in diffs) == [("model.stn.lr_mult",)] * 2 + [("optimizer",)] * 2


def test_cnn_pairs_with_each_stn_setting(tmp_path: Path) -> None:
    runs = [record(s, 0.8, "model=cnn", "data=synthetic") for s in (0, 1)]
    runs += [
        record(s, 0.9, "model=stn", "data=synthetic", f"model.stn.lr_mult={m}")
        for m in (0.5, 1.0)
        for s in (0, 1)
    ]
    table = write_runs(tmp_path, runs)
    labels = [g.label for g in table.groups]
    assert labels == [
        "model=cnn",
        "model=stn model.stn.lr_mult=0.5",
        "model=stn model.stn.lr_mult=1.0",
    ]
    diffs = compare.pair_differences(table)
    varied = sorted((d.varied, d.a.label, d.b.label) for d in diffs)
    assert varied == [
        ("model", "model=cnn", "model=stn model.stn.lr_mult=0.5"),
        ("model", "model=cnn", "model=stn model.stn.lr_mult=1.0"),
        ("model.stn.lr_mult", labels[1], labels[2]),
    ]
    # A CNN has no lr_mult: the value set for the STN follows from model=stn, no confound.
    assert not any(d.confounded for d in diffs)


def test_model_names_the_groups_whatever_the_choice_order(tmp_path: Path) -> None:
    # Hydra lists `model` after the STN-only groups; the CNN's n/a must not name its group.
    for model_first in (False, True):
        runs = []
        for model in ("cnn", "stn"):
            for seed in (0, 1):
                run = record(seed, 0.6 if model == "cnn" else 0.8, f"model={model}")
                choices = run["choices"]
                order = sorted(set(choices) - {"model"})
                order = ["model", *order] if model_first else [*order, "model"]
                run["choices"] = {k: choices[k] for k in order}
                runs.append(run)
        table = write_runs(tmp_path / str(model_first), runs)
        assert [g.label for g in table.groups] == ["model=cnn", "model=stn"]
        (diff,) = compare.pair_differences(table)
        assert (diff.varied, diff.a.label, diff.b.label) == ("model", "model=cnn", "model=stn")
        assert diff.causes == ("model",)


def test_a_pair_that_differs_in_two_settings_is_confounded(tmp_path: Path) -> None:
    # -m ... trainer.max_epochs=2 optimizer.lr=0.001, then trainer.max_epochs=4 optimizer.lr=0.01
    runs = [
        record(s, acc + s / 100, "model=cnn", "data=synthetic", f"trainer.max_epochs={e}",
               f"optimizer.lr={lr}")
        for e, lr, acc in ((2, 0.001, 0.15), (4, 0.01, 0.95))
        for s in (0, 1, 2)
    ]  # fmt: skip
    runs += [record(s, 0.5 + s / 100, "model=stn", "data=synthetic", "trainer.max_epochs=2",
                    "optimizer.lr=0.001") for s in (0, 1, 2)]  # fmt: skip
    table = write_runs(tmp_path, runs)
    # The labels name optimizer.lr; trainer.max_epochs varies with it in this table.
    assert [g.label for g in table.groups] == [
        "model=cnn optimizer.lr=0.001", "model=cnn optimizer.lr=0.01",
        "model=stn optimizer.lr=0.001",
    ]  # fmt: skip
    diffs = {d.varied: d for d in compare.pair_differences(table)}
    lr, model = diffs["optimizer.lr"], diffs["model"]
    assert lr.causes == ("optimizer.lr", "trainer.max_epochs") and lr.confounded
    assert (lr.verdict, lr.verdict_text) == (
        "confounded",
        "confounded: A and B differ in optimizer.lr and trainer.max_epochs",
    )
    assert lr.test.significant  # a clear difference, and still no verdict
    assert model.causes == ("model",) and model.verdict != "confounded"
    # Holm's family holds the unconfounded pair alone: nothing to adjust.
    assert lr.holm_p is None and model.holm_p is None


def test_settings_that_follow_from_a_differing_choice_do_not_confound(tmp_path: Path) -> None:
    # data=mnist_distorted is mnist with distortion=RTS: one cause, the distortion. A CNN
    # against an STN with a CoordConv localiser: the CNN's unused localiser node differs too.
    runs = [record(s, 0.9, "model=cnn", f"data={d}") for d in ("mnist", "mnist_distorted")
            for s in (0, 1)]  # fmt: skip
    runs += [record(s, 0.8, "model=stn", "localiser=coordconv", "data=mnist") for s in (0, 1)]
    table = write_runs(tmp_path, runs)
    diffs = {(d.a.label, d.b.label): d for d in compare.pair_differences(table)}
    data_pair = next(d for d in diffs.values() if d.varied == "data")
    assert data_pair.causes == ("distortion",) and not data_pair.confounded
    assert any(k.startswith("data.distortion") for k in data_pair.follows)
    model_pair = next(d for d in diffs.values() if d.varied == "model" and "mnist" in d.shared)
    assert model_pair.causes == ("model",) and not model_pair.confounded


def test_epochs_split_groups(tmp_path: Path) -> None:
    # Runs of 2 and 3 epochs are two groups, not one with "seeds 0, 0".
    runs = [record(0, 0.7, *SYNTHETIC_CNN), record(0, 0.8, *SYNTHETIC_CNN, "trainer.max_epochs=3")]
    table = write_runs(tmp_path, runs)
    assert [(g.label, g.n) for g in table.groups] == [
        ("trainer.max_epochs=2", 1),
        ("trainer.max_epochs=3", 1),
    ]
    assert not any(g.duplicates for g in table.groups)


def test_numeric_settings_sort_by_value(tmp_path: Path) -> None:
    runs = [
        record(s, 0.7 + e / 100, *SYNTHETIC_CNN, f"trainer.max_epochs={e}")
        for e in (10, 2)
        for s in (0, 1)
    ]
    table = write_runs(tmp_path, runs)
    assert [g.label for g in table.groups] == ["trainer.max_epochs=2", "trainer.max_epochs=10"]
    (diff,) = compare.pair_differences(table)
    assert (diff.a.label, diff.b.label) == ("trainer.max_epochs=2", "trainer.max_epochs=10")
    assert diff.diff == pytest.approx(0.08)


#: A learning-rate monitor, a callback that cannot change a result, added both ways.
LR_MONITOR = "lightning.pytorch.callbacks.LearningRateMonitor"
EARLY_STOPPING = "lightning.pytorch.callbacks.EarlyStopping"


def test_result_neutral_keys_do_not_split_groups(tmp_path: Path) -> None:
    neutral = [
        "paths.log_dir=elsewhere", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "+data.num_workers=4", "data.keep_on_device=false",
        "checkpoint_every_n_steps=16", "ckpt_path=last", "logger.csv.name=x",
        "callbacks.artefacts.num_images=4", "callbacks=[default,lr_monitor]",
        f"+trainer.callbacks=[{{_target_:{LR_MONITOR}}}]",
    ]  # fmt: skip
    runs = [record(0, 0.7, *SYNTHETIC_CNN), record(1, 0.8, *SYNTHETIC_CNN, *neutral)]
    assert runs[1]["config"]["trainer"]["callbacks"] == [{"_target_": LR_MONITOR}]
    table = write_runs(tmp_path, runs)
    assert [(g.label, g.n) for g in table.groups] == [("all runs", 2)]


def test_early_stopping_splits_groups_however_it_is_added(tmp_path: Path) -> None:
    group = ("callbacks=[default,early_stopping]",)
    stop = f"{{_target_:{EARLY_STOPPING},monitor:val/acc,patience:%d}}"
    monitor = f"{{_target_:{LR_MONITOR}}}"
    runs = [
        record(0, 0.7, *SYNTHETIC_CNN, *group, "callbacks.early_stopping.patience=3"),
        record(1, 0.8, *SYNTHETIC_CNN, *group, "callbacks.early_stopping.patience=5"),
        record(0, 0.6, *SYNTHETIC_CNN, f"+trainer.callbacks=[{stop % 7}]"),
        # The same early stopping beside a learning-rate monitor: the same group.
        record(1, 0.6, *SYNTHETIC_CNN, f"+trainer.callbacks=[{stop % 7},{monitor}]"),
    ]
    table = write_runs(tmp_path, runs)
    labels = [g.label for g in table.groups]
    assert len(labels) == 3
    assert "callbacks.early_stopping.patience=3" in labels[0]
    assert "callbacks.early_stopping.patience=5" in labels[1]
    assert [g.n for g in table.groups] == [1, 1, 2]
    (listed,) = [g for g in table.groups if g.n == 2]
    assert '"patience": 7' in dict(listed.key)["trainer.callbacks"]


def test_result_neutral_longest_entry_wins() -> None:
    # One definition (stn_lab.run_record), used by compare's grouping and the resume check.
    assert records.result_neutral is run_record.result_neutral
    assert run_record.result_neutral("seed")
    assert not run_record.result_neutral("seeds")  # an entry only covers whole dotted parts
    assert run_record.result_neutral("paths.log_dir")
    assert run_record.result_neutral("callbacks.best_checkpoint.every_n_train_steps")
    assert not run_record.result_neutral("callbacks.early_stopping.patience")
    assert not run_record.result_neutral("trainer.max_epochs")
    assert run_record.result_neutral("trainer.enable_progress_bar")
    assert run_record.flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}


def test_debug_flags_typed_and_from_v1_overrides() -> None:
    trainer = {"fast_dev_run": 0, "limit_val_batches": 1.0, "limit_train_batches": 5}
    assert run_record.debug_flags(trainer) == ["limit_train_batches=5"]
    assert run_record.debug_flags({"fast_dev_run": True, "overfit_batches": 0.0}) == [
        "fast_dev_run"
    ]
    # Lightning reads an int as a batch count and a float as a fraction: 1 is one batch.
    assert run_record.debug_flags({"limit_train_batches": 1, "limit_val_batches": 1.0}) == [
        "limit_train_batches=1"
    ]
    v1_record = {"overrides": ["trainer.fast_dev_run=0", "trainer.overfit_batches=2", "seed=1"]}
    assert records._debug(v1_record) == ("overfit_batches=2",)


def test_v1_records_group_by_choices_and_overrides(tmp_path: Path) -> None:
    def old(seed: int, lr_mult: str) -> dict:
        overrides = [f"model.stn.lr_mult={lr_mult}", "trainer.enable_progress_bar=false"]
        payload = v1(record(seed, 0.9, *STN, *overrides))
        payload["overrides"] += [f"hydra.run.dir=logs/{seed}"]
        return payload

    table = write_runs(tmp_path, [old(s, m) for m in ("0.5", "1.0") for s in (0, 1)])
    assert [(g.label, g.n) for g in table.groups] == [
        ("model.stn.lr_mult=0.5", 2),
        ("model.stn.lr_mult=1.0", 2),
    ]


# ---------------------------------------------------------------- duplicates
def test_duplicate_seed_counted_once_and_reported(tmp_path: Path, capsys) -> None:
    logs = tmp_path / "logs"
    for i, acc in enumerate((0.70, 0.72, 0.80)):
        write_run(logs / str(i), record(0 if i < 2 else 1, acc, *SYNTHETIC_CNN))
    code, stdout, stderr = run_main(logs, tmp_path / "out", capsys)
    assert code == 0
    table = compare.build_table(compare.load_runs([logs]).results)
    (group,) = table.groups
    assert (group.n, group.seeds, group.accs) == (2, [0, 1], [0.70, 0.80])
    assert [r.path.name for r in group.duplicates] == ["1"]
    md = (tmp_path / "out" / "compare.md").read_text()
    notes_section = md.split("## Notes")[1].split("##")[0]
    assert "Duplicate: seed 0" in notes_section and "counted once" in notes_section
    assert "duplicate seed 0" in md.split("## Results")[1].split("##")[0]
    assert "ran seed 0 more than once" in stderr
    (row,) = read_csv(tmp_path / "out" / "compare.csv")
    assert (row["n"], row["duplicate_seeds"]) == ("2", "0")


# ---------------------------------------------------------------- debug, interrupted, diverged
def test_logger_copies_of_metrics_json_are_not_runs(tmp_path: Path, capsys) -> None:
    # logger=[mlflow,wandb] keep copies of each run's metrics.json: MLflow's artifacts under
    # logs/mlruns (or mlartifacts beside a database store, or a store anywhere else), W&B's
    # files inside the run folder.
    logs = tmp_path / "logs"
    run = write_run(logs / "runs" / "a", record(0, 0.8, *SYNTHETIC_CNN))
    text = (run / "metrics.json").read_text()
    for copy in (logs / "mlruns/1/abc/artifacts", logs / "mlartifacts/1/abc/artifacts",
                 run / "wandb/offline-run-1/files", logs / "store/7/def/artifacts",
                 logs / "store/7/ghi/artifacts/record"):  # fmt: skip
        copy.mkdir(parents=True)
        (copy / "metrics.json").write_text(text)
    # An MLflow file store anywhere: meta.yaml in each experiment and run folder.
    for folder in ("store/7", "store/7/def", "store/7/ghi"):
        (logs / folder / "meta.yaml").write_text("name: stn_lab\n")
    # A sweep folder that happens to be called artifacts holds runs (they hold .hydra/).
    job = write_run(logs / "artifacts" / "0", record(1, 0.7, *SYNTHETIC_CNN))
    assert records.find_run_dirs([logs]) == sorted([run.resolve(), job.resolve()])
    code, _, _ = run_main(logs, tmp_path / "out", capsys)
    md = (tmp_path / "out" / "compare.md").read_text()
    assert (
        code == 0 and md.startswith("# Run comparison\n\n2 completed run") and "Duplicate" not in md
    )


def debug_record(seed: int, acc: float) -> dict:
    """A completed run with trainer.limit_train_batches=2, as train records it."""
    return record(seed, acc, *SYNTHETIC_CNN, "trainer.limit_train_batches=2",
                  debug=["limit_train_batches=2"])  # fmt: skip


def test_debug_runs_listed_apart_or_compared_when_asked(tmp_path: Path, capsys) -> None:
    logs = tmp_path / "logs"
    for seed in (0, 1):
        write_run(logs / f"real{seed}", record(seed, 0.7 + seed / 100, *SYNTHETIC_CNN))
        write_run(logs / f"limit{seed}", debug_record(seed, 0.2 + seed / 100))
    v1_debug = v1(record(2, 0.2, *CNN, "trainer.limit_train_batches=5"))
    write_run(logs / "v1_limit", v1_debug)
    found = compare.load_runs([logs])
    assert sorted(r.path.name for r in found.results) == ["real0", "real1"]
    assert {r.path.name: r.debug for r in found.debug} == {
        "limit0": ("limit_train_batches=2",),
        "limit1": ("limit_train_batches=2",),
        "v1_limit": ("limit_train_batches=5",),
    }
    code, stdout, _ = run_main(logs, tmp_path / "out", capsys)
    assert code == 0
    assert "3 debug runs listed apart" in stdout
    debug_section = stdout.split("## Debug runs")[1].split("## Failed")[0]
    assert "limit_train_batches=5" in debug_section and "20.00" in debug_section
    results = stdout.split("## Results")[1].split("##")[0]
    assert "(n=2)" in results and "[debug]" not in results
    # --include-debug compares them, in groups of their own, marked as debug.
    code, stdout, _ = run_main(logs, tmp_path / "out2", capsys, "--include-debug")
    assert code == 0 and "## Debug runs" not in stdout
    rows = {r["group"]: r for r in read_csv(tmp_path / "out2" / "compare.csv")}
    debug = [g for g in rows if g.endswith("[debug]")]
    assert len(rows) == 3 and len(debug) == 2
    assert {rows[g]["debug"] for g in debug} == {"limit_train_batches=2", "limit_train_batches=5"}
    limited = next(g for g in debug if rows[g]["n"] == "2")
    assert float(rows[limited]["test_acc_mean"]) == pytest.approx(0.205)
    assert "a check, not a result" in stdout.split("## Results")[1]
    diffs = read_csv(tmp_path / "out2" / "differences.csv")
    assert any(limited in (d["a_group"], d["b_group"]) for d in diffs)


def test_only_debug_runs_is_an_error_that_says_why(tmp_path: Path, capsys) -> None:
    logs = tmp_path / "logs"
    write_run(logs / "limit", debug_record(1, 0.1))
    code, _, stderr = run_main(logs, tmp_path / "out", capsys)
    assert code == 1
    assert "no completed runs to compare (1 debug run(s)" in stderr
    assert "train without the debug flags" in stderr and "--include-debug" in stderr
    assert run_main(logs, tmp_path / "out", capsys, "--include-debug")[0] == 0


def test_v1_debug_flags_off_values_are_not_debug(tmp_path: Path) -> None:
    overrides = ["trainer.fast_dev_run=false", "trainer.limit_val_batches=1.0"]
    write_run(tmp_path / "r", v1(record(0, 0.8, *CNN, *overrides)))
    assert len(compare.load_runs([tmp_path]).results) == 1


def test_interrupted_runs_listed_apart(tmp_path: Path, capsys) -> None:
    logs = tmp_path / "logs"
    write_run(logs / "done", record(0, 0.7, *SYNTHETIC_CNN))
    stopped = record(1, 0.0, *SYNTHETIC_CNN, status="interrupted", step=57,
                     error="interrupted by SIGTERM")  # fmt: skip
    write_run(logs / "stopped", {**stopped, "best_val_acc": 0.42})
    found = compare.load_runs([logs])
    assert [r.path.name for r in found.interrupted] == ["stopped"]
    assert not found.failed
    code, stdout, stderr = run_main(logs, tmp_path / "out", capsys)
    assert code == 0
    section = stdout.split("## Interrupted runs")[1].split("##")[0]
    assert "stopped`" in section and "| 57 | 42.00 |" in section
    assert "stopped`" not in stdout.split("## Failed")[1]
    assert "(n=1)" in stdout.split("## Results")[1]  # not pooled
    assert "1 interrupted" in stderr


def test_diverged_runs_marked_in_table(tmp_path: Path, capsys) -> None:
    logs = tmp_path / "logs"
    write_run(logs / "0", record(0, 0.7, *SYNTHETIC_CNN))
    write_run(logs / "1", record(1, 0.1, *SYNTHETIC_CNN, diverged=True))
    code, stdout, _ = run_main(logs, tmp_path / "out", capsys)
    assert code == 0
    results = stdout.split("## Results")[1].split("##")[0]
    assert "⚠ diverged: seed 1" in results
    assert "Diverged: seed 1" in stdout.split("## Notes")[1]
    (row,) = read_csv(tmp_path / "out" / "compare.csv")
    assert row["diverged_seeds"] == "1"


# ---------------------------------------------------------------- intervals within 0-100
def test_two_seed_interval_stays_within_0_and_100(tmp_path: Path) -> None:
    # 2 seeds: t(0.975, 1) = 12.7, so mean 60 ± 12.7 x 5.66 reached [-11.62, 132.32].
    runs = [record(s, acc, *SYNTHETIC_CNN) for s, acc in ((0, 0.20), (1, 1.00))]
    (group,) = write_runs(tmp_path, runs).groups
    sem = np.std([0.2, 1.0], ddof=1) / math.sqrt(2)
    uncut = scipy_stats.t.interval(0.95, 1, loc=0.6, scale=sem)
    assert uncut[0] < 0 and uncut[1] > 1
    assert group.acc_ci == pytest.approx((0.0, 1.0))
    close = stats.mean_interval([0.50, 0.52], bounds=(0.0, 1.0))
    assert close == pytest.approx(scipy_stats.t.interval(0.95, 1, loc=0.51, scale=0.01))


# ---------------------------------------------------------------- file permissions
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_gives_umask_permissions(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_tex_escapes_config_keys_and_comparison_signs(tmp_path: Path) -> None:
    runs = [
        record(0, 0.9, "model=stn", "data=synthetic", f"model.stn.lr_mult={m}") for m in (0.5, 1.0)
    ]
    table = write_runs(tmp_path, runs)
    text = tex.render_tex(table, compare.pair_differences(table))
    assert r"model.stn.lr\_mult=0.5 &" in text and "lr_mult" not in text
    # OT1, LaTeX's default font encoding, prints < and > as ¡ and ¿: both go to math mode.
    assert "P(B $>$ A)" in text and "p $<$ 0.05" in text
    assert ">" not in text.replace("$>$", "") and "<" not in text.replace("$<$", "")
    assert tex.tex_escape("a > b < c") == "a $>$ b $<$ c"


def test_manifest_of_no_completed_runs_says_so() -> None:
    empty = groups.Table(groups=[], names=[], fixed={})
    assert notes.manifest_text(empty) == "Variance: no completed runs to describe."


def test_round_trip_from_records_train_writes(tmp_path, tiny_run):
    """The fast twin of test_compare_cli's round trip: four tiny runs written by ``train()``
    itself (CNN and STN, seeds 0 and 1), then ``compare``; its groups and numbers are the
    records' own accuracies, averaged and differenced by hand."""
    from omegaconf import OmegaConf

    from stn_lab.compare.cli import main
    from stn_lab.config_path import compose_config
    from stn_lab.train import train

    accs: dict[str, list[float]] = {"cnn": [], "stn": []}
    for n, (model, seed) in enumerate([(m, s) for m in accs for s in (0, 1)]):
        asked = [f"model={model}", f"seed={seed}"]
        overrides = [*asked, *tiny_run, "data.num_train=128", "trainer.max_epochs=1",
                     "~callbacks.artefacts"]  # fmt: skip
        hydra = compose_config(overrides, return_hydra_config=True).hydra
        choices = OmegaConf.to_container(hydra.runtime.choices)
        done = train(compose_config(overrides), tmp_path / "sweep" / str(n), choices, asked)
        accs[model].append(done["test"]["acc"])
    out = tmp_path / "out"
    assert main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    rows = {r["group"]: r for r in read_csv(out / "compare.csv")}
    assert set(rows) == {"model=cnn", "model=stn"}
    for model, values in accs.items():
        row = rows[f"model={model}"]
        assert (row["n"], row["seeds"]) == ("2", "0;1")
        assert float(row["test_acc_mean"]) == pytest.approx(sum(values) / 2)
        assert float(row["test_acc_std"]) == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    (diff,) = read_csv(out / "differences.csv")
    assert (diff["a_group"], diff["b_group"], diff["varied"]) == ("model=cnn", "model=stn", "model")
    assert diff["confounded"] == "false" and diff["test"] == "paired t"
    expected = (sum(accs["stn"]) - sum(accs["cnn"])) / 2
    assert float(diff["diff"]) == pytest.approx(expected)
