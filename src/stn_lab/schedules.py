"""Learning-rate schedules that need more than a stock scheduler's arguments."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import MultiStepLR

from stn_lab.errors import ConfigError


def thirds_step_lr(
    optimizer: torch.optim.Optimizer, total_steps: int, gamma: float = 0.1
) -> MultiStepLR:
    """The paper's schedule: the rate is divided by 10 at one third and at two thirds of training.

    Stepped per optimiser step (``interval: step`` in ``conf/scheduler/thirds.yaml``).
    """
    if total_steps < 3:
        raise ConfigError(f"total_steps must be >= 3 for a thirds schedule, got {total_steps}")
    return MultiStepLR(optimizer, milestones=[total_steps // 3, 2 * total_steps // 3], gamma=gamma)
