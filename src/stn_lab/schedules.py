"""Learning-rate schedules that need more than a stock scheduler's arguments."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import MultiStepLR

from stn_lab.errors import ConfigError


def thirds_step_lr(
    optimizer: torch.optim.Optimizer, total_steps: int, gamma: float = 0.1
) -> MultiStepLR:
    """The paper's schedule: the rate is divided by 10 at one third and at two thirds of training.

    Stepped per optimiser step (``interval: step`` in ``conf/scheduler/thirds.yaml``). A run
    shorter than 3 steps (a check such as ``fast_dev_run``) decays at step 1 at the earliest.
    """
    if total_steps < 1:
        raise ConfigError(f"a thirds schedule needs total_steps >= 1, got {total_steps}")
    milestones = [max(1, total_steps // 3), max(1, 2 * total_steps // 3)]
    return MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
