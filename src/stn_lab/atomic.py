"""Atomic file writes: a crash mid-write never leaves a half file that a reader takes as valid.

Used for everything other steps read back: ``metrics.json``, the ``compare`` outputs and the
robustness curves. It imports nothing but the standard library, so ``compare`` stays free of
model and training code.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


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
