"""Per-image evidence from each run's ``predictions.npy``: the multibootstrap, McNemar, and the
images on which two models disagree.

Every run scores the same test images (fixed per index, whatever the seed), so two runs can be
compared image by image. A run's ``predictions.npy`` is one structured array in test-index
order: ``index``, ``pred``, ``label`` and ``confidence`` (the top softmax probability).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from stn_lab.compare.records import RunRecord
from stn_lab.compare.stats import CONFIDENCE, bootstrap

#: The columns ``compare`` reads from ``predictions.npy``.
COLUMNS = ("index", "pred", "label", "confidence")


class PredictionsError(ValueError):
    """A ``predictions.npy`` that is missing, unreadable or does not match the other runs'.
    ``damaged``: the file is there but cannot be read as a predictions table."""

    def __init__(self, message: str, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged


def load_predictions(path: Path) -> np.ndarray:
    """A run's predictions, sorted by test index; :class:`PredictionsError` names the file and
    says what is wrong with it in one line."""
    where = _file(path)
    try:
        table = np.load(path, allow_pickle=False)
    except OSError as err:
        raise PredictionsError(f"cannot read {where}: {err.strerror or err}", True) from err
    except Exception as err:  # noqa: BLE001 - numpy raises several types for a damaged file
        # numpy's own message may advise loading with allow_pickle, which would run whatever
        # code a damaged or planted file holds: say what is wrong instead.
        raise PredictionsError(
            f"{where} is damaged (truncated, or not a numpy array file): run the job again to "
            "rewrite it",
            True,
        ) from err
    names = table.dtype.names or ()
    if table.ndim != 1 or not set(COLUMNS) <= set(names):
        raise PredictionsError(f"{where} lacks the columns {', '.join(COLUMNS)}", True)
    return table[np.argsort(table["index"], kind="stable")]


def _file(path: Path) -> str:
    """A run's file by its run folder's last two parts and its name (``<sweep>/3/x.npy``)."""
    return "/".join(Path(path).parts[-3:])


@dataclass(frozen=True)
class Predictions:
    """The test predictions of a group's runs, image by image: ``pred`` and ``confidence`` are
    ``[run, image]``; every run shares ``index`` and ``label``."""

    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label[None, :]


def _where(run: RunRecord) -> str:
    """A run folder by its last two parts (``<sweep>/3``): a multirun job's own name is a number."""
    return "/".join(run.path.parts[-2:])


def load_group(runs: Sequence[RunRecord]) -> Predictions:
    """The predictions of ``runs``, checked to cover the same test images with the same labels."""
    if not runs:
        raise PredictionsError("no runs")
    tables = []
    for run in runs:
        if run.predictions is None:
            raise PredictionsError(f"{_where(run)} has no predictions.npy (an older run?)")
        tables.append(load_predictions(run.predictions))
    first = tables[0]
    for run, table in zip(runs[1:], tables[1:], strict=True):
        same = table.shape == first.shape and np.array_equal(table["index"], first["index"])
        if not (same and np.array_equal(table["label"], first["label"])):
            raise PredictionsError(f"{_where(run)} scored other test images than the rest")
    return Predictions(
        first["index"].astype(np.int64),
        first["label"].astype(np.int64),
        np.stack([t["pred"].astype(np.int64) for t in tables]),
        np.stack([t["confidence"].astype(np.float32) for t in tables]),
    )


def same_images(a: Predictions, b: Predictions) -> bool:
    return np.array_equal(a.index, b.index) and np.array_equal(a.label, b.label)


@dataclass(frozen=True)
class Multibootstrap:
    """Mean accuracy difference B - A and its percentile interval from resampling seeds and
    test images together (Sellam et al. 2022, "The MultiBERTs")."""

    diff: float
    low: float
    high: float
    reps: int
    paired: bool


def multibootstrap(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    paired: bool,
    reps: int,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
) -> Multibootstrap:
    """Bootstrap ``mean acc(B) - mean acc(A)`` over seeds x test images.

    Each replicate draws the test images with replacement once, for both models (the images
    are shared), and the seeds with replacement: the same seed rows on both sides when
    ``paired`` (row i of A and of B ran seed i), independently otherwise. So the interval
    holds both sources of variation, the training seed and the finite test set. With one seed
    it is the paired bootstrap of the per-image difference.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape[1] != b.shape[1] or (paired and a.shape != b.shape):
        raise ValueError(f"multibootstrap needs matching shapes, got {a.shape} and {b.shape}")
    n_images = a.shape[1]
    # An image every run gets right (or every run wrong) adds the same to each seed's accuracy
    # on both sides, so it cancels from B - A: only the draws that land on the others count.
    active = np.flatnonzero(~((a.all(0) & b.all(0)) | ~(a.any(0) | b.any(0))))
    m = active.size
    slot = np.full(n_images, m)  # an image's column in the count matrix; m collects the rest
    slot[active] = np.arange(m)
    a_active = a[:, active].T.astype(np.float64) / n_images  # [image, seed]
    b_active = b[:, active].T.astype(np.float64) / n_images

    def difference(images: np.ndarray, seeds_a: np.ndarray, seeds_b: np.ndarray | None = None):
        k = images.shape[0]
        cells = slot[images] + (m + 1) * np.arange(k)[:, None]
        counts = np.bincount(cells.ravel(), minlength=k * (m + 1)).reshape(k, m + 1)[:, :m]
        acc_a, acc_b = counts @ a_active, counts @ b_active  # [replicate, seed], up to a constant
        rows = np.arange(k)[:, None]
        seeds_b = seeds_a if seeds_b is None else seeds_b
        return acc_b[rows, seeds_b].mean(axis=1) - acc_a[rows, seeds_a].mean(axis=1)

    seeds = (a.shape[0],) if paired else (a.shape[0], b.shape[0])
    interval = bootstrap(difference, (n_images, *seeds), reps, rng, confidence)
    diff = float(b.mean(axis=1).mean() - a.mean(axis=1).mean())
    return Multibootstrap(diff, interval.low, interval.high, reps, paired)


@dataclass(frozen=True)
class McNemar:
    """McNemar's test on the images where exactly one of two runs is right."""

    a_only: int  # images A gets right and B wrong
    b_only: int  # and the reverse
    p: float


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, exact: bool = True) -> McNemar:
    """McNemar's test of two runs on the same images: exact (two-sided binomial on the
    discordant images) or the chi-square with continuity correction, as statsmodels'
    ``mcnemar(exact=...)``. p is 1 when the runs never disagree."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n = a_only + b_only
    if n == 0:
        return McNemar(0, 0, 1.0)
    if exact:
        p = min(1.0, 2.0 * float(stats.binom.cdf(min(a_only, b_only), n, 0.5)))
    else:
        p = float(stats.chi2.sf((abs(a_only - b_only) - 1) ** 2 / n, 1))
    return McNemar(a_only, b_only, p)


#: One image that one model gets right and the other wrong: its test index, its label, the
#: wrong model's most common wrong answer and that model's mean confidence in its wrong answers.
Disagreement = tuple[int, int, int, float]


def disagreements(a: Predictions, b: Predictions, k: int = 16) -> tuple[list, list]:
    """``(b_right, a_right)``: the ``k`` images B gets right in more seeds than A, and the
    reverse, as :data:`Disagreement` s; most seeds won first, then the most confident mistake
    of the model that got it wrong."""
    return _most_confident(b, a, k), _most_confident(a, b, k)


def _most_confident(winner: Predictions, loser: Predictions, k: int) -> list[Disagreement]:
    margin = winner.correct.mean(axis=0) - loser.correct.mean(axis=0)
    wrong = ~loser.correct
    confidence = (loser.confidence * wrong).sum(axis=0) / np.maximum(wrong.sum(axis=0), 1)
    candidates = np.flatnonzero(margin > 0)
    order = np.lexsort((-confidence[candidates], -margin[candidates]))[:k]
    out: list[Disagreement] = []
    for i in candidates[order]:
        answers, counts = np.unique(loser.pred[wrong[:, i], i], return_counts=True)
        answer = int(answers[counts.argmax()])
        out.append((int(loser.index[i]), int(loser.label[i]), answer, float(confidence[i])))
    return out


@dataclass(frozen=True)
class ImageEvidence:
    """Two groups compared image by image: the multibootstrap of B - A, McNemar's test for
    each seed pair (``(seed of A, seed of B, result)``) and both groups' predictions."""

    n_images: int
    bootstrap: Multibootstrap
    mcnemar: list[tuple[int | None, int | None, McNemar]]
    a: Predictions
    b: Predictions


def image_evidence(
    runs_a: Sequence[RunRecord],
    runs_b: Sequence[RunRecord],
    paired: bool,
    reps: int,
    rng: np.random.Generator,
) -> ImageEvidence:
    """:class:`ImageEvidence` for two groups' runs (each in seed order). Paired groups pair
    seed i with seed i; otherwise runs pair up in seed order for McNemar (any two runs scored
    the same images) and the bootstrap draws each group's seeds independently."""
    a, b = load_group(runs_a), load_group(runs_b)
    if not same_images(a, b):
        raise PredictionsError("the two groups scored different test images")
    boot = multibootstrap(a.correct, b.correct, paired, reps, rng)
    tests = [
        (ra.seed, rb.seed, mcnemar(ca, cb))
        for ra, rb, ca, cb in zip(runs_a, runs_b, a.correct, b.correct, strict=False)
    ]
    return ImageEvidence(len(a.index), boot, tests, a, b)
