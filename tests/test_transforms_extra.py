"""The projective and thin-plate-spline families: identity, known warps, gradients, configs; and
the geometry functions under them."""

from __future__ import annotations

import doctest
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from stn_lab.config_path import compose_config
from stn_lab.geometry import grids, projective, tps
from stn_lab.models.localisers import Localiser
from stn_lab.models.stn import SpatialTransformer
from stn_lab.models.transforms.projective import Projective
from stn_lab.models.transforms.tps import ThinPlateSpline

FAMILIES = [Projective, ThinPlateSpline]


def make_stn(family=Projective, size=28, channels=1, **kwargs) -> SpatialTransformer:
    # As in test_transforms_stn.py: tiny images get a fully connected localiser.
    convs = ((8, 10), (7, 5)) if size >= 20 else ((), ())
    localiser = functools.partial(Localiser, channels=convs[0], kernel_sizes=convs[1], hidden=(32,))
    return SpatialTransformer(localiser, family(), channels, size, **kwargs)


def identity_grid(shape, align_corners):
    return F.affine_grid(torch.eye(2, 3).expand(shape[0], 2, 3), list(shape), align_corners)


def normalised(index: int, size: int, align_corners: bool) -> float:
    """Pixel index -> grid_sample coordinate, written out independently of affine_grid."""
    if align_corners:
        return 2 * index / (size - 1) - 1
    return (2 * index + 1) / size - 1


# --- identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_grid_equals_affine_identity_grid(family, align_corners):
    shape = (3, 2, 5, 7)  # non-square, so a swapped x/y layout would show
    transform = family()
    theta = transform.identity().expand(3, -1)
    grid = transform.grid(theta, shape, align_corners)
    assert grid.shape == (3, 5, 7, 2) and grid.dtype == torch.float32
    assert (grid - identity_grid(shape, align_corners)).abs().max() < 1e-6


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_initialisation_returns_input(family, padding_mode, align_corners):
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    stn = make_stn(family, padding_mode=padding_mode, align_corners=align_corners)
    assert torch.allclose(stn.theta(x), family().identity().expand(4, -1))
    assert (stn(x) - x).abs().max() < 1e-5


# --- projective -------------------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [False, True])
def test_known_homography_moves_points_to_closed_form_positions(align_corners):
    h = [1.1, 0.2, 0.05, -0.1, 0.9, -0.08, 0.15, -0.2]
    height, width = 7, 9
    grid = Projective().grid(torch.tensor([h]), (1, 1, height, width), align_corners)[0]
    for row, col in [(0, 0), (0, 8), (3, 4), (6, 0), (6, 8), (2, 5)]:
        x, y = normalised(col, width, align_corners), normalised(row, height, align_corners)
        w = h[6] * x + h[7] * y + 1
        expected = ((h[0] * x + h[1] * y + h[2]) / w, (h[3] * x + h[4] * y + h[5]) / w)
        assert grid[row, col].tolist() == pytest.approx(expected, abs=1e-5)


def test_affine_homography_matches_affine_grid():
    a = torch.tensor([[0.8, -0.3, 0.1, 0.4, 1.2, -0.2]])
    theta = torch.cat([a, torch.zeros(1, 2)], dim=1)
    grid = Projective().grid(theta, (1, 1, 6, 8), align_corners=False)
    assert torch.allclose(grid, F.affine_grid(a.view(1, 2, 3), [1, 1, 6, 8], False), atol=1e-6)


@pytest.mark.parametrize("align_corners", [False, True])
def test_homography_grid_matches_a_direct_perspective_division(align_corners):
    theta = torch.tensor([[0.9, 0.1, -0.05, -0.2, 1.1, 0.1, 0.15, -0.1],
                          [1.0, 0.0, 0.2, 0.0, 1.0, 0.0, -0.3, 0.25]])  # fmt: skip
    grid = Projective().grid(theta, (2, 1, 5, 7), align_corners=align_corners)
    points = F.affine_grid(torch.eye(2, 3).unsqueeze(0), [1, 1, 5, 7], align_corners)
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1).double()
    mapped = torch.einsum("nij,hwj->nhwi", Projective().matrix(theta).double(), homogeneous[0])
    expected = mapped[..., :2] / mapped[..., 2:]
    assert torch.allclose(grid.double(), expected, atol=1e-6)


def test_points_on_the_horizon_stay_finite():
    # w = 1 - x is exactly 0 on the last column (x = 1 with align_corners): without the clamp
    # that column would be inf/NaN and so would the gradient of the whole batch.
    theta = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0]], requires_grad=True)
    grid = Projective().grid(theta, (1, 1, 5, 5), align_corners=True)
    assert torch.isfinite(grid).all() and grid[0, :, -1, 0].min() > 1e5
    out = F.grid_sample(torch.rand(1, 1, 5, 5), grid, align_corners=True)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(theta.grad).all()


# --- thin-plate spline ------------------------------------------------------------------------


@pytest.mark.parametrize("grid_size, span", [(4, 1.0), (3, 0.8), (5, 1.2)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_tps_reproduces_affine_maps_exactly(grid_size, span, align_corners):
    tps = ThinPlateSpline(grid_size=grid_size, span=span)
    a = np.array([[0.9, -0.25], [0.3, 1.1]])
    t = np.array([0.1, -0.15])
    control = tps.identity().view(-1, 2).double().numpy()
    targets = control @ a.T + t
    theta = torch.tensor(targets, dtype=torch.float32).view(1, -1)
    height, width = 6, 5
    grid = tps.grid(theta, (1, 1, height, width), align_corners)[0].double().numpy()
    xs = np.array([normalised(c, width, align_corners) for c in range(width)])
    ys = np.array([normalised(r, height, align_corners) for r in range(height)])
    x, y = np.meshgrid(xs, ys)  # [H, W], x varying along columns
    expected = np.stack([a[0, 0] * x + a[0, 1] * y + t[0], a[1, 0] * x + a[1, 1] * y + t[1]], -1)
    assert np.abs(grid - expected).max() < 1e-5


@pytest.mark.parametrize("regularisation, tolerance", [(1e-3, 1e-3), (0.0, 1e-5)])
def test_tps_sends_control_points_to_their_targets(regularisation, tolerance):
    torch.manual_seed(0)
    tps = ThinPlateSpline(regularisation=regularisation)
    theta = tps.identity() + 0.1 * torch.randn(2, tps.num_params)
    targets = theta.view(2, -1, 2)
    mapped = tps.transform_points(theta, tps.control_points)
    assert (mapped - targets).abs().max() < tolerance
    # The grid goes through the same map: a 4x4 output with align_corners=True puts its pixel
    # centres exactly on the 4x4 lattice over [-1, 1], so the grid there is the targets.
    grid = tps.grid(theta, (2, 1, 4, 4), align_corners=True)
    assert (grid.view(2, -1, 2) - targets).abs().max() < tolerance


def test_tps_regularisation_only_smooths_non_affine_warps():
    # Regularisation trades accuracy at the control points for less bending, so a stronger
    # lambda leaves the control points further from bent targets.
    torch.manual_seed(1)
    theta = ThinPlateSpline().identity() + 0.1 * torch.randn(1, 32)
    errors = []
    for regularisation in (0.0, 1e-2, 1.0):
        tps = ThinPlateSpline(regularisation=regularisation)
        mapped = tps.transform_points(theta, tps.control_points)
        errors.append(float((mapped - theta.view(1, -1, 2)).abs().max()))
    assert errors[0] < 1e-5 < errors[1] < errors[2]


def test_tps_parameter_count_follows_grid_size():
    tps = ThinPlateSpline(grid_size=3)
    assert tps.num_params == 18 and tps.identity().shape == (18,)
    assert ThinPlateSpline().num_params == 32 and Projective().num_params == 8
    # Control points row-major, x fastest: [x0, y0, x1, y1, ...] starting at the top left.
    assert tps.identity()[:6].tolist() == pytest.approx([-1.0, -1.0, 0.0, -1.0, 1.0, -1.0])
    assert make_stn(functools.partial(ThinPlateSpline, grid_size=3)).head.out_features == 18
    # The buffers are derived from the config, so they stay out of checkpoints.
    assert ThinPlateSpline().state_dict() == {}


def test_tps_bad_options_are_rejected():
    with pytest.raises(ValueError, match="grid_size"):
        ThinPlateSpline(grid_size=1)
    with pytest.raises(ValueError, match="regularisation"):
        ThinPlateSpline(regularisation=-1.0)
    with pytest.raises(ValueError, match="span"):
        ThinPlateSpline(span=0.0)


# --- both families ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_grid_stays_fp32_under_autocast(family):
    torch.manual_seed(0)
    transform = family()
    theta = transform.identity() + 0.05 * torch.randn(2, transform.num_params)
    reference = transform.grid(theta, (2, 1, 12, 12), align_corners=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grid = transform.grid(theta.bfloat16(), (2, 1, 12, 12), align_corners=False)
    assert grid.dtype == torch.float32
    # Only the bf16 rounding of theta itself remains (~4e-3 relative), not bf16 arithmetic.
    assert (grid - reference).abs().max() < 2e-2


@pytest.mark.parametrize("name, family", [("projective", Projective), ("tps", ThinPlateSpline)])
def test_yaml_options_build_a_working_stn_model(name, family):
    cfg = compose_config([f"transform={name}"])
    transform = instantiate(cfg.transform)
    assert type(transform) is family
    if family is ThinPlateSpline:
        assert transform.grid_size == 4 and transform.regularisation == pytest.approx(1e-3)
    net = instantiate(cfg.model, in_channels=1, image_size=28, num_classes=10)
    assert type(net.stns[0].transform) is family
    assert net.stns[0].head.out_features == transform.num_params
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_tps_grid_size_is_overridable_from_the_command_line():
    cfg = compose_config(["transform=tps", "transform.grid_size=3"])
    net = instantiate(cfg.model, in_channels=1, image_size=28, num_classes=10)
    assert net.stns[0].head.out_features == 18
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


# --- geometry (the functions both families and the distortions build on) ----------------------


@pytest.mark.parametrize("module", [grids, projective, tps])
def test_geometry_docstring_examples_hold(module):
    failures, tried = doctest.testmod(module)
    assert tried > 0 and failures == 0


def test_homography_sends_the_moved_corners_to_the_image_corners():
    torch.manual_seed(0)
    corners = torch.tensor(projective.IMAGE_CORNERS)
    moved = corners + 0.2 * torch.randn(3, 4, 2)
    homography = projective.homography_from_corners(moved)
    mapped = torch.cat([moved, torch.ones(3, 4, 1)], dim=-1) @ homography.transpose(1, 2)
    assert torch.allclose(mapped[..., :2] / mapped[..., 2:], corners.expand(3, -1, -1), atol=1e-5)


def test_invert_affine_undoes_the_map():
    torch.manual_seed(0)
    matrix = torch.eye(2, 3) + 0.3 * torch.randn(4, 2, 3)
    bottom = torch.tensor([0.0, 0.0, 1.0]).expand(4, 1, 3)
    square = torch.cat([matrix, bottom], dim=1)
    inverse = torch.cat([grids.invert_affine(matrix), bottom], dim=1)
    assert torch.allclose(inverse @ square, torch.eye(3).expand(4, -1, -1), atol=1e-5)


def test_tps_displacements_must_cover_a_square_lattice():
    with pytest.raises(ValueError, match="grid_size"):
        tps.tps_grid(torch.zeros(1, 15, 2), (1, 1, 4, 4), align_corners=False)
