"""What every bench measurement shares: the models, the batch and turn sizes, how one workload
is built, and the plain PyTorch loop that stn_lab is measured against.

The machine is noisy, so every target is a ratio of two measurements taken in alternation
within one run: paths take turns of ``CHUNK`` steps after ``WARMUP`` untimed ones, and each
ratio is the median of the per-turn ratios.
"""

from __future__ import annotations

import time

import torch.nn.functional as F
from hydra.utils import instantiate

from stn_lab.build import build
from stn_lab.config_path import compose_config

LIGHT_LOCALISER = ["localiser_size=light"]
# What every STN costs whatever its localiser: the localiser reads one averaged pixel (a 64x
# pool covers every bench size) straight into the head. Sampling, grid generation and the
# classifier's input gradient remain: the floor of the STN/CNN step ratio.
FLOOR_LOCALISER = ["localiser_size.channels=[]", "localiser_size.kernel_sizes=[]",
                   "localiser_size.hidden=[]", "localiser_size.input_downsample=64"]  # fmt: skip
NCHW = ["channels_last=false"]  # the layout the default (channels-last) is compared against
MODELS = {"stn": ["model=stn"], "stn_light": ["model=stn", *LIGHT_LOCALISER],
          "stn_floor": ["model=stn", *FLOOR_LOCALISER], "cnn": ["model=cnn"],
          "stn_nchw": ["model=stn", *NCHW], "cnn_nchw": ["model=cnn", *NCHW]}  # fmt: skip
BATCH = 64
WARMUP = 10  # untimed steps before timing either path
CHUNK = 10  # consecutive steps of one model (or one path) before the next takes its turn


def setup(model: str, size: int, n_train: int, distortion: str = "none", extra=()):
    """A seeded (cfg, datamodule, network, module) on in-memory synthetic images of ``size``
    px, distorted afresh in every training batch by ``distortion`` (RTS: onto 42 px);
    ``extra``: more overrides."""
    cfg = compose_config([
        *MODELS[model], "data=synthetic", f"data.image_size={size}", f"data.num_train={n_train}",
        "data.num_test=64", f"data.batch_size={BATCH}", f"distortion={distortion}", *extra,
    ])  # fmt: skip
    datamodule, network, module = build(cfg)
    datamodule.setup()
    return cfg, datamodule, network, module


class PlainLoop:
    """A plain PyTorch training loop over the DataModule's batches (the reference): forward,
    cross-entropy, backward and the run's configured optimiser (fused Adam by default). Call it
    to run one step; it returns that step's seconds."""

    def __init__(self, cfg, datamodule, network):
        self.datamodule, self.network = datamodule, network
        self.optimizer = instantiate(cfg.optimizer)(network.parameters())
        self.batches = iter(())

    def __call__(self) -> float:
        start = time.perf_counter()
        self.network.train()
        try:
            x, y = next(self.batches)
        except StopIteration:
            self.batches = iter(self.datamodule.train_dataloader())
            x, y = next(self.batches)
        x = self.datamodule.prepare_images(x, train=True)
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.network(x), y).backward()
        self.optimizer.step()
        return time.perf_counter() - start
