"""Finds and reads the raw dataset files: IDX (MNIST, Fashion-MNIST) and CIFAR10 pickles.

Files are looked for in torchvision's layout under the data root, so a torchvision download (when
online) lands where these readers look. Fashion-MNIST is also copied from Debian's
``dataset-fashion-mnist`` package when it is installed. Every failure raises :class:`DataError`
with one message that says what is missing or broken, where it looked and how to fix it.
"""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stn_lab.errors import UserError, first_line

IDX_DTYPES = {0x08: np.uint8}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = ["test_batch"]


class DataError(UserError, RuntimeError):
    """Data that is missing, unreadable or corrupt; the message is meant for the user as is."""


def default_data_dir() -> Path:
    """Where datasets live unless ``paths.data_dir`` says otherwise: ``$STN_LAB_DATA``, else the
    user's cache (``$XDG_CACHE_HOME/stn_lab``, or ``~/.cache/stn_lab``), so that every working
    folder shares one copy."""
    if os.environ.get("STN_LAB_DATA"):
        return Path(os.environ["STN_LAB_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "stn_lab"


def read_file_bytes(path: Path) -> bytes:
    """The contents of ``path``, un-gzipped when it ends in ``.gz``.

    A garbled or cut-short gzip stream raises ``zlib.error``, ``BadGzipFile`` or ``EOFError``
    depending on where the damage is; all of them mean the same to the user: get a good copy.
    """
    try:
        if path.suffix != ".gz":
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except (zlib.error, gzip.BadGzipFile, EOFError) as err:
        raise DataError(
            f"{path} is a corrupt gzip file ({err}): re-download it or replace it with a good copy"
        ) from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (optionally gzipped) into a uint8 tensor, checking magic and length."""
    raw = read_file_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its IDX header is incomplete")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{path} is corrupt or truncated: header says {dims} ({expected} bytes), "
            f"file has {len(raw)} bytes"
        )
    array = np.frombuffer(raw, dtype=IDX_DTYPES[raw[2]], offset=header).reshape(dims)
    return torch.from_numpy(array.copy())


def find_idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_split(
    folder: Path, split: str, size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 1, H, W]`` uint8 and labels ``[N]`` int64 of one split in ``folder``.

    With ``size``, the images must be single-channel ``size`` x ``size``: another dataset's
    files (CIFAR-sized IDX files in an MNIST root) are refused here, naming the file, rather
    than failing later as a shape error inside the model.
    """
    image_stem, label_stem = IDX_SPLITS[split]
    image_path, label_path = find_idx_file(folder, image_stem), find_idx_file(folder, label_stem)
    if image_path is None or label_path is None:
        raise DataError(f"missing {image_stem} or {label_stem} in {folder}")
    images, labels = read_idx(image_path), read_idx(label_path)
    if size is not None and list(images.shape[1:]) != [size, size]:
        found = "x".join(map(str, images.shape[1:]))
        raise DataError(
            f"{image_path} holds {found} images, but this dataset's images are {size}x{size}: "
            "replace it with the dataset's own file, or choose the data config that matches it"
        )
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{image_path} and {label_path} do not match: shapes {list(images.shape)} "
            f"and {list(labels.shape)}"
        )
    return images.unsqueeze(1), labels.long()


def idx_files_present(folder: Path) -> bool:
    return all(find_idx_file(folder, stem) for pair in IDX_SPLITS.values() for stem in pair)


def debian_fashion_dirs() -> list[Path]:
    """Where Debian's ``dataset-fashion-mnist`` put its files (asks dpkg, then the usual path)."""
    found = []
    try:
        out = subprocess.run(
            ["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=10
        ).stdout
        found = sorted({Path(line).parent for line in out.splitlines() if "idx" in line})
    except (OSError, subprocess.SubprocessError):
        pass
    if not found and DEBIAN_FASHION_DIR.is_dir():
        found = [DEBIAN_FASHION_DIR]
    return found


def copy_idx_folder(source: Path, target: Path) -> None:
    """Copy (and un-gzip) the four IDX files into ``target``; the source is never written."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        for pair in IDX_SPLITS.values():
            for stem in pair:
                contents = read_file_bytes(find_idx_file(source, stem))
                tmp = target / (stem + ".part")
                tmp.write_bytes(contents)
                tmp.replace(target / stem)
    except OSError as err:
        raise DataError(
            f"cannot copy {source} into the data root {target}: {err.strerror or err}. "
            "Set paths.data_dir (or STN_LAB_DATA) to a writable folder."
        ) from None


def torchvision_download(name: str, root: Path) -> str | None:
    """Fetch a dataset through torchvision; returns the error text when that fails (offline)."""
    import torchvision.datasets as tvd

    dataset_cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}
    try:
        for train in (True, False):
            dataset_cls[name](root=str(root), train=train, download=True)
    except Exception as err:  # network errors come in many types; all mean "not downloaded"
        return first_line(err, limit=200)
    return None


def ensure_idx_dataset(
    name: str, root: Path, folder_name: str, download: bool, system_dirs: Sequence[Path] = ()
) -> Path:
    """Return the folder holding ``name``'s IDX files, fetching or copying them if needed."""
    folder = root / folder_name / "raw"
    if idx_files_present(folder):
        return folder
    for system_dir in system_dirs:
        if idx_files_present(Path(system_dir)):
            copy_idx_folder(Path(system_dir), folder)
            return folder
    why = torchvision_download(name, root) if download else "download=false"
    if why is None and idx_files_present(folder):
        return folder
    looked = [str(folder), *map(str, system_dirs)]
    hint = (
        "run `make data` (installs Debian's dataset-fashion-mnist) or copy the four IDX files there"
        if name == "fashion_mnist"
        else f"copy the four IDX files ({', '.join(s for p in IDX_SPLITS.values() for s in p)}, "
        "optionally .gz) there, or run `make data` when online"
    )
    raise DataError(
        f"{name} not found (looked in: {', '.join(looked)}); download failed ({why}). "
        f"To fix: {hint}, or point paths.data_dir / STN_LAB_DATA at a folder that has them."
    )


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR10 python pickle: images ``[N, 3, 32, 32]`` uint8 and labels ``[N]``."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        data, labels = entry[b"data"], entry.get(b"labels", entry.get(b"fine_labels"))
        data = np.asarray(data, dtype=np.uint8)
        if labels is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"unexpected contents (data shape {data.shape})")
        if len(labels) != len(data):
            raise ValueError(f"{len(data)} images but {len(labels)} labels")
    except FileNotFoundError:
        raise DataError(f"missing CIFAR10 file {path}") from None
    except Exception as err:
        raise DataError(f"{path} is not a valid CIFAR10 batch: {err}") from None
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.tensor(labels, dtype=torch.long)


def ensure_cifar10(root: Path, download: bool) -> Path:
    folder = root / CIFAR_FOLDER
    needed = CIFAR_TRAIN + CIFAR_TEST
    if all((folder / n).is_file() for n in needed):
        return folder
    why = torchvision_download("cifar10", root) if download else "download=false"
    if why is None and all((folder / n).is_file() for n in needed):
        return folder
    raise DataError(
        f"cifar10 not found (looked in: {folder}); download failed ({why}). To fix: extract "
        "cifar-10-python.tar.gz so that data_batch_1..5 and test_batch sit in that folder, "
        "run `make data` when online, or point paths.data_dir / STN_LAB_DATA elsewhere."
    )


def load_cifar_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [
        read_cifar_batch(folder / n) for n in (CIFAR_TRAIN if split == "train" else CIFAR_TEST)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
