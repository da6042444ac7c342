"""Layer sizes worked out from the input size (nothing hard-coded), and the input-size check."""

from __future__ import annotations

import torch
from torch import nn

from stn_lab.errors import ConfigError, first_line


class InputSizeError(ConfigError):
    """Images of another size or channel count than the module was built for."""


def output_shape(module: nn.Module, in_channels: int, image_size: int) -> tuple[int, ...]:
    """Shape (without the batch dimension) of ``module`` applied to one blank image."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as err:
        raise ConfigError(
            f"a {image_size}px, {in_channels}-channel input does not fit {type(module).__name__}"
            f" layers: {first_line(str(err))}"
        ) from None
    return tuple(out.shape[1:])


def check_input(x: torch.Tensor, in_channels: int, image_size: int, name: str) -> None:
    """Raise :class:`InputSizeError` unless ``x`` is ``[N, in_channels, image_size, image_size]``;
    ``name`` says what was built for that size (e.g. "the STN").

    A shape comparison, no device sync. Without it a wrong size surfaces deep inside as a bare
    matmul error that names neither size.
    """
    if x.shape[1:] != (in_channels, image_size, image_size):
        channels = f"{in_channels} channel{'s' if in_channels > 1 else ''}"
        raise InputSizeError(
            f"{name} was built for {image_size} px inputs with {channels}"
            f" ([N, {in_channels}, {image_size}, {image_size}]), got {list(x.shape)}"
        )
