"""CoordConv (Liu et al. 2018, arXiv 1807.03247): a convolution that also sees where it is.

Two channels holding the normalised x and y coordinate of each pixel (and optionally the radius
from the centre) are appended to the input before an ordinary convolution.
"""

from __future__ import annotations

import torch
from torch import nn


def coordinate_channels(
    batch: int, height: int, width: int, with_r: bool, device=None, dtype=None
) -> torch.Tensor:
    """``[batch, 2 or 3, H, W]``: x in [-1, 1] along the width, y along the height, then radius."""
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    channels = [xx, yy]
    if with_r:
        channels.append(torch.sqrt(xx**2 + yy**2))
    return torch.stack(channels).unsqueeze(0).expand(batch, -1, -1, -1)


class CoordConv2d(nn.Module):
    """A drop-in for ``nn.Conv2d(in_channels, out_channels, kernel_size, ...)``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, with_r: bool = False, **conv_kwargs
    ):
        super().__init__()
        self.with_r = with_r
        extra = 3 if with_r else 2
        self.conv = nn.Conv2d(in_channels + extra, out_channels, kernel_size, **conv_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        coords = coordinate_channels(n, h, w, self.with_r, device=x.device, dtype=x.dtype)
        return self.conv(torch.cat([x, coords], dim=1))
