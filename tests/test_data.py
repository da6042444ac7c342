"""Data: real-format fixture files through the real DataModules, distortions, splits, errors."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from stn_lab.config_path import compose_config
from stn_lab.data import sources
from stn_lab.data.datamodules import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SyntheticDataModule,
)
from stn_lab.data.distortions import (
    AffineDistortion,
    ClutterDistortion,
    ElasticDistortion,
    ProjectiveDistortion,
)
from stn_lab.errors import ConfigError

RTS = dict(rotation=(-45, 45), scale=(0.7, 1.2), canvas=42)


def test_idx_files_load_through_mnist_datamodule(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=100, n_test=30)
    dm = MNISTDataModule(data_dir=tmp_path, val_size=20, batch_size=16, download=False)
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [80, 20, 30]
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (16, 1, 28, 28) and y.shape == (16,)
    images = dm.prepare_images(x, train=False)
    assert images.dtype == torch.float32 and images.shape == (16, 1, 28, 28)


def test_gzipped_idx_files_are_read(tmp_path, make_idx_dataset):
    folder = make_idx_dataset(tmp_path / "plain", n_train=10, n_test=5)
    gz_folder = tmp_path / "FashionMNIST" / "raw"
    gz_folder.mkdir(parents=True)
    for f in folder.iterdir():
        (gz_folder / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
    images, labels = sources.load_idx_split(gz_folder, "train")
    assert images.shape == (10, 1, 28, 28) and labels.tolist() == [i % 10 for i in range(10)]


def test_fashion_mnist_is_copied_from_a_system_folder_without_writing_there(
    tmp_path, make_idx_dataset
):
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


def test_cifar_pickles_load_through_cifar_datamodule(tmp_path, make_cifar_dataset):
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


def test_corrupt_idx_file_names_the_file(tmp_path, make_idx_dataset, write_idx):
    folder = make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=10, n_test=5)
    bad = folder / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(sources.DataError, match="train-images-idx3-ubyte is corrupt or truncated"):
        MNISTDataModule(data_dir=tmp_path, download=False).setup()
    write_idx(bad, torch.zeros(3, 2, 2, dtype=torch.uint8).numpy())
    bad.write_bytes(b"\x12\x34" + bad.read_bytes()[2:])
    with pytest.raises(sources.DataError, match="bad magic number"):
        sources.read_idx(bad)


def garble(data: bytes, how: str) -> bytes:
    """A gzip stream damaged as downloads get damaged: bytes overwritten, cut short, bad CRC."""
    packed = gzip.compress(data)
    if how == "overwritten":
        return packed[:40] + b"\xff" * 20 + packed[60:]
    if how == "cut short":
        return packed[: len(packed) // 2]
    return packed[:-8] + b"\0\0\0\0" + packed[-4:]  # the CRC field, 8 bytes from the end


@pytest.mark.parametrize("how", ["overwritten", "cut short", "bad CRC"])
def test_garbled_gzip_idx_file_names_the_file_and_says_to_replace_it(
    tmp_path, how, make_idx_dataset
):
    folder = make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=50, n_test=10)
    plain = folder / "train-images-idx3-ubyte"
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(garble(plain.read_bytes(), how))
    plain.unlink()
    with pytest.raises(sources.DataError) as err:
        MNISTDataModule(data_dir=tmp_path, val_size=10, download=False).setup()
    message = str(err.value)
    assert message.startswith(f"{bad} is a corrupt gzip file (") and "\n" not in message
    assert message.endswith("re-download it or replace it with a good copy")


def test_garbled_gzip_in_a_system_folder_is_named_when_copying(tmp_path, make_idx_dataset):
    system = make_idx_dataset(tmp_path / "system", n_train=50, n_test=10)
    plain = system / "t10k-labels-idx1-ubyte"
    (system / "t10k-labels-idx1-ubyte.gz").write_bytes(garble(plain.read_bytes(), "overwritten"))
    plain.unlink()
    dm = FashionMNISTDataModule(data_dir=tmp_path / "root", download=False, system_dirs=[system])
    with pytest.raises(sources.DataError, match="t10k-labels-idx1-ubyte.gz is a corrupt gzip"):
        dm.setup()


def test_idx_images_of_another_size_name_the_file_and_both_sizes(tmp_path, make_idx_dataset):
    folder = make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=50, n_test=10, size=32)
    with pytest.raises(sources.DataError) as err:
        MNISTDataModule(data_dir=tmp_path, val_size=10, download=False).setup()
    assert str(err.value).startswith(
        f"{folder / 'train-images-idx3-ubyte'} holds 32x32 images, "
        "but this dataset's images are 28x28"
    )


@pytest.mark.parametrize("key", ["batch_size", "eval_batch_size"])
@pytest.mark.parametrize("value", ["abc", 1.5, True, 0, -3, "64", None])
def test_batch_sizes_must_be_whole_numbers(key, value):
    with pytest.raises(ConfigError) as err:
        SyntheticDataModule(**{key: value})
    assert str(err.value) == f"data.{key} must be a whole number >= 1, got {value!r}"


def mnist_from(root: Path) -> list[str]:
    """Overrides that train on the IDX files under ``root``, never downloading."""
    return ["data=mnist", "data.download=false", "data.val_size=10", f"paths.data_dir={root}"]


def garbled_gzip_case(tmp_path: Path, make_idx_dataset) -> tuple[list[str], str]:
    folder = make_idx_dataset(tmp_path / "data" / "MNIST" / "raw", n_train=50, n_test=10)
    plain = folder / "t10k-images-idx3-ubyte"
    bad = folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(garble(plain.read_bytes(), "overwritten"))
    plain.unlink()
    return mnist_from(tmp_path / "data"), f"{bad} is a corrupt gzip file"


def cifar_sized_case(tmp_path: Path, make_idx_dataset) -> tuple[list[str], str]:
    folder = make_idx_dataset(tmp_path / "data" / "MNIST" / "raw", n_train=50, n_test=10, size=32)
    message = f"{folder / 'train-images-idx3-ubyte'} holds 32x32 images, but this dataset's images"
    return mnist_from(tmp_path / "data"), f"{message} are 28x28"


def bad_batch_size_case(tmp_path: Path, make_idx_dataset) -> tuple[list[str], str]:
    message = "data.batch_size must be a whole number >= 1, got 'abc'"
    return ["data=synthetic", "data.batch_size=abc"], message


# One case runs in the fast set; the unit tests above cover the others' logic.
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(garbled_gzip_case, marks=pytest.mark.slow),
        pytest.param(cifar_sized_case, marks=pytest.mark.slow),
        pytest.param(bad_batch_size_case, marks=pytest.mark.slow),
    ],
)
def test_cli_bad_data_input_ends_with_one_error_line_and_exit_2(
    tmp_path, case, make_idx_dataset, train_run
):
    args, expected = case(tmp_path, make_idx_dataset)
    proc = train_run(["model=cnn", *args])
    output = proc.stdout
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "error" in line.lower()]
    assert f"error: {expected}" in line


def test_corrupt_cifar_file_names_the_file(tmp_path, make_cifar_dataset):
    folder = make_cifar_dataset(tmp_path, per_batch=4)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(sources.DataError, match="test_batch is not a valid CIFAR10 batch"):
        CIFAR10DataModule(data_dir=tmp_path, download=False).setup()


def test_validation_split_is_fixed_and_disjoint(tmp_path, make_idx_dataset):
    make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=100, n_test=10)
    splits = []
    for seed in (0, 1):  # the training seed must not move the validation split
        torch.manual_seed(seed)
        dm = MNISTDataModule(data_dir=tmp_path, val_size=0.2, download=False)
        dm.setup()
        splits.append(dm.splits["val"].tensors[0])
    assert torch.equal(splits[0], splits[1]) and len(splits[0]) == 20


def test_same_seed_gives_identical_distorted_test_sets(tmp_path, make_idx_dataset):
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


def test_distortion_shifts_a_marked_pixel_right_and_down_by_whole_pixels():
    # x shift +3 (right), y shift -5 (up): the pixel at row 10, column 12 lands at (5, 15).
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10, 12] = 1.0
    out = AffineDistortion().apply(image, torch.tensor([[0.0, 1.0, 3.0, -5.0]]))
    row, col = divmod(int(out.flatten().argmax()), 28)
    assert (row, col) == (5, 15) and math.isclose(float(out.max()), 1.0, abs_tol=1e-5)


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
    with pytest.raises(ConfigError, match=f"^distortion.{message}"):
        AffineDistortion(**kwargs)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ProjectiveDistortion(sigma=-1), "distortion.sigma must be >= 0"),
        (lambda: ElasticDistortion(grid_size=1), "distortion.grid_size must be >= 2"),
        (lambda: ClutterDistortion(patch_size=0), "distortion.patch_size >= 1"),
        (lambda: ClutterDistortion(canvas=30, patch_size=40), "larger than distortion.canvas"),
        (lambda: SyntheticDataModule(keep_on_device="gpu"), "data.keep_on_device must be"),
        (lambda: SyntheticDataModule(val_size="half"), "data.val_size must be a count"),
        (lambda: SyntheticDataModule(num_train=10, val_size=20).setup(), "data.val_size=20 "),
    ],
)
def test_bad_config_values_are_config_errors_naming_the_key(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_canvas_smaller_than_image_is_rejected():
    with pytest.raises(ConfigError, match="distortion.canvas 20px is smaller than the 28px image"):
        SyntheticDataModule(distortion=AffineDistortion(canvas=20))


def test_batches_come_from_tensor_indexing_in_bounded_sizes():
    dm = SyntheticDataModule(num_train=100, num_test=50, batch_size=32)
    dm.setup()
    sizes = [len(y) for _, y in dm.train_dataloader()]
    assert sum(sizes) == len(dm.splits["train"]) and max(sizes) == 32


def shard_batches(dm: SyntheticDataModule, split: str, world_size: int, rank: int) -> list:
    """The index batches process ``rank`` of ``world_size`` loads for ``split``."""
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    dm.trainer = SimpleNamespace(
        world_size=world_size, global_rank=rank, strategy=cpu, overfit_batches=0
    )
    return list(getattr(dm, f"{split}_dataloader")().sampler)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ddp_evaluation_shards_partition_each_split_exactly(world_size):
    # 7 validation and 50 test images: neither divides by 3 or 4, where padding would repeat.
    dm = SyntheticDataModule(num_train=70, num_test=50, eval_batch_size=4)
    dm.setup()
    for split in ("val", "test"):
        shards = [shard_batches(dm, split, world_size, r) for r in range(world_size)]
        seen = torch.cat([index for shard in shards for index in shard])
        assert sorted(seen.tolist()) == list(range(len(dm.splits[split])))
    # Training keeps equal shares (DDP steps in lockstep); repeating a few images there is fine.
    train = [shard_batches(dm, "train", world_size, r) for r in range(world_size)]
    assert len({sum(map(len, shard)) for shard in train}) == 1


class BatchRecorder(L.LightningModule):
    """Records the labels of every batch Lightning hands it; learns nothing."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.train_batches, self.val_batches = [], []

    def training_step(self, batch, batch_idx):
        self.train_batches.append((self.current_epoch, batch[1].tolist()))
        return self.weight * batch[0].mean()

    def validation_step(self, batch, batch_idx):
        self.val_batches.append(batch[1].tolist())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit_recording(**trainer_flags) -> BatchRecorder:
    dm = SyntheticDataModule(num_train=200, num_test=20, batch_size=16, eval_batch_size=8)
    recorder = BatchRecorder()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **trainer_flags,
    )  # fmt: skip
    trainer.fit(recorder, datamodule=dm)
    return recorder


def test_one_lightning_batch_is_batch_size_images():
    recorder = fit_recording(limit_train_batches=3)
    assert [len(labels) for _, labels in recorder.train_batches] == [16] * 6  # 3 per epoch
    first, second = ([y for epoch, y in recorder.train_batches if epoch == e] for e in (0, 1))
    assert first != second  # reshuffled every epoch


def test_overfit_batches_repeats_the_same_batches_every_epoch():
    recorder = fit_recording(overfit_batches=2)
    first, second = ([y for epoch, y in recorder.train_batches if epoch == e] for e in (0, 1))
    assert first == second and [len(y) for y in first] == [16, 16]
    assert recorder.val_batches and all(len(y) == 8 for y in recorder.val_batches)


# --- the paper's distortion sets (R, RTS, P, E, TC): the `distortion` config group ----------
DISTORTIONS = ["none", "R", "RTS", "P", "E", "TC"]


def built_distortion(name: str):
    return instantiate(compose_config([f"distortion={name}"]).distortion)


@pytest.mark.parametrize("name", DISTORTIONS)
def test_every_distortion_option_reaches_the_datamodule_built(tmp_path, name, make_idx_dataset):
    make_idx_dataset(tmp_path / "MNIST" / "raw", n_train=40, n_test=12)
    overrides = ["data=mnist", f"distortion={name}", f"paths.data_dir={tmp_path}",
                 "data.val_size=8", "data.download=false"]  # fmt: skip
    tests = []
    for _ in range(2):
        dm = instantiate(compose_config(overrides).data)
        dm.setup()
        tests.append(dm.splits["test"].tensors[0])
    assert (dm.distortion is None) == (name == "none")
    assert torch.equal(tests[0], tests[1])  # evaluation images are fixed
    assert tests[0].shape[-1] == {"RTS": 42, "TC": 60}.get(name, 28) == dm.image_size
    x, _ = next(iter(dm.train_dataloader()))
    assert dm.prepare_images(x, train=True).shape[-1] == dm.image_size


def test_distortion_values_are_tuned_on_the_group():
    cfg = compose_config(["data=synthetic", "distortion=RTS", "distortion.rotation=[-30,30]"])
    assert instantiate(cfg.data).distortion.rotation == (-30.0, 30.0)


def test_distorted_data_options_are_the_dataset_with_rts():
    """``data=mnist_distorted`` is ``data=mnist distortion=RTS``; a distortion= override wins."""
    for dataset in ("mnist", "fashion_mnist"):
        short = compose_config([f"data={dataset}_distorted"])
        long = compose_config([f"data={dataset}", "distortion=RTS"])
        assert short.data == long.data and short.distortion == long.distortion
    mixed = compose_config(["data=mnist_distorted", "distortion=TC"], return_hydra_config=True)
    assert mixed.hydra.runtime.choices.distortion == "TC" and mixed.distortion.canvas == 60


def test_unknown_distortion_lists_valid_choices():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["distortion=Q"])
    assert "Available options in 'distortion'" in str(err.value)
    assert all(f"\t{name}\n" in str(err.value) for name in DISTORTIONS)


def test_r_angles_stay_in_range():
    angles = built_distortion("R").sample(4000, 28, torch.Generator().manual_seed(0))[:, 0]
    assert -90 <= angles.min() < -85 and 85 < angles.max() <= 90


def test_p_moves_the_corners_where_asked():
    distortion = ProjectiveDistortion(sigma=0.1)
    image = torch.rand(1, 1, 28, 28)
    assert torch.allclose(distortion.apply(image, torch.zeros(1, 8)), image, atol=1e-5)
    # Pull the top-left corner 6 px (of 28) inwards: the input's corner pixel now shows there.
    marked = torch.zeros(1, 1, 28, 28)
    marked[0, 0, 0, 0] = 1.0
    params = torch.zeros(1, 8)
    params[0, :2] = 2 * 6 / 28
    out = distortion.apply(marked, params)
    row, col = divmod(int(out.flatten().argmax()), 28)
    assert (row, col) in {(5, 5), (5, 6), (6, 5), (6, 6)} and out.max() > 0.1
    offsets = distortion.sample(20000, 28, torch.Generator().manual_seed(0))
    assert offsets.std().item() == pytest.approx(0.2, rel=0.03)  # sigma 0.1 of 2 units


def test_e_is_a_smooth_warp_of_about_sigma_pixels():
    image = torch.rand(2, 1, 28, 28)
    assert torch.allclose(
        ElasticDistortion(sigma=0.0).apply(image, torch.zeros(2, 32)), image, atol=1e-5
    )
    distortion = ElasticDistortion(sigma=1.5)
    params = distortion.sample(5000, 28, torch.Generator().manual_seed(0))
    assert (params * 28 / 2).std().item() == pytest.approx(1.5, rel=0.05)  # in pixels
    warped = distortion(image, torch.Generator().manual_seed(1))
    assert warped.shape == image.shape and not torch.allclose(warped, image)


def test_tc_has_a_60px_canvas_and_six_clutter_patches():
    distortion = ClutterDistortion(canvas=60, patches=6, patch_size=6)
    # Image 0 is blank, image 1 is all ones: image 0's canvas then shows only the clutter
    # cropped from image 1. Patches pasted on a non-overlapping row give 6 * 36 lit pixels.
    images = torch.stack([torch.zeros(1, 28, 28), torch.ones(1, 28, 28)])
    params = distortion.sample(2, 28, torch.Generator().manual_seed(0))
    params[:, :2] = 0.5  # centred: 16 px from each side
    patches = params[:, 2:].view(2, 6, 5)
    patches[:, :, 3] = 0.1  # paste row
    patches[:, :, 4] = torch.arange(6) * 9 / 55  # paste columns 0, 9, 18, ... apart
    out = distortion.apply(images, params)
    assert out.shape == (2, 1, 60, 60)
    assert int((out[0] > 0.5).sum()) == 6 * 36
    assert int((out[1] > 0.5).sum()) == 28 * 28  # image 1's clutter comes from blank image 0
    assert torch.equal(out[1, 0, 16:44, 16:44], images[1, 0])  # placed whole, unresampled


def test_clutter_keeps_the_brighter_pixel_where_patches_overlap_and_reaches_the_last_place():
    """Two all-ones 4 px images on an 8 px canvas, every number 0.999: the image goes to the
    last place (rows and columns 4-7) and both 2 px patches onto its corner, over it and each
    other. Overlaps keep the brighter pixel (1), never a sum."""
    distortion = ClutterDistortion(canvas=8, patches=2, patch_size=2)
    params = torch.full((2, 2 + 5 * 2), 0.999)
    out = distortion.apply(torch.ones(2, 1, 4, 4), params)
    expected = torch.zeros(2, 1, 8, 8)
    expected[..., 4:, 4:] = 1.0
    assert torch.equal(out, expected)
