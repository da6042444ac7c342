"""The one place stn_lab reads a private Lightning attribute, and why.

``tests/test_lightning_private.py`` checks it against Lightning's behaviour, so an upgrade that
changes it fails there, not silently in a run.
"""

from __future__ import annotations

import lightning as L


def should_update_logs(trainer: L.Trainer) -> bool:
    """Whether the loggers write this training step: every ``log_every_n_steps`` steps (skipped
    batches counted, never when it is 0) and the last step of a stopped run. Lightning has no
    public way to ask; logging only on these steps spares the module a ``self.log`` call on the
    others, which the loggers would drop anyway."""
    return trainer._logger_connector.should_update_logs
