"""The thin-plate-spline family: a smooth non-rigid warp steered by a lattice of control points.

The parameters are where each control point samples the input (its "target"); the spline is the
smoothest map (least bending energy) that sends every control point to its target, up to the
regularisation. It contains the affine maps: if the targets are an affine image of the control
points, the warp is exactly that affine map.

The spline is linear in the targets, so everything that depends only on the control points (the
inverse of the TPS system matrix) is solved once, in ``__init__``.
"""

from __future__ import annotations

import torch

from stn_lab.models.transforms.base import TransformFamily, base_grid


def tps_kernel(squared_distance: torch.Tensor) -> torch.Tensor:
    """``U(r) = r^2 log r^2``, written in ``d = r^2``: ``d log d``, with ``U(0) = 0``."""
    # xlogy is exactly 0 at d = 0, where d * log(d) would be 0 * -inf = NaN.
    return torch.xlogy(squared_distance, squared_distance)


def lattice(grid_size: int, span: float) -> torch.Tensor:
    """``[grid_size**2, 2]`` points ``(x, y)`` on a square lattice over ``[-span, span]^2``.

    Row-major: x varies fastest, so point ``k`` is column ``k % grid_size`` of row
    ``k // grid_size`` (rows run from y = -span, the top of the image, downwards).
    """
    axis = torch.linspace(-span, span, grid_size, dtype=torch.float64)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs, ys], dim=-1).view(-1, 2)


class ThinPlateSpline(TransformFamily):
    """``theta = [x0, y0, x1, y1, ...]``: the input position each control point samples.

    Args:
        grid_size: the control points form a ``grid_size x grid_size`` lattice (>= 2), so
            ``num_params = 2 * grid_size**2``.
        regularisation: lambda added to the kernel diagonal. 0 interpolates the targets exactly;
            a small positive value keeps the solve well conditioned and lets the spline trade a
            little accuracy at the control points for less bending. It never changes affine maps.
        span: the lattice covers ``[-span, span]^2`` in normalised coordinates.
    """

    def __init__(self, grid_size: int = 4, regularisation: float = 1e-3, span: float = 1.0):
        super().__init__()
        if grid_size < 2:  # fewer than 3 non-collinear points leave the affine part undetermined
            raise ValueError(f"grid_size must be >= 2, got {grid_size}")
        if regularisation < 0:
            raise ValueError(f"regularisation must be >= 0, got {regularisation}")
        if span <= 0:
            raise ValueError(f"span must be > 0, got {span}")
        self.grid_size = grid_size
        self.regularisation = regularisation
        self.span = span
        # Set per instance: the count follows grid_size (the STN head reads it after __init__).
        self.num_params = 2 * grid_size**2

        # The TPS system  [[U + lambda I, P], [P^T, 0]] [w; a] = [v; 0]  with U_ij = U(|c_i - c_j|)
        # and P = [1, x, y] of the control points c. Solved in fp64 (the matrix mixes kernel entries
        # up to ~17 with zeros), stored in fp32 for the grid. Only the first K columns of the
        # inverse matter: the right-hand side is zero in its last 3 rows.
        points = lattice(grid_size, span)
        k = points.shape[0]
        kernel = tps_kernel(torch.cdist(points, points).square()) + regularisation * torch.eye(
            k, dtype=torch.float64
        )
        affine = torch.cat([torch.ones(k, 1, dtype=torch.float64), points], dim=1)
        system = torch.zeros(k + 3, k + 3, dtype=torch.float64)
        system[:k, :k] = kernel
        system[:k, k:] = affine
        system[k:, :k] = affine.T
        # Buffers follow .to(device) but are not saved: both are recomputed from the config.
        self.register_buffer("control_points", points.float(), persistent=False)
        self.register_buffer(
            "solve", torch.linalg.inv(system)[:, :k].float().contiguous(), persistent=False
        )
        self._feature_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def identity(self) -> torch.Tensor:
        return self.control_points.detach().cpu().flatten().clone()

    def extra_repr(self) -> str:
        return (
            f"num_params={self.num_params}, grid_size={self.grid_size}, "
            f"regularisation={self.regularisation}, span={self.span}"
        )

    def features(self, points: torch.Tensor) -> torch.Tensor:
        """``[..., K + 3]``: the kernel to every control point, then ``[1, x, y]``."""
        control = self.control_points.to(device=points.device, dtype=points.dtype)
        squared = (points.unsqueeze(-2) - control).square().sum(-1)
        return torch.cat([tps_kernel(squared), torch.ones_like(points[..., :1]), points], dim=-1)

    def transform_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Where ``points`` sample the input under the warps ``theta`` (``[N, num_params]``).

        ``points`` are normalised ``(x, y)``, shaped ``[M, 2]`` or ``[N, M, 2]``; returns
        ``[N, M, 2]``.

        Computes ``p + TPS(theta - identity)(p)`` rather than ``TPS(theta)(p)``: the two are equal
        because the spline is linear and reproduces the identity map, but the displacement form
        is exactly ``p`` at the identity, where the direct form carries fp32 round-off of the
        solve (~1e-6 on coordinates of size 1).
        """
        with torch.autocast(device_type=theta.device.type, enabled=False):
            points = points.float()
            return points + self.features(points) @ self._coefficients(theta)

    def _coefficients(self, theta: torch.Tensor) -> torch.Tensor:
        """``[N, K + 3, 2]`` spline coefficients (kernel weights, then affine) of the
        displacement ``theta - identity``, in fp32 (call with autocast off)."""
        theta = theta.float()
        solve = self.solve.to(device=theta.device, dtype=torch.float32)
        control = self.control_points.to(device=theta.device, dtype=torch.float32)
        return solve @ (theta.reshape(theta.shape[0], -1, 2) - control)

    def grid(
        self, theta: torch.Tensor, out_shape: tuple[int, int, int, int], align_corners: bool
    ) -> torch.Tensor:
        n, _, height, width = out_shape
        points, features = self._grid_features(height, width, align_corners, theta.device)
        with torch.autocast(device_type=theta.device.type, enabled=False):
            coefficients = self._coefficients(theta)  # [N, K+3, 2]
            # transform_points for the whole batch as one GEMM, [N*2, K+3] @ [K+3, H*W], giving
            # x and y displacement planes (a batched matmul with an inner size of K+3 was several
            # times slower on the CPU, and so was adding the points to an interleaved
            # [H*W, N, 2] product: 1.5 ms against 0.55 ms for 512 grids of 28x28).
            rows = coefficients.transpose(1, 2).reshape(n * 2, -1)
            planes = (rows @ features.t()).view(n, 2, -1) + points
            return planes.transpose(1, 2).reshape(n, height, width, 2)

    def _grid_features(self, height: int, width: int, align_corners: bool, device):
        """The output grid's points as planes ``[2, H*W]`` and their features ``[H*W, K+3]``,
        cached.

        Built outside inference mode: the first call may come from validation (Lightning runs
        it under ``inference_mode``), and an inference tensor in the cache would break training.
        """
        key = (height, width, align_corners, str(device))
        if key not in self._feature_cache:
            with torch.inference_mode(False), torch.no_grad():
                points = base_grid((1, 1, height, width), align_corners, device).view(-1, 2)
                self._feature_cache[key] = (points.t().contiguous(), self.features(points))
        return self._feature_cache[key]
