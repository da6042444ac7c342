"""Works out layer sizes from the input size by running a dummy batch, so nothing is hard-coded."""

from __future__ import annotations

import torch
from torch import nn


def output_shape(module: nn.Module, in_channels: int, image_size: int) -> tuple[int, ...]:
    """Shape (without the batch dimension) of ``module`` applied to one blank image."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as err:
        raise ValueError(
            f"a {image_size}px, {in_channels}-channel input does not fit {type(module).__name__}"
            f" layers: {str(err).splitlines()[0]}"
        ) from None
    return tuple(out.shape[1:])
