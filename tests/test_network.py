"""Network assembly: STN placement, several transformers, FCN baselines, parameter counts, and
the input-size check."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra.utils import instantiate

from stn_lab.config_path import compose_config
from stn_lab.models.classifiers import ConvClassifier, FCNClassifier
from stn_lab.models.localisers import Localiser
from stn_lab.models.network import Network
from stn_lab.models.shapes import InputSizeError
from stn_lab.models.stn import SpatialTransformer
from stn_lab.models.transforms.affine import Affine


def stn_factory(**localiser_kwargs):
    kwargs = dict(channels=(), kernel_sizes=(), hidden=(16,)) | localiser_kwargs
    return functools.partial(SpatialTransformer, functools.partial(Localiser, **kwargs), Affine())


@pytest.mark.parametrize("size", [28, 32, 42, 60])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_follow_the_input_size(size, channels):
    for classifier in (ConvClassifier, FCNClassifier):
        net = Network(classifier, channels, size, 10, stn=stn_factory())
        assert net(torch.rand(2, channels, size, size)).shape == (2, 10)


def test_stn_output_size_sets_the_classifier_size():
    net = Network(ConvClassifier, 1, 60, 10, stn=functools.partial(stn_factory(), out_size=28))
    assert net.transform_input(torch.rand(2, 1, 60, 60)).shape == (2, 1, 28, 28)
    assert net.classifier.head[1].in_features == 320  # the tutorial's 20 * 4 * 4


def test_feature_map_stn_sits_after_a_conv_block():
    net = Network(ConvClassifier, 1, 28, 10, stn=stn_factory(), position=1)
    stn = net.stns[0]
    assert stn.localiser.fc[0].in_features == 10 * 12 * 12 and stn.out_size == 12
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(net.transform_input(x), x)
    net.eval()  # at the identity the feature-map STN changes nothing
    plain = net.classifier(x)
    assert torch.allclose(net(x), plain, atol=1e-5)


def test_parallel_transformers_stack_their_outputs_on_channels():
    net = Network(ConvClassifier, 1, 28, 10, stn=stn_factory(), num_transformers=3)
    assert len(net.stns) == 3 and net.classifier.blocks[0][0].in_channels == 3
    x = torch.rand(2, 1, 28, 28)
    out = net.transform_input(x)
    assert out.shape == (2, 3, 28, 28) and torch.allclose(out, x.repeat(1, 3, 1, 1), atol=1e-5)
    assert net(x).shape == (2, 10)


def test_series_transformers_compose():
    net = Network(
        ConvClassifier, 1, 28, 10, stn=stn_factory(), num_transformers=2, combine="series"
    )
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        net.stns[0].head.bias.copy_(
            torch.tensor([1.0, 0, 8 / 28, 0, 1.0, 0])
        )  # shift by 4 whole pixels
        net.stns[1].head.bias.copy_(torch.tensor([1.0, 0, -8 / 28, 0, 1.0, 0]))  # and back
    inner = x[..., 4:-4, 4:-4]  # away from the borders the two shifts cancel
    assert torch.allclose(net.transform_input(x)[..., 4:-4, 4:-4], inner, atol=1e-5)
    # Counted by hand: each STN a 784 -> 16 layer and a 16 -> 6 head; the tutorial classifier
    # two 5x5 convolutions (1 -> 10 -> 20 channels), 320 -> 50 and 50 -> 10.
    stn = (784 * 16 + 16) + (16 * 6 + 6)
    classifier = (25 * 10 + 10) + (10 * 25 * 20 + 20) + (320 * 50 + 50) + (50 * 10 + 10)
    assert net.parameter_counts() == {"total": classifier + 2 * stn, "stn": 2 * stn}


def test_bad_network_options_are_rejected():
    with pytest.raises(ValueError, match="combine"):
        Network(ConvClassifier, 1, 28, 10, stn=stn_factory(), combine="stacked")
    with pytest.raises(ValueError, match="position 3"):
        Network(ConvClassifier, 1, 28, 10, stn=stn_factory(), position=3)
    with pytest.raises(ValueError, match="parallel transformers work on the input"):
        Network(ConvClassifier, 1, 28, 10, stn=stn_factory(), position=1, num_transformers=2)
    with pytest.raises(ValueError, match="does not fit"):
        Network(ConvClassifier, 1, 12, 10)


@pytest.mark.parametrize("model", ["fcn", "st_fcn", "cnn", "stn"])
def test_baselines_are_roughly_matched_in_parameters(model):
    cfg = compose_config([f"model={model}"])
    counts = instantiate(cfg.model, in_channels=1, image_size=42, num_classes=10).parameter_counts()
    assert 40_000 < counts["total"] < 80_000  # the RTS canvas; the paper matches its models too
    assert (counts["stn"] > 0) == model.startswith("st")


def test_a_wrong_input_size_names_the_built_and_the_given_size():
    # A 28 px STN model given 42 px images: a ValueError naming both sizes, not a bare matmul
    # error from the localiser's first linear layer.
    cfg = compose_config(["model=stn"])
    net = instantiate(cfg.model, in_channels=1, image_size=28, num_classes=10)
    with pytest.raises(ValueError, match=r"built for 28 px inputs .*\[2, 1, 42, 42\]") as err:
        net(torch.rand(2, 1, 42, 42))
    assert isinstance(err.value, InputSizeError)
    with pytest.raises(InputSizeError, match="this STN was built for 28 px inputs with 1 channel"):
        net.stns[0](torch.rand(2, 3, 28, 28))
    with pytest.raises(InputSizeError, match=r"28 px inputs with 1 channel \(\[N, 1, 28, 28\]\)"):
        Network(ConvClassifier, 1, 28, 10)(torch.rand(2, 1, 42, 42))  # the CNN baseline too
