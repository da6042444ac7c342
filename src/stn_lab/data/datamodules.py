"""LightningDataModules: whole datasets held as uint8 tensors, distorted in batches on the device.

One base class does the work; each dataset subclass only says how to load its raw tensors and
what its classes and normalisation are.

- The official test split stays the test split; validation is drawn from train with a fixed
  generator (``eval_seed``), so every run of a sweep validates on the same images.
- Validation and test images are distorted once, from ``eval_seed`` and each sample's index, so
  every model is scored on the same images. Training images are distorted afresh in every batch
  (``on_after_batch_transfer``, so on the GPU when training there), from the global RNG that
  ``seed_everything`` seeds.
- Batches are gathered by tensor indexing (:class:`IndexBatchSampler` hands ``TensorDataset``
  one index tensor per batch): no per-sample Python in the hot path.
- On a GPU (``keep_on_device: auto``), the whole dataset moves to the GPU once and the index
  tensors are made there once per epoch, so a batch never touches the host.
- One training batch is ``batch_size`` images: one Lightning batch, one optimiser step.
- Under DDP, training uses ``DistributedSampler`` (its padding only repeats a few training
  images), but validation and test give each process a disjoint, unpadded shard
  (:class:`EvalShard`), so every evaluation image counts exactly once for any number of processes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    TensorDataset,
)

from stn_lab.data import sources
from stn_lab.data.distortions import Distortion
from stn_lab.errors import ConfigError, whole_number

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
EVAL_CHUNK = 2048
KEEP_ON_DEVICE = ("auto", True, False)
log = logging.getLogger(__name__)


class IndexBatchSampler(Sampler):
    """Batches of indices as ``LongTensor`` slices of the epoch's order, made on ``device``.

    The order (shuffled, sequential or a DDP shard) is drawn once per epoch and copied to the
    device in one go; each batch is then a slice of it. Lightning's ``set_epoch`` is passed on
    to the order's sampler (DDP reshuffles with it).
    """

    def __init__(self, order: Sampler, batch_size: int, device: torch.device | None = None):
        self.order, self.batch_size, self.device = order, batch_size, device

    def __iter__(self):
        index = torch.as_tensor(list(self.order), dtype=torch.long)
        yield from index.to(self.device or "cpu").split(self.batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.order, "set_epoch"):
            self.order.set_epoch(epoch)


class EvalShard(Sampler):
    """Process ``rank``'s share of an evaluation split: indices ``rank, rank + world_size, ...``.

    The shards of all processes partition the split, unpadded (``DistributedSampler`` would
    repeat images to even them out, and those repeats would be counted twice). Shards may
    differ in length by one image; evaluation only syncs its metrics once, at the epoch's end,
    so processes with different batch counts do not wait on each other.
    """

    def __init__(self, size: int, world_size: int, rank: int):
        self.indices = range(rank, size, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ImageDataModule(L.LightningDataModule):
    """Base DataModule; subclasses set the class attributes and implement :meth:`load`.

    ``distortion`` arrives built: Hydra instantiates the ``distortion`` group's choice with the
    data config (``distortion: ${distortion}``), and ``None`` (``distortion=none``) leaves the
    images as they are. A bad value raises :class:`~stn_lab.errors.ConfigError`, naming its key.
    """

    name: str = "images"
    channels: int = 1
    raw_size: int = 28
    mean: Sequence[float] = (0.5,)
    std: Sequence[float] = (0.5,)
    class_names: list[str] = [str(i) for i in range(10)]

    def __init__(
        self,
        data_dir: str | Path | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int | float = 5000,
        num_workers: int = 0,
        distortion: Distortion | None = None,
        eval_seed: int = 0,
        download: bool = True,
        keep_on_device: str | bool = "auto",
    ):
        super().__init__()
        if keep_on_device not in KEEP_ON_DEVICE:
            raise ConfigError(
                f"data.keep_on_device must be auto, true or false, got {keep_on_device!r}"
            )
        self.keep_on_device = keep_on_device
        self.data_dir = Path(data_dir) if data_dir else sources.default_data_dir()
        self.batch_size = whole_number("data.batch_size", batch_size, 1)  # images per step
        self.eval_batch_size = whole_number("data.eval_batch_size", eval_batch_size, 1)
        self.num_workers = whole_number("data.num_workers", num_workers, 0)
        if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
            raise ConfigError(f"data.val_size must be a count or a fraction, got {val_size!r}")
        self.val_size = val_size
        self.distortion = distortion
        self.eval_seed = eval_seed
        self.download = download
        self.image_size = (
            self.distortion.out_size(self.raw_size) if self.distortion else self.raw_size
        )
        self.splits: dict[str, TensorDataset] = {}
        self._norm_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # --- what a subclass provides -------------------------------------------------------
    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"train": (images, labels), "test": (...)}``; images uint8 ``[N, C, H, W]``."""
        raise NotImplementedError

    # --- shape facts the model is built from ---------------------------------------------
    @property
    def in_channels(self) -> int:
        return self.channels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = self.load()
        for split, (_, labels) in raw.items():
            if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
                raise sources.DataError(
                    f"num_classes mismatch: {self.name} {split} labels run from "
                    f"{int(labels.min())} to {int(labels.max())}, "
                    f"but it has {self.num_classes} classes"
                )
        train_x, train_y = raw["train"]
        n_val = self._val_count(len(train_x))
        order = torch.randperm(
            len(train_x), generator=torch.Generator().manual_seed(self.eval_seed)
        )
        val_idx, train_idx = order[:n_val], order[n_val:]
        test_x, test_y = raw["test"]
        self.splits = {
            "train": TensorDataset(train_x[train_idx], train_y[train_idx]),
            "val": TensorDataset(
                self._distort_once(train_x[val_idx], val_idx, 1), train_y[val_idx]
            ),
            "test": TensorDataset(self._distort_once(test_x, torch.arange(len(test_x)), 2), test_y),
        }

    def _val_count(self, n_train: int) -> int:
        n_val = int(round(self.val_size * n_train)) if self.val_size < 1 else int(self.val_size)
        if not 0 < n_val < n_train:
            raise ConfigError(
                f"data.val_size={self.val_size} leaves no train or no val data ({n_train} images)"
            )
        return n_val

    def _distort_once(self, images: torch.Tensor, index: torch.Tensor, split: int) -> torch.Tensor:
        """Distort an evaluation split; sample ``i``'s parameters depend on the seed and ``i``."""
        if self.distortion is None:
            return images
        size = images.shape[-1]
        n_rows = int(index.max()) + 1 if len(index) else 0
        generator = torch.Generator().manual_seed(self.eval_seed * 1000 + split)
        table = self.distortion.sample(n_rows, size, generator=generator)
        out = []
        for start in range(0, len(images), EVAL_CHUNK):
            chunk = slice(start, start + EVAL_CHUNK)
            warped = self.distortion.apply(images[chunk].float() / 255, table[index[chunk]])
            out.append((warped * 255).round().clamp(0, 255).to(torch.uint8))
        return torch.cat(out)

    def resident_device(self) -> torch.device | None:
        """The accelerator the whole dataset lives on, or ``None`` (batches are transferred).

        ``auto`` and ``true`` both keep it on the trainer's device when that is not the CPU
        (``true`` only documents the intent: on the CPU the data is in memory anyway).
        """
        if self.keep_on_device is False or self.trainer is None:
            return None
        device = self.trainer.strategy.root_device
        return None if device.type == "cpu" else device

    def _loader(self, split: str) -> DataLoader:
        dataset = self.splits[split]
        device = self.resident_device()
        if device is not None and dataset.tensors[0].device != device:
            # One copy of the whole split (MNIST: 47 MB as uint8); batches then stay there.
            dataset = TensorDataset(*(t.to(device) for t in dataset.tensors))
            self.splits[split] = dataset
        workers = self.num_workers if device is None else 0  # workers cannot index GPU memory
        if workers != self.num_workers:
            log.info("data.num_workers=%d ignored: the dataset is on %s", self.num_workers, device)
        trainer = self.trainer
        batch = self.batch_size if split == "train" else self.eval_batch_size
        if trainer is not None and trainer.overfit_batches:
            # Lightning swaps any sampler but a SequentialSampler for one when overfitting, and
            # a swapped-out IndexBatchSampler would leave single images: take the plain
            # per-image path instead (a few batches, the same ones every epoch, as documented).
            return DataLoader(dataset, batch, sampler=SequentialSampler(dataset))
        world_size, rank = (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)
        if split != "train":
            order = EvalShard(len(dataset), world_size, rank)
        elif world_size > 1:  # DDP: each process gets an equal share of every epoch
            order = DistributedSampler(dataset, world_size, rank, seed=torch.initial_seed() % 2**31)
        else:
            order = RandomSampler(dataset)
        return DataLoader(
            dataset,
            batch_size=None,  # IndexBatchSampler hands TensorDataset one index tensor per batch
            sampler=IndexBatchSampler(order, batch, device),
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def prepare_images(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch -> normalised float batch, with a fresh random distortion when training."""
        x = images.float().div_(255)
        if train and self.distortion is not None:
            x = self.distortion(x)
        mean, std = self._normalisation(x.device)
        return (x - mean) / std

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as ``[1, C, 1, 1]`` tensors, made once per device (no copy per batch)."""
        if device not in self._norm_cache:
            self._norm_cache[device] = tuple(
                torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (self.mean, self.std)
            )
        return self._norm_cache[device]

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Our batches are always ``(images, labels)`` tensors: move them directly (a no-op
        when they already live there) rather than through Lightning's generic collection walk,
        a measurable share of a small model's CPU step (docs/performance.md)."""
        if isinstance(batch, torch.Tensor):
            return batch.to(device, non_blocking=True)
        images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # e.g. the model summary's example input
            return batch
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.prepare_images(images, train=training), labels

    def fixed_batch(self, stage: str = "test", n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` images of an evaluation split, model-ready, on the CPU."""
        self.setup()
        images, labels = (t.cpu() for t in self.splits[stage][:n])
        return self.prepare_images(images, train=False), labels


class IDXDataModule(ImageDataModule):
    """A dataset stored as four IDX files in torchvision's layout (``<root>/<folder>/raw``)."""

    folder_name = ""
    system_dirs: Sequence[Path] = ()

    def prepare_data(self) -> None:
        sources.ensure_idx_dataset(
            self.name, self.data_dir, self.folder_name, self.download, self.system_dirs
        )

    def load(self):
        folder = sources.ensure_idx_dataset(
            self.name, self.data_dir, self.folder_name, self.download, self.system_dirs
        )
        log.info("%s: reading %s", self.name, folder)
        return {
            split: sources.load_idx_split(folder, split, self.raw_size)
            for split in ("train", "test")
        }


class MNISTDataModule(IDXDataModule):
    name, folder_name = "mnist", "MNIST"
    mean, std = (0.1307,), (0.3081,)


class FashionMNISTDataModule(IDXDataModule):
    """Fashion-MNIST; also copied from Debian's ``dataset-fashion-mnist`` when installed."""

    name, folder_name = "fashion_mnist", "FashionMNIST"
    mean, std = (0.2860,), (0.3530,)
    class_names = FASHION_CLASSES

    def __init__(self, *args, system_dirs: Sequence[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.system_dirs = (
            sources.debian_fashion_dirs() if system_dirs is None else [Path(d) for d in system_dirs]
        )


class CIFAR10DataModule(ImageDataModule):
    name, channels, raw_size = "cifar10", 3, 32
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    class_names = CIFAR10_CLASSES

    def prepare_data(self) -> None:
        sources.ensure_cifar10(self.data_dir, self.download)

    def load(self):
        folder = sources.ensure_cifar10(self.data_dir, self.download)
        log.info("%s: reading %s", self.name, folder)
        return {split: sources.load_cifar_split(folder, split) for split in ("train", "test")}


class SyntheticDataModule(ImageDataModule):
    """Learnable toy images for tests: class ``k`` is a bright bar at its own place and angle.

    Generated from ``eval_seed`` alone, so it is identical across runs and needs no files.
    """

    name = "synthetic"

    def __init__(
        self,
        *args,
        num_train: int = 512,
        num_test: int = 256,
        image_size: int = 28,
        channels: int = 1,
        num_classes: int = 10,
        **kwargs,
    ):
        self.raw_size, self.channels = image_size, channels
        self.class_names = [f"class_{k}" for k in range(num_classes)]
        self.mean, self.std = (0.1,) * channels, (0.25,) * channels
        self.num_train, self.num_test = num_train, num_test
        kwargs.setdefault("val_size", 0.1)
        super().__init__(*args, **kwargs)

    def _make(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        size, k = self.raw_size, self.num_classes
        labels = torch.randint(0, k, (n,), generator=generator)
        coords = torch.linspace(-1, 1, size)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        angle = labels.float() * (torch.pi / k)
        offset = (labels.float() / max(k - 1, 1) - 0.5) * 0.8
        # Distance of each pixel from the class's line through (offset, offset) at its angle.
        dist = (xx - offset.view(-1, 1, 1)) * torch.sin(angle).view(-1, 1, 1) - (
            yy - offset.view(-1, 1, 1)
        ) * torch.cos(angle).view(-1, 1, 1)
        bars = (dist.abs() < 0.15).float() * (xx.abs() < 0.7) * (yy.abs() < 0.7)
        noise = 0.1 * torch.rand(n, size, size, generator=generator)
        images = ((bars + noise).clamp(0, 1) * 255).to(torch.uint8)
        return images.unsqueeze(1).repeat(1, self.channels, 1, 1), labels

    def load(self):
        generator = torch.Generator().manual_seed(self.eval_seed)
        return {"train": self._make(self.num_train, generator),
                "test": self._make(self.num_test, generator)}  # fmt: skip
