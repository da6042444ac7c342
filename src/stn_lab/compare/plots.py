"""The pictures beside ``compare.md``: mean accuracy per group (``compare.png``), performance
profiles (``profile.png``), the critical-difference diagram (``cd.png``) and the images two
models disagree on (``disagreements.png``).

Each picture is a function that builds its figure (for tests and notebooks) and one that
writes it (:func:`stn_lab.atomic.atomic_png`). All are drawn with matplotlib's object-oriented
API on an Agg canvas (no pyplot state, no GUI backend). Only :func:`load_test_images` touches
the training side, and only when called: it rebuilds the run's DataModule to get the distorted
test images, which imports torch and Lightning.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stn_lab.atomic import atomic_png
from stn_lab.compare.groups import MODEL, Difference, Table
from stn_lab.compare.predictions import disagreements
from stn_lab.compare.sets import SetsAnalysis
from stn_lab.compare.stats import CONFIDENCE

#: Images per side in ``disagreements.png`` (a square grid), and the model pairs it shows.
DISAGREEMENTS = 16
MAX_PAIRS = 4


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def comparison_figure(table: Table) -> Any:
    """``compare.png``: horizontal bars of mean test accuracy (%) with ±1 std error bars, under
    a title that names the settings all groups share."""
    stats = table.groups
    fig = _figure(8.0, 1.6 + 0.45 * max(len(stats), 1))
    ax = fig.add_subplot()
    if not stats:
        ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    means = np.array([100 * g.acc_mean for g in stats])
    stds = np.array([0.0 if g.acc_std is None else 100 * g.acc_std for g in stats])
    y = np.arange(len(stats))[::-1]  # first group on top
    ax.barh(y, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=4)
    ax.set_yticks(y, [g.label for g in stats])
    lo = float(np.min(means - stds))
    left = max(0.0, math.floor(lo - 0.25 * max(float(np.ptp(means)), 2.0)))
    right = min(100.0, float(np.max(means + stds)) + 0.15 * max(float(np.ptp(means)), 4.0))
    right = max(right, float(np.max(means)) + 1.0)
    ax.set_xlim(left, right)
    for yi, m, s, g in zip(y, means, stds, stats, strict=True):
        ax.text(m + s, yi, f"  {m:.2f}% (n={g.n})", va="center", fontsize=9)
    xlabel = "mean test accuracy (%), error bars ±1 sample std over seeds"
    ax.set_xlabel(xlabel + ("; axis does not start at 0" if left > 0 else ""))
    shared = ", ".join(f"{k}={v}" for k, v in table.fixed.items())
    title = "Test accuracy per group" + (f" ({shared})" if shared else "")
    # Centred on the figure, not on the axes (which the group labels push right), and wrapped
    # to its width, so a long list of shared settings stays inside the picture.
    fig.suptitle(_wrap(fig, title, TITLE_SIZE), fontsize=TITLE_SIZE)
    ax.grid(axis="x", alpha=0.3)
    return fig


#: The font size of compare.png's title, in points.
TITLE_SIZE = 12


def _wrap(fig: Any, text: str, fontsize: float) -> str:
    """``text`` wrapped at word breaks into the fewest lines that fit the figure's width,
    measured with its renderer."""
    renderer = fig.canvas.get_renderer()
    limit = 0.95 * fig.bbox.width
    for chars in range(len(text), 10, -4):
        wrapped = "\n".join(textwrap.wrap(text, chars))
        probe = fig.text(0, 0, wrapped, fontsize=fontsize)
        width = probe.get_window_extent(renderer).width
        probe.remove()
        if width <= limit:
            return wrapped
    return "\n".join(textwrap.wrap(text, 10))


def write_comparison(path: Path, table: Table) -> None:
    atomic_png(comparison_figure(table), path)


def profile_figure(sets: SetsAnalysis) -> Any:
    """``profile.png``: for each model, the share of its seed x set runs whose test accuracy
    is above tau, with its stratified-bootstrap band."""
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    for m in sets.models:
        (line,) = ax.plot(100 * sets.taus, m.profile.point, label=m.label)
        ax.fill_between(100 * sets.taus, m.profile.low, m.profile.high, alpha=0.2,
                        color=line.get_color())  # fmt: skip
    ax.set_xlabel("test accuracy τ (%)")
    ax.set_ylabel(f"fraction of runs with accuracy > τ ({100 * CONFIDENCE:.0f}% band)")
    ax.set_title(f"Performance profiles over {len(sets.sets)} sets ({', '.join(sets.sets)})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def write_profile(path: Path, sets: SetsAnalysis) -> None:
    atomic_png(profile_figure(sets), path)


def cd_figure(sets: SetsAnalysis) -> Any:
    """``cd.png``: mean ranks on an axis (1 = best, left) with the Nemenyi critical difference,
    and a bar joining models whose ranks differ by less than it."""
    ranks = sets.ranks
    if ranks is None:
        raise ValueError("no ranks: the design is below the critical-difference minimum")
    order = sorted(ranks.mean_ranks.items(), key=lambda kv: kv[1])
    k = len(order)
    fig = _figure(7.0, 1.6 + 0.35 * k)
    ax = fig.add_subplot()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-k - 1, 2)
    ax.axhline(0, color="black", lw=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [0, 0.15], color="black", lw=1)
        ax.text(r, 0.35, str(r), ha="center", fontsize=9)
    ax.plot([1, 1 + ranks.cd], [1.3, 1.3], color="black", lw=2)
    ax.text(1 + ranks.cd / 2, 1.5, f"CD = {ranks.cd:.2f}", ha="center", fontsize=9)
    for i, (name, rank) in enumerate(order):
        y = -(i + 1)
        ax.plot([rank, rank], [0, y], color="tab:blue", lw=1)
        ax.text(rank, y - 0.1, f"{name} ({rank:.2f})", ha="left", va="top", fontsize=8)
    # Cliques: maximal runs of models (in rank order) within one CD of each other.
    y = 0.6
    for i in range(k):
        j = max(j for j in range(i, k) if order[j][1] - order[i][1] < ranks.cd)
        if j > i and (i == 0 or order[j][1] - order[i - 1][1] >= ranks.cd):
            ax.plot([order[i][1], order[j][1]], [y, y], color="tab:red", lw=3)
            y += 0.2
    ax.set_axis_off()
    ax.set_title(f"Mean rank over {len(sets.sets)} sets (Friedman p = {ranks.friedman_p:.3g})")
    return fig


def write_cd(path: Path, sets: SetsAnalysis) -> None:
    atomic_png(cd_figure(sets), path)


def load_test_images(data_config: dict[str, Any], indices: Sequence[int]) -> np.ndarray:
    """The run's test images at ``indices`` as it saw them (distorted from ``eval_seed`` and the
    index), uint8 ``[n, C, H, W]``, rebuilt from its recorded ``data`` config.

    Imported here, not at the top: ``compare`` itself needs neither torch nor Lightning, and
    only this picture needs the images. Never downloads.
    """
    from hydra.utils import instantiate

    datamodule = instantiate({**data_config, "download": False})
    datamodule.setup("test")
    images = datamodule.splits["test"].tensors[0]
    return images[list(indices)].cpu().numpy()


def model_pairs(diffs: Sequence[Difference]) -> list[Difference]:
    """The differences worth a disagreement grid: model against model (and nothing else),
    with predictions."""
    return [d for d in diffs if d.differs_in == (MODEL,) and d.images is not None]


def write_disagreements(
    path: Path, diffs: Sequence[Difference], class_names: Sequence[str] = ()
) -> str:
    """``disagreements.png``: for each model pair (the first :data:`MAX_PAIRS`), the 16 most
    confident images B gets right and A wrong, and the reverse. Returns "" when written, else
    the one-line reason it was not (no model pair with predictions, or the test images cannot
    be rebuilt here)."""
    fig = disagreements_figure(diffs, class_names)
    if isinstance(fig, str):
        return fig
    atomic_png(fig, path)
    return ""


def disagreements_figure(diffs: Sequence[Difference], class_names: Sequence[str] = ()) -> Any:
    """The figure of :func:`write_disagreements`, or the one-line reason there is none."""
    pairs = model_pairs(diffs)[:MAX_PAIRS]
    if not pairs:
        return "no model pair with predictions.npy on both sides"
    picks = [disagreements(d.images.a, d.images.b, DISAGREEMENTS) for d in pairs]
    # The images each pair needs, loaded once per data config (pairs of models nearly always
    # share one, and each load rebuilds the whole distorted test split).
    wanted: dict[str, tuple[dict, set[int]]] = {}
    keys = []
    for d, (b_wins, a_wins) in zip(pairs, picks, strict=True):
        config = next((r.data_config for r in d.a.runs if r.data_config), None)
        if config is None:
            return "the runs recorded no data config to rebuild the test images from"
        keys.append(json.dumps(config, sort_keys=True))
        wanted.setdefault(keys[-1], (config, set()))[1].update(i for i, *_ in [*b_wins, *a_wins])
    loaded: dict[str, dict[int, np.ndarray]] = {}
    for key, (config, indices) in wanted.items():
        indices = sorted(indices)
        try:
            found = load_test_images(config, indices) if indices else []
        except Exception as err:  # noqa: BLE001 - a failure only costs the picture: one line
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            why = " ".join(dict.fromkeys([*lines[:1], *lines[-1:]])) or type(err).__name__
            return f"test images unavailable here ({type(err).__name__}: {why})"
        loaded[key] = dict(zip(indices, found, strict=True))
    images = [loaded[key] for key in keys]
    fig = _figure(10.0, 6.0 * len(pairs))
    rows = fig.subfigures(len(pairs), 1, squeeze=False)[:, 0]
    for row, d, (b_wins, a_wins), found in zip(rows, pairs, picks, images, strict=True):
        for sub, wins, right, wrong in zip(
            row.subfigures(1, 2), (b_wins, a_wins), (d.b, d.a), (d.a, d.b), strict=True
        ):
            _grid(sub, wins, found, class_names)
            sub.suptitle(f"{right.label} right, {wrong.label} wrong ({len(wins)})", fontsize=9)
    return fig


def _grid(fig: Any, wins: Sequence[tuple[int, int, int, float]], images: dict,
          class_names: Sequence[str]) -> None:  # fmt: skip
    """The images as one square montage (one ``imshow``, cheap to draw), each captioned with
    its index and label and the wrong model's answer and confidence."""
    ax = fig.subplots()
    ax.set_axis_off()
    if not wins:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
        return
    side = math.isqrt(DISAGREEMENTS)
    first = images[wins[0][0]]
    channels, height, width = first.shape
    cell_h, cell_w = height + height // 2, width + 2  # room for two caption lines above
    canvas = np.full((side * cell_h, side * cell_w, channels), 255, dtype=np.uint8)
    for k, (index, label, wrong, confidence) in enumerate(wins):
        row, col = divmod(k, side)
        top, left = row * cell_h + height // 2, col * cell_w + 1
        canvas[top : top + height, left : left + width] = images[index].transpose(1, 2, 0)
        name = class_names[wrong] if wrong < len(class_names) else str(wrong)
        truth = class_names[label] if label < len(class_names) else str(label)
        ax.text(left + width / 2, top - 1, f"#{index} {truth}\nother: {name} ({confidence:.2f})",
                ha="center", va="bottom", fontsize=6)  # fmt: skip
    ax.imshow(canvas[..., 0] if channels == 1 else canvas, cmap="gray", vmin=0, vmax=255)
