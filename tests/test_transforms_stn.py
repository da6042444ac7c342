"""The STN's maths: identity start, known transforms moving a marked pixel, gradient flow, and
the rotation conventions of the similarity family and the affine distortion."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torchvision.transforms.functional import InterpolationMode, rotate

from stn_lab.data.distortions import AffineDistortion
from stn_lab.models.coordconv import CoordConv2d, coordinate_channels
from stn_lab.models.localisers import Localiser
from stn_lab.models.stn import SpatialTransformer
from stn_lab.models.transforms.affine import Affine
from stn_lab.models.transforms.attention import Attention
from stn_lab.models.transforms.projective import Projective
from stn_lab.models.transforms.similarity import Similarity
from stn_lab.models.transforms.tps import ThinPlateSpline

FAMILIES = [Affine, Attention, Similarity]


def make_stn(family=Affine, size=28, channels=1, **kwargs) -> SpatialTransformer:
    # Tiny marker images get a fully connected localiser: the conv stack needs >= 20 px.
    convs = ((8, 10), (7, 5)) if size >= 20 else ((), ())
    localiser = functools.partial(Localiser, channels=convs[0], kernel_sizes=convs[1], hidden=(32,))
    return SpatialTransformer(localiser, family(), channels, size, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_identity_initialisation_returns_input(family, padding_mode):
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    stn = make_stn(family, padding_mode=padding_mode)
    assert torch.allclose(stn.theta(x), family().identity().expand(4, -1))
    assert (stn(x) - x).abs().max() < 1e-5


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_holds_for_both_corner_conventions(align_corners):
    x = torch.rand(2, 3, 32, 32)
    stn = make_stn(size=32, channels=3, align_corners=align_corners)
    assert (stn(x) - x).abs().max() < 1e-5


def marked(size: int, row: int, col: int) -> torch.Tensor:
    x = torch.zeros(1, 1, size, size)
    x[0, 0, row, col] = 1.0
    return x


def peak(image: torch.Tensor) -> tuple[int, int, float]:
    flat = image[0, 0].flatten()
    index = int(flat.argmax())
    size = image.shape[-1]
    return index // size, index % size, float(flat.max())


def test_rotation_by_90_degrees_moves_marked_pixel():
    # Output pixel p samples input R p; with R = [[0, -1], [1, 0]] the input point (x, y)
    # appears at (y, -x): a pixel 2 columns right of centre moves 2 rows above it.
    stn = make_stn(size=9)
    theta = torch.tensor([[0.0, -1.0, 0.0, 1.0, 0.0, 0.0]])
    row, col, value = peak(stn.warp(marked(9, 4, 6), theta))
    assert (row, col) == (2, 4) and value == pytest.approx(1.0, abs=1e-5)


def test_zoom_by_two_doubles_offset_from_centre():
    # theta = 0.5 * I samples the central half of the input: offsets from the centre double.
    stn = make_stn(size=9)
    theta = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.5, 0.0]])
    row, col, value = peak(stn.warp(marked(9, 3, 5), theta))
    assert (row, col) == (2, 6) and value == pytest.approx(1.0, abs=1e-5)


def test_shift_moves_marked_pixel_by_whole_pixels():
    # A translation of -2 pixels (in normalised units 2 * 2/9) in the sampling grid moves the
    # content 2 pixels right and 1 pixel down.
    stn = make_stn(size=9)
    step = 2.0 / 9
    theta = torch.tensor([[1.0, 0.0, -2 * step, 0.0, 1.0, -1 * step]])
    row, col, value = peak(stn.warp(marked(9, 4, 4), theta))
    assert (row, col) == (5, 6) and value == pytest.approx(1.0, abs=1e-5)


def test_similarity_family_matches_affine_matrix():
    angle, scale, tx, ty = 0.3, 1.2, 0.1, -0.2
    similarity = Similarity().matrix(torch.tensor([[angle, scale, tx, ty]]))
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    assert torch.allclose(similarity, torch.tensor([[[c, -s, tx], [s, c, ty]]]))
    attention = Attention().matrix(torch.tensor([[0.5, 0.1, 0.2]]))
    assert torch.allclose(attention, torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, 0.2]]]))


def test_output_size_may_differ_from_input():
    stn = make_stn(size=60, out_size=28)
    assert stn(torch.rand(2, 1, 60, 60)).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("family", [*FAMILIES, Projective, ThinPlateSpline])
def test_gradients_reach_the_localiser(family):
    torch.manual_seed(0)
    stn = make_stn(family)
    x = torch.rand(8, 1, 28, 28)
    target = torch.roll(x, shifts=3, dims=-1)
    optimiser = torch.optim.SGD(stn.parameters(), lr=0.1)
    for _ in range(2):  # the head starts at zero weights: the first step moves it,
        optimiser.zero_grad()  # the second sends gradient into the conv layers
        ((stn(x) - target) ** 2).mean().backward()
        optimiser.step()
    assert stn.head.weight.grad.abs().sum() > 0
    first_conv = stn.localiser.features[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="padding_mode"):
        make_stn(padding_mode="wrap")
    with pytest.raises(ValueError, match="lr_mult"):
        make_stn(lr_mult=0)


@pytest.mark.parametrize("with_r", [False, True])
def test_coordconv_channels_hold_normalised_coordinates(with_r):
    coords = coordinate_channels(2, 5, 7, with_r)
    assert coords.shape == (2, 3 if with_r else 2, 5, 7)
    xs, ys = coords[0, 0], coords[0, 1]
    assert torch.allclose(xs[0], torch.linspace(-1, 1, 7)) and torch.allclose(xs[:, 3], xs[0, 3])
    assert torch.allclose(ys[:, 0], torch.linspace(-1, 1, 5)) and torch.allclose(ys[2], ys[2, 0])
    if with_r:
        assert torch.allclose(coords[0, 2], torch.sqrt(xs**2 + ys**2))
    conv = CoordConv2d(1, 4, 3, with_r=with_r)
    assert conv.conv.in_channels == (4 if with_r else 3)
    assert conv(torch.rand(2, 1, 10, 10)).shape == (2, 4, 8, 8)


# --- rotation convention ----------------------------------------------------------------------


def asymmetric_image(size: int = 16) -> torch.Tensor:
    """An L with a dot: no rotation or mirror maps it onto itself."""
    x = torch.zeros(1, 1, size, size)
    x[0, 0, 3:12, 4] = 1.0  # the upright stroke
    x[0, 0, 11, 4:9] = 0.7  # the foot, to the right
    x[0, 0, 2, 11] = 0.4  # a dot at the top right
    return x


@pytest.mark.parametrize("degrees", [90.0, 30.0, -60.0])
def test_distortion_angles_turn_clockwise_opposite_to_torchvision(degrees):
    # AffineDistortion's angle a is torchvision's rotate by -a: positive is clockwise.
    x = asymmetric_image()
    params = torch.tensor([[degrees, 1.0, 0.0, 0.0]])
    ours = AffineDistortion().apply(x, params)
    theirs = rotate(x, -degrees, interpolation=InterpolationMode.BILINEAR)
    assert (ours - theirs).abs().max() < 1e-5
    mirrored = rotate(x, degrees, interpolation=InterpolationMode.BILINEAR)
    assert (ours - mirrored).abs().max() > 0.1  # the image tells the two directions apart


@pytest.mark.parametrize("degrees", [90.0, 30.0, -60.0])
def test_similarity_angles_turn_counter_clockwise_like_torchvision(degrees):
    # The STN's similarity family samples the input with s R(angle): positive angles turn the
    # content counter-clockwise, as torchvision's rotate does.
    x = asymmetric_image()
    stn = make_stn(Similarity, size=16)
    ours = stn.warp(x, torch.tensor([[math.radians(degrees), 1.0, 0.0, 0.0]]))
    theirs = rotate(x, degrees, interpolation=InterpolationMode.BILINEAR)
    assert (ours - theirs).abs().max() < 1e-5
