"""The one base class for problems a user can fix, and the one-line message they are shown.

Entry points print :func:`user_error_message` and exit 2 for these; anything else is a bug and
keeps its traceback. Each layer raises its own subclass (``DataError``, ``TrainingFault``, ...),
and a bad config value is a :class:`ConfigError`, which is also a ``ValueError``. Any other
``ValueError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException


class UserError(Exception):
    """A problem the user can fix (bad option value, missing data): shown as one line."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key and the value."""


def whole_number(key: str, value, minimum: int) -> int:
    """``value`` when it is an int >= ``minimum``; else a :class:`ConfigError` naming ``key``.

    Hydra passes command-line values through as typed (``abc`` a str, ``1.5`` a float, ``true``
    a bool), and none of those may stand for a count.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    return value


def user_error_message(err: BaseException) -> str | None:
    """The one-line message for errors caused by input, or ``None`` for real bugs.

    Lightning's ``MisconfigurationException`` (e.g. ``trainer.accelerator=gpu`` without one)
    is the user's too; Hydra wraps errors raised while instantiating, so the cause is read.
    """
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, UserError | MisconfigurationException):
        text = str(err).strip()
        return text.splitlines()[0] if text else type(err).__name__
    return None
