"""Atomic file writes: a crash mid-write never leaves a half file that a reader takes as valid.

Used for everything other steps read back: ``metrics.json``, the ``compare`` outputs, the
pictures and the robustness curves. :func:`atomic_write` takes bytes or text,
:func:`atomic_csv` a header and rows, :func:`atomic_png` a matplotlib figure. It imports nothing
of stn_lab (matplotlib only inside :func:`atomic_png`), so ``compare`` stays free of model and
training code.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The file gets the permissions the umask gives any new file (0644 under umask 022), so
    collaborators on a shared machine can read results. ``tempfile.mkstemp`` would make it 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    # Mode 0o666 is filtered by the umask inside open(2), exactly as for an ordinary new file;
    # O_EXCL never clobbers a file someone else created under the same random name.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file (``header`` then ``rows``, ``\\n`` line ends) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write(path, buffer.getvalue())


def atomic_png(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Render a matplotlib figure to PNG in memory, then write it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write(path, buffer.getvalue())
