"""The speed-ups keep the numbers: the ops (fast input gradient, GEMM affine grid), the cached
grid bases, allocator, data on the device, and bf16 with the STN's sampling kept in fp32."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stn_lab.build import build
from stn_lab.config_path import compose_config
from stn_lab.cpu_runtime import skip_gpu_probe, tune_allocator
from stn_lab.data.datamodules import IndexBatchSampler, SyntheticDataModule
from stn_lab.models.stn import SpatialTransformer
from stn_lab.models.transforms.affine import Affine
from stn_lab.models.transforms.projective import Projective
from stn_lab.models.transforms.tps import ThinPlateSpline
from stn_lab.ops.affine_grid import affine_grid
from stn_lab.ops.input_grad_conv import InputGradConv2d
from stn_lab.train import train


def _pair(in_channels: int, padding: int) -> tuple[InputGradConv2d, nn.Conv2d]:
    fast = InputGradConv2d(in_channels, 4, 5, padding=padding)
    reference = nn.Conv2d(in_channels, 4, 5, padding=padding)
    reference.load_state_dict(fast.state_dict())
    return fast, reference


@pytest.mark.parametrize("in_channels, padding", [(1, 0), (3, 2), (2, 1)])
def test_input_grad_conv_matches_conv2d(in_channels, padding):
    fast, reference = _pair(in_channels, padding)
    x = torch.randn(3, in_channels, 12, 10, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    assert fast._fast_path(x)
    out, out_ref = fast(x), reference(x_ref)
    torch.testing.assert_close(out, out_ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad)
    torch.testing.assert_close(fast.bias.grad, reference.bias.grad)


def test_input_grad_conv_falls_back_where_it_does_not_apply():
    x = torch.randn(2, 1, 12, 12, requires_grad=True)
    assert not InputGradConv2d(1, 4, 5)._fast_path(x.detach())  # no input gradient wanted
    assert not InputGradConv2d(1, 4, 5, stride=2)._fast_path(x)
    assert not InputGradConv2d(4, 4, 5)._fast_path(torch.randn(2, 4, 12, 12, requires_grad=True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not InputGradConv2d(1, 4, 5)._fast_path(x)
    strided = InputGradConv2d(1, 4, 5, stride=2)
    assert strided(x).shape == (2, 4, 4, 4)  # the plain Conv2d path


@pytest.mark.parametrize("align_corners", [False, True])
def test_gemm_affine_grid_matches_torch(align_corners):
    matrix = torch.randn(5, 2, 3, requires_grad=True)
    matrix_ref = matrix.detach().clone().requires_grad_()
    grid = affine_grid(matrix, (5, 1, 7, 9), align_corners)
    grid_ref = F.affine_grid(matrix_ref, [5, 1, 7, 9], align_corners=align_corners)
    torch.testing.assert_close(grid, grid_ref)
    weights = torch.randn_like(grid)
    (grid * weights).sum().backward()
    (grid_ref * weights).sum().backward()
    torch.testing.assert_close(matrix.grad, matrix_ref.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", [Affine, Projective, ThinPlateSpline])
def test_cached_grid_basis_made_during_validation_still_trains(family):
    # Lightning validates under inference_mode, possibly before the first training step: the
    # bases cached then (a size no other test uses) must still serve a backward pass.
    transform = family()
    shape = (2, 1, 11, 13)
    with torch.inference_mode():
        transform.grid(transform.identity().expand(2, -1), shape, False)
    theta = (transform.identity() + 0.01 * torch.randn(2, transform.num_params)).requires_grad_()
    grid = transform.grid(theta, shape, False)
    F.grid_sample(torch.rand(2, 1, 11, 13), grid, align_corners=False).sum().backward()
    assert theta.grad is not None and torch.isfinite(theta.grad).all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_allocator_tuning_is_accepted_by_glibc():
    assert tune_allocator() is True
    assert tune_allocator() is True  # idempotent: every entry point may call it


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "no-gpu"])
def test_gpu_probe_is_skipped_only_when_there_is_no_gpu(monkeypatch, gpu):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)  # either machine, here
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert skip_gpu_probe() is False  # the user's own setting is left alone
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert skip_gpu_probe() is (not gpu)
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == (None if gpu else "")  # hidden: no probe


def test_index_batches_are_slices_of_one_epoch_order():
    sampler = IndexBatchSampler(range(10), batch_size=4)
    batches = list(sampler)
    assert len(sampler) == 3 and [len(b) for b in batches] == [4, 4, 2]
    assert all(b.dtype == torch.long for b in batches)
    assert torch.cat(batches).tolist() == list(range(10))


class _FakeTrainer:
    """Just enough of a Trainer for the DataModule to see an accelerator device."""

    def __init__(self, device: str):
        self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()
        self.world_size, self.global_rank, self.training, self.overfit_batches = 1, 0, True, 0


def test_dataset_moves_to_the_accelerator_once_and_batches_stay_there():
    # "meta" stands in for a GPU: tensors there have shapes but no host copy to fall back on.
    datamodule = SyntheticDataModule(num_train=100, num_test=20, num_workers=2)
    datamodule.trainer = _FakeTrainer("meta")
    datamodule.setup()
    loader = datamodule.train_dataloader()
    images, labels = next(iter(loader))
    assert images.device.type == "meta" and labels.device.type == "meta"
    assert images.shape == (64, 1, 28, 28)
    assert loader.num_workers == 0  # workers cannot index device memory
    assert datamodule.splits["train"].tensors[0].device.type == "meta"
    batch = datamodule.on_after_batch_transfer((images, labels), 0)
    assert batch[0].device.type == "meta" and batch[0].dtype == torch.float32


@pytest.mark.parametrize("keep", [False, "auto"])
def test_cpu_training_and_keep_off_leave_data_where_it_is(keep):
    datamodule = SyntheticDataModule(num_train=100, num_test=20, keep_on_device=keep)
    datamodule.trainer = _FakeTrainer("cpu")
    assert datamodule.resident_device() is None
    if keep is False:
        datamodule.trainer = _FakeTrainer("meta")
        assert datamodule.resident_device() is None


def test_keep_on_device_rejects_unknown_values():
    with pytest.raises(ValueError, match="keep_on_device"):
        SyntheticDataModule(keep_on_device="gpu")


def test_bf16_autocast_keeps_grid_and_sampling_in_fp32():
    stn = SpatialTransformer(
        lambda in_channels, image_size: _TinyLocaliser(in_channels * image_size**2),
        Affine(), in_channels=1, image_size=12,
    )  # fmt: skip
    x = torch.rand(4, 1, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stn(x)
    grid, _ = stn._last_grid
    assert grid.dtype == torch.float32 and out.dtype == torch.float32
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)  # identity init: exact resampling


class _TinyLocaliser(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.fc, self.out_features = nn.Linear(features, 8), 8

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_bf16_mixed_precision_trains_end_to_end(tmp_path):
    overrides = [
        "data=synthetic", "trainer=cpu", "trainer.precision=bf16-mixed",
        "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]  # fmt: skip
    cfg = compose_config(overrides)
    record = train(cfg, tmp_path, {"model": "stn"}, overrides)
    assert record["status"] == "completed" and record["step"] == 1  # fast_dev_run: one step
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"
    # The test scored one batch (fast_dev_run) of the synthetic test set, image by image.
    datamodule = SyntheticDataModule(num_test=cfg.data.num_test)
    datamodule.setup("test")
    labels = datamodule.splits["test"].tensors[1][: cfg.data.eval_batch_size]
    table = np.load(tmp_path / "predictions.npy")
    assert table["index"].tolist() == list(range(len(labels)))
    assert table["label"].tolist() == labels.tolist()
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (table["label"], table["pred"]), 1)
    assert confusion.tolist() == record["test"]["confusion_matrix"]
    assert record["test"]["acc"] == pytest.approx((table["pred"] == table["label"]).mean())
    assert np.isfinite(record["test"]["loss"]) and (table["confidence"] >= 0.1 - 1e-3).all()


def test_classifier_first_conv_uses_the_fast_input_gradient():
    network = build(compose_config(["data=synthetic"]))[1]
    assert isinstance(network.classifier.blocks[0][0], InputGradConv2d)


@pytest.mark.parametrize("model", ["stn", "cnn"])
def test_channels_last_network_computes_what_the_nchw_one_does(model):
    nets = {
        layout: build(
            compose_config([f"model={model}", "data=synthetic", f"channels_last={layout}"])
        )[1]
        for layout in ("true", "false")
    }
    fast, plain = nets["true"], nets["false"]
    conv = fast.classifier.blocks[1][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(8, 1, 28, 28)
    losses = []
    for net in (fast, plain):
        net.eval()  # no dropout: the two must agree
        loss = net(x).logsumexp(dim=1).sum()
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(*losses, rtol=1e-4)
    for a, b in zip(fast.parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-5)
