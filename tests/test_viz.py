"""Tests for stn_lab.viz: what each picture holds (its panels, the images and curves drawn in
them, that the PNG is not blank and changes with its input), the confusion CSV, a Grad-CAM known
answer, and the RunArtefacts callback."""

from __future__ import annotations

import csv
import logging
import struct
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from matplotlib.image import imread  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from stn_lab.viz import (  # noqa: E402
    GradCAM,
    RunArtefacts,
    confusion_figure,
    curves_figure,
    gradcam_figure,
    images_to_numpy,
    load_epoch_metrics,
    montage,
    normalize_rows,
    plot_confusion_matrix,
    plot_curves,
    plot_gradcam,
    plot_stn_epochs,
    plot_stn_grid,
    read_confusion_csv,
    stn_epochs_figure,
    stn_grid_figure,
    write_confusion_csv,
)

# Lightning's own deprecation noise from torch's pytree, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the magic bytes."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_png(path: Path, figsize: tuple[float, float], dpi: int) -> None:
    assert png_size(path) == (round(figsize[0] * dpi), round(figsize[1] * dpi))


def pixels(path: Path) -> np.ndarray:
    """The PNG's RGB pixels, floats in [0, 1]."""
    return imread(path)[..., :3]


def assert_drawn(path: Path, colour: float = 0.005, grey: float = 0.1) -> None:
    """Not blank: colour (curves, heat maps) covers more than ``colour`` of the picture or mid
    grey (images) more than ``grey``. Axes frames and text alone are black on white with grey
    edges on at most about 4% (measured on empty panels); a confusion matrix's colour bar alone
    is about 1.5% colour, so its pictures ask for more."""
    px = pixels(path)
    lo, hi = px.min(axis=-1), px.max(axis=-1)
    coloured = (hi - lo > 0.15).mean()
    mid_grey = ((lo > 0.1) & (hi < 0.9)).mean()
    assert coloured > colour or mid_grey > grey, (path.name, coloured, mid_grey)


def changed(a: Path, b: Path) -> float:
    """The share of pixels that differ visibly between two PNGs of the same size."""
    pa, pb = pixels(a), pixels(b)
    assert pa.shape == pb.shape
    return float((np.abs(pa - pb).max(axis=-1) > 0.05).mean())


def shown(ax) -> np.ndarray:
    """The array the (first) image on ``ax`` draws."""
    return np.asarray(ax.images[0].get_array())


# --------------------------------------------------------------------------- montages
@pytest.mark.parametrize("channels", [1, 3])
def test_montage_tiles_each_scaled_image_with_white_padding(channels):
    images = torch.randn(5, channels, 6, 4) * 3 + 7  # any range: each image scaled on its own
    grid = montage(images, nrow=3)
    assert grid.shape[:2] == (2 * (6 + 2) + 2, 3 * (4 + 2) + 2)  # 2 rows of 3, 2 px apart
    assert grid.ndim == (2 if channels == 1 else 3)
    display = images_to_numpy(images)
    for i in range(5):
        r, c = divmod(i, 3)
        tile = grid[2 + r * 8 : 8 + r * 8, 2 + c * 6 : 6 + c * 6]
        np.testing.assert_allclose(tile, display[i], atol=1e-6)
    assert (grid[:2] == 1).all() and (grid[:, :2] == 1).all()  # white between the images
    assert tile.min() == 0 and tile.max() == 1


# --------------------------------------------------------------------------- stn grids
@pytest.mark.parametrize("channels", [1, 3])
def test_stn_grid_shows_inputs_beside_their_transform(tmp_path, channels):
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(10, channels, 16, 16, generator=g)
    transformed = torch.randn(10, channels, 12, 12, generator=g)
    fig = stn_grid_figure(inputs, transformed, nrow=4)
    assert [ax.get_title() for ax in fig.axes] == ["Input", "Transformed"]
    np.testing.assert_array_equal(shown(fig.axes[0]), montage(inputs, nrow=4))
    np.testing.assert_array_equal(shown(fig.axes[1]), montage(transformed, nrow=4))

    out = plot_stn_grid(
        inputs, transformed, tmp_path / "sub" / "stn.png", nrow=4, figsize=(6, 3), dpi=50
    )
    assert out == tmp_path / "sub" / "stn.png"
    assert_png(out, (6, 3), 50)
    assert_drawn(out)
    other = plot_stn_grid(
        inputs, -transformed, tmp_path / "other.png", nrow=4, figsize=(6, 3), dpi=50
    )
    assert changed(out, other) > 0.02  # another transform is another picture


def test_plot_stn_grid_and_epochs_split_parallel_stn_views(tmp_path):
    inputs = torch.randn(4, 3, 10, 10)
    stacked = torch.randn(4, 6, 8, 8)  # two parallel STNs, RGB each
    fig = stn_grid_figure(inputs, stacked)
    assert [ax.get_title() for ax in fig.axes] == ["Input", "Transformed 1", "Transformed 2"]
    np.testing.assert_array_equal(shown(fig.axes[2]), montage(stacked[:, 3:]))
    out = plot_stn_grid(inputs, stacked, tmp_path / "stn.png")
    assert png_size(out) == (round((3 * 1.25 * 4 + 0.5) * 100), 200)  # three grids
    fig = stn_epochs_figure(inputs, {3: stacked})
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["input", "epoch 3\nSTN 1", "epoch 3\nSTN 2"]  # input + one row per STN
    np.testing.assert_array_equal(shown(fig.axes[1]), montage(stacked[:, :3], nrow=4))
    out = plot_stn_epochs(inputs, {3: stacked}, tmp_path / "stn_epochs.png")
    assert png_size(out) == (500, 300)
    with pytest.raises(ValueError):
        plot_stn_grid(inputs, torch.randn(4, 4, 8, 8), tmp_path / "bad.png")


def test_plot_stn_grid_default_size_and_constant_image(tmp_path):
    inputs = torch.zeros(3, 1, 8, 8)  # constant images must not divide by zero
    out = plot_stn_grid(inputs, inputs.clone(), tmp_path / "stn.png")
    w, h = png_size(out)
    assert (w, h) == (round((2 * 1.25 * 3 + 0.5) * 100), round((1.25 + 0.75) * 100))
    fig = stn_grid_figure(inputs, inputs.clone())
    tiles = shown(fig.axes[0])[2:-2, 2:-2]
    assert set(np.unique(tiles)) == {0.0, 1.0}  # black images (zeros) on white padding


def test_plot_stn_grid_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError):
        plot_stn_grid(torch.zeros(2, 2, 8, 8), torch.zeros(2, 2, 8, 8), tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_stn_grid(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8), tmp_path / "x.png")


def test_stn_epochs_has_one_row_per_epoch_in_order(tmp_path):
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(5, 3, 10, 10, generator=g)
    snaps = {10: torch.randn(5, 3, 8, 8, generator=g), 1: torch.randn(5, 3, 8, 8, generator=g)}
    fig = stn_epochs_figure(inputs, snaps)
    assert [ax.get_ylabel() for ax in fig.axes] == ["input", "epoch 1", "epoch 10"]
    for ax, images in zip(fig.axes, (inputs, snaps[1], snaps[10]), strict=True):
        np.testing.assert_array_equal(shown(ax), montage(images, nrow=5))  # 5 images a row
    out = plot_stn_epochs(inputs, snaps, tmp_path / "stn_epochs.png", figsize=(7, 4.5), dpi=40)
    assert_png(out, (7, 4.5), 40)
    assert_drawn(out)
    later = {**snaps, 10: snaps[10].flip(-1)}  # the last epoch's transform differs
    other = plot_stn_epochs(inputs, later, tmp_path / "other.png", figsize=(7, 4.5), dpi=40)
    assert changed(out, other) > 0.01
    out = plot_stn_epochs(inputs, snaps, tmp_path / "default.png")
    assert png_size(out) == (600, 300)  # (5 images + 1 in labels) x (3 rows) at 100 dpi


# --------------------------------------------------------------------------- confusion
def test_confusion_png_and_csv_round_trip(tmp_path):
    names = ["cat", "dog, big", "emu"]  # a comma must survive the CSV
    counts = [[5, 1, 0], [2, 7, 1], [0, 0, 0]]  # an empty row must not divide by zero
    fig = confusion_figure(counts, names)
    heat_map = fig.axes[0]
    np.testing.assert_allclose(shown(heat_map), normalize_rows(np.array(counts)))
    assert [t.get_text() for t in heat_map.get_xticklabels()] == names
    assert [t.get_text() for t in heat_map.get_yticklabels()] == names
    cells = [t.get_text() for t in heat_map.texts]
    assert cells == ["0.83", "0.17", "0.00", "0.20", "0.70", "0.10", "0.00", "0.00", "0.00"]
    assert len(fig.axes) == 2  # the matrix and its colour bar

    out = plot_confusion_matrix(counts, names, tmp_path / "cm.png", figsize=(4, 4), dpi=60)
    assert_png(out, (4, 4), 60)
    assert_drawn(out, colour=0.05)
    swapped = plot_confusion_matrix(
        [[1, 5, 0], [7, 2, 1], [0, 0, 0]], names, tmp_path / "swapped.png", figsize=(4, 4), dpi=60
    )
    assert changed(out, swapped) > 0.02
    out = plot_confusion_matrix(torch.tensor(counts), names, tmp_path / "cm_default.png")
    assert png_size(out) == (450, 450)  # 0.5 * 3 + 3 inches at 100 dpi

    csv_path = write_confusion_csv(np.array(counts), names, tmp_path / "cm.csv")
    with csv_path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1:] == names
    assert [r[0] for r in rows[1:]] == names
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == counts
    matrix, read_names = read_confusion_csv(csv_path)
    assert read_names == names
    assert matrix.tolist() == counts


def test_confusion_shape_mismatch(tmp_path):
    with pytest.raises(ValueError):
        write_confusion_csv([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "cm.csv")


# --------------------------------------------------------------------------- curves
def _write_metrics(path: Path, rows: list[dict]) -> Path:
    """A metrics.csv shaped like CSVLogger's: each row fills only some columns."""
    keys = ["epoch", "step", "train/acc", "train/loss", "train/loss_epoch", "val/acc", "val/loss"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _run_log(step_losses=((2.0, 1.0), (0.9, 0.3)), epoch_losses=(1.2845, 0.8123)) -> list[dict]:
    """Two epochs as stn_lab logs them: ``train/loss`` on the logged steps only, then the
    epoch's ``train/loss_epoch`` (the mean over every step) and ``train/acc``, and ``val/*``.
    The logged steps' mean (1.5, 0.6) is not the epoch mean (1.2845, 0.8123)."""
    rows = []
    for epoch, (steps, loss) in enumerate(zip(step_losses, epoch_losses, strict=True)):
        end = 100 * (epoch + 1) - 1
        rows += [{"epoch": epoch, "step": end - 50 + 50 * i, "train/loss": v}
                 for i, v in enumerate(steps)]  # fmt: skip
        rows.append({"epoch": epoch, "step": end, "val/acc": 0.5 + 0.2 * epoch,
                     "val/loss": 1.3 - 0.4 * epoch})  # fmt: skip
        rows.append({"epoch": epoch, "step": end, "train/acc": 0.4 + 0.2 * epoch,
                     "train/loss_epoch": loss})  # fmt: skip
    return rows


def test_curves_draw_the_logged_epoch_mean_of_the_train_loss(tmp_path):
    csv_path = _write_metrics(tmp_path / "metrics.csv", _run_log())
    fig = curves_figure(csv_path)
    loss, acc = fig.axes
    assert len(fig.axes) == 2 and (loss.get_title(), acc.get_title()) == ("Loss", "Accuracy")
    curves = {line.get_label(): line for line in loss.get_lines()}
    assert sorted(curves) == ["train/loss_epoch (epoch mean)", "val/loss"]
    train = curves["train/loss_epoch (epoch mean)"]
    assert list(train.get_xdata()) == [1, 2]  # epochs 1-based
    assert list(train.get_ydata()) == pytest.approx([1.2845, 0.8123])  # not the steps' 1.5, 0.6
    assert [t.get_text() for t in loss.get_legend().get_texts()] == list(curves)
    assert list(curves["val/loss"].get_ydata()) == pytest.approx([1.3, 0.9])
    accuracy = {line.get_label(): list(line.get_ydata()) for line in acc.get_lines()}
    assert accuracy == {"train/acc (epoch)": pytest.approx([0.4, 0.6]),
                        "val/acc": pytest.approx([0.5, 0.7])}  # fmt: skip

    out = plot_curves(csv_path, tmp_path / "curves.png", figsize=(8, 3), dpi=50)
    assert_png(out, (8, 3), 50)
    assert_drawn(out)
    # Other logged steps draw the same picture; other epoch means another one.
    steps = _write_metrics(tmp_path / "steps.csv", _run_log(step_losses=((9.0, 0.1), (5.0, 0.2))))
    same = plot_curves(steps, tmp_path / "same.png", figsize=(8, 3), dpi=50)
    assert changed(out, same) == 0
    means = _write_metrics(tmp_path / "means.csv", _run_log(epoch_losses=(1.2845, 0.2)))
    other = plot_curves(means, tmp_path / "other.png", figsize=(8, 3), dpi=50)
    assert changed(out, other) > 0.001


def test_load_epoch_metrics_averages_values_logged_twice_in_an_epoch(tmp_path):
    rows = _run_log()
    rows.insert(1, {"epoch": 0, "step": 49, "val/loss": 1.7, "val/acc": 0.3})  # mid-epoch val
    metrics = load_epoch_metrics(_write_metrics(tmp_path / "metrics.csv", rows))
    assert metrics["val/loss"] == pytest.approx({0: 1.5, 1: 0.9})
    assert metrics["train/loss_epoch"] == pytest.approx({0: 1.2845, 1: 0.8123})
    assert "train/loss" not in metrics  # the logged steps are not a curve


def test_plot_curves_skips_missing_columns(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,train/loss_epoch,lr\n0,1,2.0,\n1,2,1.5,\n,3,,0.1\n")
    assert load_epoch_metrics(csv_path) == {"train/loss_epoch": {0: 2.0, 1: 1.5}}
    fig = curves_figure(csv_path)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [
        "train/loss_epoch (epoch mean)"
    ]
    assert fig.axes[1].get_lines() == [] and fig.axes[1].texts[0].get_text() == "no data"
    out = plot_curves(csv_path, tmp_path / "curves.png")
    assert png_size(out) == (1000, 400)
    with pytest.raises(FileNotFoundError):
        plot_curves(tmp_path / "missing.csv", tmp_path / "none.png")


# --------------------------------------------------------------------------- Grad-CAM
def _one_pixel_model(stride: int) -> nn.Sequential:
    """conv (centre tap) -> ReLU -> global max pool -> linear: class 0 score = the bright pixel."""
    conv = nn.Conv2d(1, 2, 3, stride=stride, padding=1, bias=False)
    linear = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # channel 0 copies the input
        conv.weight[1, 0, 1, 1] = -1.0  # channel 1 is its negative (ReLU kills it)
        linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    return nn.Sequential(conv, nn.ReLU(inplace=True), nn.AdaptiveMaxPool2d(1), nn.Flatten(), linear)


@pytest.mark.parametrize("stride", [1, 2])
def test_gradcam_known_answer(stride):
    pixels = [(4, 6), (10, 2), (14, 14)]  # even: on a stride-2 conv's centre taps
    x = torch.zeros(len(pixels), 1, 16, 16)
    for i, (r, c) in enumerate(pixels):
        x[i, 0, r, c] = 1.0
    model = _one_pixel_model(stride)
    model.train()
    layer = model[0]
    with GradCAM(model, layer) as cam:
        heat = cam(x)
        assert cam.logits.argmax(1).tolist() == [0, 0, 0]
    assert heat.shape == (len(pixels), 16, 16)
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    for i, (r, c) in enumerate(pixels):
        peak = divmod(int(heat[i].argmax()), 16)
        assert abs(peak[0] - r) <= 1 and abs(peak[1] - c) <= 1, (peak, (r, c))
        if stride == 1:
            assert peak == (r, c)
            assert heat[i, r, c] == 1.0
    # No hooks left, mode unchanged, no gradients accumulated in parameters.
    assert len(layer._forward_hooks) == 0 and len(layer._backward_hooks) == 0
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_target_inference_mode_and_remove():
    model = _one_pixel_model(1)
    model.eval()
    model[1].train()  # a submodule with its own flag must keep it
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0
    cam = GradCAM(model, model[0])
    with torch.inference_mode():  # as in Lightning's on_test_end
        heat = cam(x, target=torch.tensor([1, 1]))
    assert heat.shape == (2, 8, 8)
    assert torch.all(heat == 0)  # class 1 only sees a ReLU-killed channel: empty map
    heat0 = cam(x, target=0)
    assert divmod(int(heat0[0].argmax()), 8) == (4, 4)
    assert not model.training and model[1].training
    cam.remove()
    assert len(model[0]._forward_hooks) == 0
    with pytest.raises(RuntimeError):
        cam(x)


def test_gradcam_on_linear_layer_uses_gradient_times_input():
    """A fully connected classifier has no conv: its first Linear's input (the image) is used."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, 64 + 5 * 8 + 3] = 1.0  # class 0 reads channel 1, pixel (5, 3)
    x = torch.rand(2, 2, 8, 8) * 0.1
    x[:, 1, 5, 3] = 1.0
    with GradCAM(model, model[1]) as cam:
        heat = cam(x, target=0)
    assert heat.shape == (2, 8, 8)
    assert [divmod(int(h.argmax()), 8) for h in heat] == [(5, 3), (5, 3)]
    assert all(p.grad is None for p in model.parameters())


def test_plot_gradcam_overlays_each_heat_map_on_its_image(tmp_path):
    g = torch.Generator().manual_seed(2)
    images = torch.randn(5, 3, 12, 12, generator=g)
    heat = torch.rand(5, 6, 6, generator=g)  # another size: resized to the images
    titles = [f"true: {i}\npred: {i}" for i in range(5)]
    fig = gradcam_figure(images, heat, titles, ncol=3)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 6 and len(panels) == 5  # 2 rows of 3, the sixth left empty
    assert [ax.get_title() for ax in panels] == titles
    resized = F.interpolate(heat.unsqueeze(1), size=(12, 12), mode="bilinear")[:, 0]
    for i, ax in enumerate(panels):
        image, overlay = ax.images  # the image, then its heat map over it
        np.testing.assert_allclose(np.asarray(image.get_array()), images_to_numpy(images)[i])
        np.testing.assert_allclose(np.asarray(overlay.get_array()), resized[i].numpy(), atol=1e-6)
        assert 0 < overlay.get_alpha() < 1

    out = plot_gradcam(
        images, heat, tmp_path / "gc.png", titles=titles, ncol=3, figsize=(4.8, 3.6), dpi=50
    )
    assert_png(out, (4.8, 3.6), 50)
    assert_drawn(out)
    other = plot_gradcam(
        images, heat.flip(-1), tmp_path / "other.png", titles=titles, ncol=3, figsize=(4.8, 3.6),
        dpi=50,
    )  # fmt: skip
    assert changed(out, other) > 0.02  # other heat maps over the same images
    out = plot_gradcam(images[:, :1], heat, tmp_path / "gc_default.png")
    assert png_size(out) == (800, 180)  # 5 columns x 1.6 in, 1 row x 1.8 in


# --------------------------------------------------------------------------- callback
class FakeNetwork(nn.Module):
    """Follows the stn_lab network interface: optional affine STN(s), then a tiny conv classifier.

    kind: "cnn" (no STN), "input" (one STN on the input), "parallel" (two input STNs stacked
    along channels) or "feature" (an STN between the classifier's conv and its head, so
    ``transform_input`` returns ``x`` itself).
    """

    def __init__(self, kind: str, num_classes: int = 3) -> None:
        super().__init__()
        self.kind = kind
        copies = {"cnn": 0, "input": 1, "parallel": 2, "feature": 1}[kind]
        self.has_stn = copies > 0
        self.locs = nn.ModuleList()
        for k in range(copies):
            loc = nn.Linear(16 * 16 if kind != "feature" else 4 * 16 * 16, 6)
            with torch.no_grad():
                loc.weight.zero_()
                loc.bias.copy_(torch.tensor([0.8 - 0.3 * k, 0.0, 0.0, 0.0, 0.8, 0.1 * k]))
            self.locs.append(loc)
        self.classifier = nn.Sequential(
            nn.Conv2d(max(copies, 1) if kind != "feature" else 1, 4, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, num_classes),
        )

    def _warp(self, loc: nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
        theta = loc(x.flatten(1)).view(-1, 2, 3)
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("cnn", "feature"):
            return x
        return torch.cat([self._warp(loc, x, 12) for loc in self.locs], dim=1)

    def gradcam_layer(self) -> nn.Module:
        return self.classifier[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "feature":
            features = self._warp(self.locs[0], self.classifier[0](x), 16)
            return self.classifier[1:](features)
        return self.classifier(self.transform_input(x))


class FakeModule(L.LightningModule):
    """``late_results``: set ``test_results`` in ``on_test_end`` (after the callbacks' hook)."""

    def __init__(self, kind: str, late_results: bool = False) -> None:
        super().__init__()
        self.network = FakeNetwork(kind)
        self.late_results = late_results
        self.test_results = None
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self.network(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        if stage == "train":  # as ClassifierModule logs it: the logged steps, the epoch mean
            self.log("train/loss", loss, on_step=True, on_epoch=False)
            self.log("train/loss_epoch", loss, on_step=False, on_epoch=True)
        else:
            self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        x, y = batch
        self._preds.append(self.network(x).argmax(1))
        self._targets.append(y)

    def _results(self) -> dict:
        preds, targets = torch.cat(self._preds), torch.cat(self._targets)
        cm = torch.bincount(targets * 3 + preds, minlength=9).view(3, 3)
        return {
            "acc": float((preds == targets).float().mean()),
            "loss": 0.0,
            "acc_per_class": (cm.diag() / cm.sum(1).clamp_min(1)).tolist(),
            "confusion_matrix": cm.tolist(),
        }

    def on_test_epoch_end(self):
        if not self.late_results:
            self.test_results = self._results()

    def on_test_end(self):
        if self.late_results:
            self.test_results = self._results()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class FakeDataModule(L.LightningDataModule):
    class_names = ["zero", "one", "two"]

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(24, 1, 16, 16, generator=g)
        self.y = torch.arange(24) % 3

    def _loader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=8)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()

    def test_dataloader(self):
        return self._loader()

    def fixed_batch(self, stage: str = "test", n: int = 16):
        return self.x[:n].clone(), self.y[:n].clone()


def _run(
    tmp_path: Path, kind: str, late_results: bool = False, **trainer_kwargs
) -> tuple[RunArtefacts, Path]:
    out_dir = tmp_path / "artefacts"
    callback = RunArtefacts(out_dir, snapshot_epochs=(1,), num_images=6)
    kwargs = dict(
        max_epochs=2,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        log_every_n_steps=1,
        callbacks=[callback],
    )
    kwargs.update(trainer_kwargs)
    trainer = L.Trainer(**kwargs)
    module, dm = FakeModule(kind, late_results), FakeDataModule()
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    return callback, out_dir


TEST_FILES = {"confusion_matrix.png", "confusion_matrix.csv", "gradcam.png"}
STN_FILES = {"stn.png", "stn_epochs.png"}


def _files(out_dir: Path) -> set[str]:
    names = {p.name for p in out_dir.iterdir()}
    for name in names - {"confusion_matrix.csv"}:
        png_size(out_dir / name)  # every picture is a PNG, with something drawn in it
        assert_drawn(out_dir / name, **({"colour": 0.05} if name.startswith("confusion") else {}))
    return names


def test_callback_writes_all_files_for_stn(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stn_lab")
    callback, out_dir = _run(tmp_path, "input")
    names = _files(out_dir)
    assert names == STN_FILES | {"curves.png"} | TEST_FILES
    assert sorted(callback.snapshots) == [1, 2]  # epoch 1 asked for, 2 is the last
    assert callback.snapshots[2].shape == (6, 1, 12, 12)
    assert png_size(out_dir / "stn_epochs.png") == (700, 300)  # 6 images + labels, 3 rows
    matrix, read_names = read_confusion_csv(out_dir / "confusion_matrix.csv")
    assert read_names == FakeDataModule.class_names and matrix.sum() == 24
    written = [r.getMessage() for r in caplog.records if r.name == "stn_lab"]
    assert sorted(Path(m.split(" ", 1)[1]).name for m in written) == sorted(names)
    # curves.png is the logged metrics.csv's epoch means: the same picture drawn again from it.
    (metrics_csv,) = tmp_path.rglob("metrics.csv")
    assert load_epoch_metrics(metrics_csv)["train/loss_epoch"].keys() == {0, 1}
    redrawn = plot_curves(metrics_csv, tmp_path / "curves.png")
    assert changed(out_dir / "curves.png", redrawn) == 0


def test_callback_writes_every_file_atomically(tmp_path, monkeypatch):
    import stn_lab.atomic

    written = []
    write = stn_lab.atomic.atomic_write

    def recording_write(path, data):
        written.append(Path(path).name)
        return write(path, data)

    monkeypatch.setattr(stn_lab.atomic, "atomic_write", recording_write)
    _, out_dir = _run(tmp_path, "input")
    expected = STN_FILES | {"curves.png"} | TEST_FILES
    assert sorted(written) == sorted(_files(out_dir)) == sorted(expected)


def test_callback_skips_stn_files_for_cnn(tmp_path):
    callback, out_dir = _run(tmp_path, "cnn")
    assert _files(out_dir) == {"curves.png"} | TEST_FILES
    assert callback.snapshots == {}


def test_callback_feature_map_stn_is_drawn_like_a_cnn(tmp_path):
    callback, out_dir = _run(tmp_path, "feature")
    assert _files(out_dir) == {"curves.png"} | TEST_FILES
    assert callback.snapshots == {}


def test_callback_parallel_stns_and_late_test_results(tmp_path):
    callback, out_dir = _run(tmp_path, "parallel", late_results=True)
    assert _files(out_dir) == STN_FILES | {"curves.png"} | TEST_FILES
    assert callback.snapshots[2].shape == (6, 2, 12, 12)  # two STN views stacked
    assert png_size(out_dir / "stn_epochs.png") == (700, 500)  # input + 2 epochs x 2 STNs


def test_callback_fast_dev_run_has_no_curves(tmp_path):
    _, out_dir = _run(tmp_path, "input", fast_dev_run=True)
    assert _files(out_dir) == STN_FILES | TEST_FILES
