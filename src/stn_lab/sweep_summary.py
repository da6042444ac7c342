"""What a multirun sweep did, job by job, and the exit status it owes the shell.

Each job notes its outcome (``completed``, ``skipped``, ``failed``, ``refused``) in
``<sweep>/.jobs/<num>.json``, a file per job so that parallel launchers (joblib, SLURM) need no
shared state. :class:`SweepSummary`, a Hydra callback in the launching process, prints one line
when the sweep ends (``4 jobs: 2 completed, 2 failed (jobs 0, 3) in logs/multiruns/...``) and keeps
the failures in :data:`FAILED_JOBS`, from which ``python -m stn_lab.train`` sets a non-zero exit
status. A re-run whose every job was refused leaves the sweep's ``multirun.yaml`` as it was.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from stn_lab.atomic import atomic_write

log = logging.getLogger("stn_lab")

JOBS = ".jobs"
#: Jobs that failed or were refused in the sweeps that ended in this process.
FAILED_JOBS: list[str] = []


def note_outcome(sweep_dir: str | Path, job_num: int, run_dir: Path, status: str) -> None:
    """Record one job's outcome for :class:`SweepSummary`."""
    outcome = {"status": status, "dir": str(run_dir)}
    atomic_write(Path(sweep_dir) / JOBS / f"{job_num}.json", json.dumps(outcome))


def clear_outcomes(sweep_dir: str | Path) -> None:
    """Forget the job outcomes an earlier sweep into ``sweep_dir`` left (a sweeper that picks
    its folder after Hydra's start calls this itself)."""
    shutil.rmtree(Path(sweep_dir) / JOBS, ignore_errors=True)


class SweepSummary(Callback):
    """Prints a sweep's outcome and keeps its ``multirun.yaml`` when nothing of it ran."""

    def __init__(self) -> None:
        self._kept_multirun: bytes | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        clear_outcomes(sweep_dir)
        multirun = sweep_dir / "multirun.yaml"
        self._kept_multirun = multirun.read_bytes() if multirun.is_file() else None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        outcomes = {
            int(path.stem): json.loads(path.read_text())
            for path in (sweep_dir / JOBS).glob("*.json")
        }
        shutil.rmtree(sweep_dir / JOBS, ignore_errors=True)
        counts = Counter(o["status"] for o in outcomes.values())
        bad = sorted(n for n, o in outcomes.items() if o["status"] in ("failed", "refused"))
        FAILED_JOBS.extend(outcomes[n]["dir"] for n in bad)
        trained = counts["completed"] + counts["failed"]
        if self._kept_multirun is not None and counts["refused"] and not trained:
            atomic_write(sweep_dir / "multirun.yaml", self._kept_multirun)  # this sweep's files
        parts = [f"{counts[s]} {s}" for s in ("completed", "skipped", "failed", "refused")
                 if counts[s] or s in ("completed", "failed")]  # fmt: skip
        where = f" (jobs {', '.join(map(str, bad))})" if bad else ""
        jobs = f"{len(outcomes)} job{'s' * (len(outcomes) != 1)}"
        line = f"{jobs}: {', '.join(parts)}{where} in {sweep_dir}"
        (log.error if bad else log.info)("sweep: %s", line)
