"""``F.affine_grid`` as one GEMM against a cached basis.

``F.affine_grid`` maps the grid points through each matrix with a batched matmul whose inner
size is 3, which the CPU runs poorly, forward and backward. Here the whole batch is one
``[N, 6] @ [6, H*W*2]`` GEMM that writes the interleaved ``(x, y)`` layout directly.
"""

from __future__ import annotations

import torch

from stn_lab.geometry.cache import cached
from stn_lab.geometry.grids import grid_points


@cached
def _basis(height: int, width: int, align_corners: bool, device, dtype) -> torch.Tensor:
    """``[6, H*W*2]``: row ``(j, i)`` holds output coordinate ``j`` of every grid point for the
    matrix whose only non-zero entry is ``(j, i) = 1``, so ``matrix.view(N, 6) @ basis`` is the
    batch of grids."""
    homogeneous = grid_points(height, width, align_corners, device)  # [3, H*W]
    basis = torch.zeros(2, 3, height * width, 2, device=device)
    for j in range(2):
        basis[j, :, :, j] = homogeneous
    return basis.view(6, -1).to(dtype)


def affine_grid(matrix: torch.Tensor, out_shape, align_corners: bool) -> torch.Tensor:
    """``F.affine_grid(matrix, out_shape, align_corners)`` for ``[N, 2, 3]`` matrices: the same
    grid ``[N, H, W, 2]`` up to fp32 rounding, and the same gradient."""
    n, _, height, width = out_shape
    basis = _basis(height, width, align_corners, matrix.device, matrix.dtype)
    return (matrix.reshape(n, 6) @ basis).view(n, height, width, 2)
