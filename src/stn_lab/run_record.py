"""What a finished (or failed) run leaves behind for ``compare``: ``metrics.json``.

The file is written atomically (temporary file, then rename), so a crash mid-write never leaves
a half file that ``compare`` could read as valid.
"""

from __future__ import annotations

import json
from pathlib import Path

from stn_lab.atomic import atomic_write

SCHEMA_VERSION = 1
NOT_APPLICABLE = "n/a"
# Groups that only shape the STN: for a plain CNN their choice changes nothing.
STN_ONLY_GROUPS = ("localiser", "localiser_net", "activation", "transform")


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2))


def record_choices(
    choices: dict[str, str | None], has_stn: bool, distortion: str | None = None
) -> dict[str, str | None]:
    """The Hydra group choices worth recording, plus the data's distortion set.

    STN-only groups are ``n/a`` without an STN.
    """
    recorded = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    recorded["distortion"] = str(distortion) if distortion is not None else "none"
    if not has_stn:
        recorded.update({group: NOT_APPLICABLE for group in STN_ONLY_GROUPS})
    return recorded


def metrics_record(
    *,
    status: str,
    seed: int,
    choices: dict,
    overrides: list[str],
    error: str | None = None,
    class_names: list[str] | None = None,
    test: dict | None = None,
    epochs: int = 0,
    seconds_per_epoch: list[float] | None = None,
    skipped_batches: int = 0,
    params: dict | None = None,
    best_checkpoint: str | None = None,
) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "error": error,
        "seed": seed,
        "choices": choices,
        "overrides": overrides,
        "class_names": class_names,
        "test": test,
        "epochs": epochs,
        "seconds_per_epoch": seconds_per_epoch or [],
        "skipped_batches": skipped_batches,
        "params": params,
        "best_checkpoint": best_checkpoint,
    }
