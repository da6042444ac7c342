"""Grad-CAM heat maps (Selvaraju et al., 2017) and their overlay on images.

:class:`GradCAM` hooks one layer (normally the classifier's last conv): a forward hook keeps its
activations and a tensor hook on that output keeps the gradient of the target class score. The
class-activation map is ``ReLU(sum_k mean_ij(dS/dA_kij) * A_k)``, upsampled bilinearly to the
input size and min-max scaled to [0, 1] per image.

A layer without a spatial output (e.g. the first ``Linear`` of a fully connected classifier) is
explained through its *input* instead: when that input is the flattened image it is reshaped to
(N, C, H, W) and the map is ``ReLU(sum_c dS/dx_c * x_c)`` (gradient x input), since there are
no feature maps to average gradients over. The backward pass uses ``torch.autograd.grad``
with respect to the input only, so parameters' ``.grad`` are never touched, and every module's
train/eval flag is restored afterwards. It also works inside ``torch.inference_mode`` (e.g. in a
Lightning ``on_test_end`` hook).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from stn_lab.atomic import atomic_png
from stn_lab.viz.drawing import DEFAULT_DPI, images_to_numpy, show_image

__all__ = ["GradCAM", "eval_mode", "gradcam_figure", "plot_gradcam"]


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode, then restore every submodule's own train/eval flag."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


class GradCAM:
    """Grad-CAM for ``model`` at ``layer``, a submodule of ``model`` whose output is (N, K, h, w).

    If ``layer``'s output is not 4-D, its input must be the flattened model input and the map is
    gradient x input (see the module docstring).

    Use as a context manager, or call :meth:`remove` when done, to take the hooks off ``layer``::

        with GradCAM(model, model.features[-2]) as cam:
            heat = cam(x)          # (N, H, W) in [0, 1], target = predicted class
            pred = cam.logits.argmax(1)

    After a call, ``logits`` holds the model's (detached) output for that batch.
    """

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        self.model = model
        self.layer = layer
        self.logits: Tensor | None = None
        self._activations: Tensor | None = None
        self._gradients: Tensor | None = None
        self._spatial = True  # False: explaining the layer's (flattened image) input
        self._handle = layer.register_forward_hook(self._forward_hook)

    def _forward_hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self._spatial = isinstance(output, Tensor) and output.ndim == 4
        watched = output if self._spatial else (inputs[0] if inputs else None)
        if not isinstance(watched, Tensor):
            raise TypeError("the Grad-CAM layer must take or return one tensor")
        # Clone: a following in-place op (e.g. ReLU(inplace=True)) would change the values.
        self._activations = watched.detach().clone()
        if watched.requires_grad:
            watched.register_hook(self._gradient_hook)

    def _gradient_hook(self, grad: Tensor) -> None:
        self._gradients = grad.detach()

    def remove(self) -> None:
        """Take the hook off the layer; the object can no longer be called."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> GradCAM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __call__(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Heat maps (N, H, W) in [0, 1] for the (N, C, H, W) batch ``x``, on ``x``'s device.

        ``target`` is a class index per image (or one int for all); default: the predicted class.
        """
        if self._handle is None:
            raise RuntimeError("GradCAM hooks were removed; create a new GradCAM")
        self._activations = self._gradients = None
        with torch.inference_mode(False), torch.enable_grad(), eval_mode(self.model):
            # A fresh leaf that requires grad: the graph then reaches `layer` even if the
            # parameters are frozen, and gradients go to the input, never to parameter .grad.
            inp = x.detach().clone().requires_grad_(True)
            logits = self.model(inp)
            if self._activations is None:
                raise RuntimeError("the Grad-CAM layer was not called by the model's forward")
            if target is None:
                target = logits.argmax(dim=1)
            # clone(): a target made under inference_mode cannot be saved for backward.
            target = torch.as_tensor(target, device=logits.device).long().reshape(-1).clone()
            target = target.expand(logits.shape[0]) if target.numel() == 1 else target
            score = logits.gather(1, target.view(-1, 1)).sum()
            torch.autograd.grad(score, inp, allow_unused=True)
        self.logits = logits.detach()
        acts, grads = self._activations, self._gradients
        self._activations = self._gradients = None
        if grads is None:  # the score does not depend on the layer
            grads = torch.zeros_like(acts)
        if self._spatial:
            weights = grads.mean(dim=(2, 3), keepdim=True)
        else:  # gradient x input on the flattened image the layer reads
            if acts.numel() != x.numel():
                raise TypeError(
                    "the Grad-CAM layer neither outputs (N, K, h, w) nor reads the flattened "
                    f"input: its input is {tuple(acts.shape)}, the model input {tuple(x.shape)}"
                )
            acts, weights = acts.reshape(x.shape), grads.reshape(x.shape)
        cam = F.relu((weights * acts).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
        cam = cam.squeeze(1)
        flat = cam.reshape(cam.shape[0], -1)
        lo = flat.min(dim=1).values.view(-1, 1, 1)
        hi = flat.max(dim=1).values.view(-1, 1, 1)
        cam = torch.where(hi > lo, (cam - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(cam))
        return cam.clamp(0.0, 1.0).to(x.device)


def gradcam_figure(
    images: Tensor,
    heatmaps: Tensor,
    titles: Sequence[str] | None = None,
    *,
    ncol: int = 8,
    alpha: float = 0.45,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Heat maps (N, h, w) in [0, 1] over images (N, C, H, W), one panel each, ``ncol`` per row.

    Heat maps of another size are resized bilinearly to the images. ``titles`` (one per image)
    go above each panel, which is why each image has its own axes rather than a share of one
    montage. The default figsize is 1.6 in per column and 1.8 in per row.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images to plot")
    if len(heatmaps) != n:
        raise ValueError(f"{n} images but {len(heatmaps)} heat maps")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{n} images but {len(titles)} titles")
    shown = images_to_numpy(images)
    heat = torch.as_tensor(heatmaps).detach().to("cpu", torch.float32)
    if heat.shape[-2:] != shown.shape[1:3]:
        heat = F.interpolate(heat.unsqueeze(1), size=shown.shape[1:3], mode="bilinear")[:, 0]
    heat = heat.clamp(0.0, 1.0).numpy()
    ncol = max(1, min(ncol, n))
    nrows = math.ceil(n / ncol)
    if figsize is None:
        figsize = (1.6 * ncol, 1.8 * nrows)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncol, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        show_image(ax, shown[i])
        ax.imshow(heat[i], cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0, interpolation="bilinear")
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    return fig


def plot_gradcam(
    images: Tensor,
    heatmaps: Tensor,
    path: str | Path,
    titles: Sequence[str] | None = None,
    *,
    ncol: int = 8,
    alpha: float = 0.45,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Write :func:`gradcam_figure` as a PNG; returns the path."""
    fig = gradcam_figure(images, heatmaps, titles, ncol=ncol, alpha=alpha, figsize=figsize)
    return atomic_png(fig, path, dpi=dpi)
