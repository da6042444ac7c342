"""Data: real-format fixture files through the real DataModules, distortions, splits, errors."""

from __future__ import annotations

import gzip
import math

import pytest
import torch
from conftest import make_cifar_dataset, make_idx_dataset, write_idx

from stn_lab.data import sources
from stn_lab.data.datamodules import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SyntheticDataModule,
)
from stn_lab.data.distortions import AffineDistortion

RTS = dict(rotation=(-45, 45), scale=(0.7, 1.2), canvas=42)


def test_idx_files_load_through_mnist_datamodule(tmp_path):
    make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=100, n_test=30)
    dm = MNISTDataModule(data_dir=tmp_path, val_size=20, batch_size=16, download=False)
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [80, 20, 30]
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (16, 1, 28, 28) and y.shape == (16,)
    images = dm.prepare_images(x, train=False)
    assert images.dtype == torch.float32 and images.shape == (16, 1, 28, 28)


def test_gzipped_idx_files_are_read(tmp_path):
    folder = make_idx_dataset(tmp_path / "plain", n_train=10, n_test=5)
    gz_folder = tmp_path / "FashionMNIST" / "raw"
    gz_folder.mkdir(parents=True)
    for f in folder.iterdir():
        (gz_folder / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
    images, labels = sources.load_idx_split(gz_folder, "train")
    assert images.shape == (10, 1, 28, 28) and labels.tolist() == [i % 10 for i in range(10)]


def test_fashion_mnist_is_copied_from_a_system_folder_without_writing_there(tmp_path):
    system = make_idx_dataset(tmp_path / "system", n_train=60, n_test=20)
    before = sorted(p.name for p in system.iterdir())
    dm = FashionMNISTDataModule(
        data_dir=tmp_path / "root", val_size=10, download=False, system_dirs=[str(system)]
    )
    dm.setup()
    assert len(dm.splits["test"]) == 20
    assert (tmp_path / "root" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert sorted(p.name for p in system.iterdir()) == before
    assert dm.class_names[0] == "T-shirt/top"


def test_cifar_pickles_load_through_cifar_datamodule(tmp_path):
    make_cifar_dataset(tmp_path, per_batch=20)
    dm = CIFAR10DataModule(data_dir=tmp_path, val_size=10, download=False)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [90, 10, 20]
    x, _ = dm.fixed_batch("test", 4)
    assert x.shape == (4, 3, 32, 32) and dm.in_channels == 3 and dm.num_classes == 10


def test_missing_data_offline_gives_one_clear_error(tmp_path):
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    with pytest.raises(sources.DataError) as err:
        dm.setup()
    message = str(err.value)
    assert "mnist not found" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "make data" in message and "\n" not in message


def test_failed_download_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "torchvision_download", lambda name, root: "URLError: offline")
    with pytest.raises(sources.DataError, match="download failed \\(URLError: offline\\)"):
        CIFAR10DataModule(data_dir=tmp_path, download=True).setup()


def test_corrupt_idx_file_names_the_file(tmp_path):
    folder = make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=10, n_test=5)
    bad = folder / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(sources.DataError, match="train-images-idx3-ubyte is corrupt or truncated"):
        MNISTDataModule(data_dir=tmp_path, download=False).setup()
    write_idx(bad, torch.zeros(3, 2, 2, dtype=torch.uint8).numpy())
    bad.write_bytes(b"\x12\x34" + bad.read_bytes()[2:])
    with pytest.raises(sources.DataError, match="bad magic number"):
        sources.read_idx(bad)


def test_corrupt_cifar_file_names_the_file(tmp_path):
    folder = make_cifar_dataset(tmp_path, per_batch=4)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(sources.DataError, match="test_batch is not a valid CIFAR10 batch"):
        CIFAR10DataModule(data_dir=tmp_path, download=False).setup()


def test_validation_split_is_fixed_and_disjoint(tmp_path):
    make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=100, n_test=10)
    splits = []
    for seed in (0, 1):  # the training seed must not move the validation split
        torch.manual_seed(seed)
        dm = MNISTDataModule(data_dir=tmp_path, val_size=0.2, download=False)
        dm.setup()
        splits.append(dm.splits["val"].tensors[0])
    assert torch.equal(splits[0], splits[1]) and len(splits[0]) == 20


def test_same_seed_gives_identical_distorted_test_sets(tmp_path):
    make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=50, n_test=30)
    test_sets = []
    for eval_seed in (0, 0, 1):
        dm = MNISTDataModule(
            data_dir=tmp_path, val_size=10, download=False, eval_seed=eval_seed,
            distortion=AffineDistortion(**RTS),
        )  # fmt: skip
        dm.setup()
        test_sets.append(dm.splits["test"].tensors[0])
    assert test_sets[0].shape == (30, 1, 42, 42)
    assert torch.equal(test_sets[0], test_sets[1])
    assert not torch.equal(test_sets[0], test_sets[2])


def test_eval_distortion_depends_on_sample_index_not_batching(tmp_path):
    distortion = AffineDistortion(**RTS)
    images = torch.rand(10, 1, 28, 28)
    table = distortion.sample(10, 28, generator=torch.Generator().manual_seed(3))
    whole = distortion.apply(images, table)
    parts = torch.cat(
        [distortion.apply(images[:4], table[:4]), distortion.apply(images[4:], table[4:])]
    )
    assert torch.allclose(whole, parts, atol=1e-6)


def test_training_distortion_is_fresh_each_batch():
    dm = SyntheticDataModule(distortion=AffineDistortion(**RTS), num_train=64, num_test=16)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    first, second = dm.prepare_images(x, train=True), dm.prepare_images(x, train=True)
    assert first.shape[-1] == 42 and not torch.equal(first, second)
    assert torch.equal(dm.prepare_images(x, train=False), dm.prepare_images(x, train=False))


def test_rts_parameters_stay_in_range():
    distortion = AffineDistortion(**RTS)
    params = distortion.sample(5000, 28, generator=torch.Generator().manual_seed(0))
    angle, scale, tx, ty = params.unbind(1)
    assert -45 <= angle.min() and angle.max() <= 45 and angle.max() - angle.min() > 85
    assert 0.7 <= scale.min() and scale.max() <= 1.2
    assert tx.abs().max() <= 7 and ty.abs().max() <= 7  # (42 - 28) / 2


def test_distortion_rotates_a_marked_pixel_where_expected():
    # A pure 90 degree rotation takes the pixel right of centre to below it (y points down).
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 6] = 1.0
    out = AffineDistortion().apply(image, torch.tensor([[90.0, 1.0, 0.0, 0.0]]))
    row, col = divmod(int(out.flatten().argmax()), 9)
    assert (row, col) == (6, 4) and math.isclose(float(out.max()), 1.0, abs_tol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rotation=(45, -45)), "rotation range is reversed"),
        (dict(scale=(0.0, 1.2)), "scale must be > 0"),
        (dict(scale=(-1, 1)), "scale must be > 0"),
        (dict(translation=-0.1), "translation must be >= 0"),
    ],
)
def test_invalid_distortion_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AffineDistortion(**kwargs)


def test_canvas_smaller_than_image_is_rejected():
    with pytest.raises(ValueError, match="canvas 20px is smaller than the 28px image"):
        SyntheticDataModule(distortion=AffineDistortion(canvas=20))


def test_batches_come_from_tensor_indexing_in_bounded_sizes():
    dm = SyntheticDataModule(num_train=100, num_test=50, batch_size=32)
    dm.setup()
    sizes = [len(y) for _, y in dm.train_dataloader()]
    assert sum(sizes) == len(dm.splits["train"]) and max(sizes) == 32
