"""The one cache for constant tensors that grids are built from (bases, lattices, solves)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def cached(build: Callable[..., T]) -> Callable[..., T]:
    """Memoise ``build``, a function of hashable arguments (sizes, flags, a device) that returns
    constant tensors.

    The tensors are built outside inference mode and without autograd. The first call may come
    from validation, which Lightning runs under ``torch.inference_mode``; an inference tensor
    kept in the cache could not be saved for backward by a later training step. Callers must
    treat the results as read-only: they are shared.
    """

    @functools.wraps(build)
    def outside_inference(*args):
        with torch.inference_mode(False), torch.no_grad():
            return build(*args)

    return functools.lru_cache(maxsize=64)(outside_inference)
