"""A run folder's guard: one job at a time, and a refused command leaves it as it was.

Hydra rewrites ``<run>/.hydra/*.yaml`` before ``train`` sees the command, so the folder keeps two
copies of those files: ``.hydra/trained/`` (the job that ``metrics.json`` describes, kept by the
record writer) and ``.hydra/running/`` (the job that holds the folder's lock now). A refused
command puts back the running job's files when another job holds the lock, else the recorded
ones. The lock is an ``flock`` on ``<run>/.lock``, released by the kernel when its process ends,
so a killed run never leaves the folder locked.

Hydra also opens ``<run>/train.log`` before ``train`` runs; :class:`HeldLogFile` (its handler, set
in ``conf/hydra/default.yaml``) holds a job's lines in memory until the job trains or records
something, so a refused or skipped job adds nothing to the log of the run it was refused into.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

from stn_lab.errors import UserError, first_line

RECORDED = "trained"  # the name earlier versions gave it, so their run folders keep working
RUNNING = "running"
LOCK = ".lock"


class FolderBusy(UserError):
    """Another job is running in this run folder."""


def is_first_process() -> bool:
    """Whether this is the launching process (Lightning starts DDP's others with LOCAL_RANK>0)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


class RunFolder:
    """The run folder ``path``: :meth:`lock` it, :meth:`restore` its Hydra files after a refusal,
    :meth:`keep` the Hydra files of the running or recorded job."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.hydra = self.path / ".hydra"
        self._lock_fd: int | None = None
        self.held_by_other = False

    def lock(self) -> None:
        """Take the folder's lock; :class:`FolderBusy` when another job holds it."""
        if not is_first_process():
            return  # DDP's other processes work inside the launching process's lock
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(f"cannot use {self.path} as a run folder: {first_line(err)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.held_by_other = True
            raise FolderBusy(
                f"{self.path} is in use by another run: wait for it to end, or run into another "
                "folder (hydra.run.dir)"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock; the running job's copy of the Hydra files goes with it."""
        if self._lock_fd is not None:
            shutil.rmtree(self.hydra / RUNNING, ignore_errors=True)
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def keep(self, which: str) -> None:
        """Copy the Hydra files of this job into ``.hydra/<which>/`` (``running`` or
        ``recorded``). A recorded job's log lines go into ``train.log``."""
        if which == RECORDED:
            self.job_log(keep=True)
        if not self.hydra.is_dir():
            return
        keep = self.hydra / which
        keep.mkdir(exist_ok=True)
        for path in self.hydra.glob("*.yaml"):
            shutil.copy2(path, keep / path.name)

    def restore(self, which: str | None = None) -> None:
        """Put back the Hydra files that Hydra rewrote for a job that does not train: those of
        ``which`` (``running`` or ``recorded``), by default the running job's while another holds
        the lock, else the recorded job's (if any)."""
        self.job_log(keep=False)
        which = which or (RUNNING if self.held_by_other else RECORDED)
        source = self.hydra / which
        if not source.is_dir() and which == RUNNING:
            source = self.hydra / RECORDED
        for path in source.glob("*.yaml"):
            shutil.copy2(path, self.hydra / path.name)

    def job_log(self, keep: bool) -> None:
        """Write this job's held log lines into the folder's log and go on writing (``keep``), or
        forget them and write nothing more: the job leaves the folder as it was. Once written,
        the log stays written."""
        here = os.path.abspath(self.path)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, HeldLogFile) and os.path.dirname(handler.baseFilename) == here:
                handler.keep_lines() if keep else handler.drop_lines()


class HeldLogFile(logging.FileHandler):
    """A log file that holds its lines until :meth:`keep_lines` (then writes them and every
    later one) or :meth:`drop_lines` (then writes none). Lines still held when it closes are
    written: a job that ended before it was accepted or refused (a bug) keeps its log.
    (``release`` is the name of :class:`logging.Handler`'s lock, hence the longer names.)"""

    def __init__(self, filename, mode="a", encoding=None, delay=True, errors=None):
        super().__init__(filename, mode, encoding, delay=True, errors=errors)  # no file yet
        self.held: list[logging.LogRecord] | None = []
        self.dropped = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None:
            self.held.append(record)
        elif not self.dropped:
            super().emit(record)

    def keep_lines(self) -> None:
        with self.lock:
            held, self.held = self.held, None
            for record in held or ():
                super().emit(record)

    def drop_lines(self) -> None:
        with self.lock:  # as emit and keep_lines: no line slips between the two fields
            if self.held is not None:
                self.held, self.dropped = None, True

    def close(self) -> None:
        self.keep_lines()
        super().close()
