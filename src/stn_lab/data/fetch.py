"""``python -m stn_lab.data.fetch``: get every dataset into the data root, or say how.

Fashion-MNIST is copied from Debian's ``dataset-fashion-mnist`` when installed; MNIST, Fashion-MNIST
and CIFAR10 are downloaded through torchvision when online. Missing data is reported, not fatal.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stn_lab.data import sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=sources.default_data_dir())
    args = parser.parse_args(argv)
    jobs = {
        "mnist": lambda: sources.ensure_idx_dataset("mnist", args.data_dir, "MNIST", True),
        "fashion_mnist": lambda: sources.ensure_idx_dataset(
            "fashion_mnist", args.data_dir, "FashionMNIST", True, sources.debian_fashion_dirs()
        ),
        "cifar10": lambda: sources.ensure_cifar10(args.data_dir, True),
    }
    ready = 0
    for name, job in jobs.items():
        try:
            print(f"{name}: ready in {job()}")
            ready += 1
        except sources.DataError as err:
            print(f"{name}: missing. {err}")
    print(f"{ready}/{len(jobs)} datasets ready under {args.data_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
