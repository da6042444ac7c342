"""The one base class for problems a user can fix, and the one-line message they are shown.

Entry points print :func:`user_error_message` and exit 2 for these; anything else is a bug and
keeps its traceback. Each layer raises its own subclass (``DataError``, ``TrainingFault``, ...),
and a bad config value is a :class:`ConfigError`, which is also a ``ValueError``. Any other
``ValueError`` is a bug and keeps its traceback. :func:`first_line` is the one way an error
becomes a line. Hydra and Lightning are imported only where needed, so ``compare`` can use this
module without loading the training stack.
"""

from __future__ import annotations


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
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, UserError | MisconfigurationException):
        text = str(err).strip()
        return first_line(text) if text else type(err).__name__
    return None


def first_line(error: BaseException | str, limit: int | None = None) -> str:
    """The first line of an error (``Type: message``) or of a text, cut to ``limit`` characters
    when given: what a one-line message or a record's ``error`` field shows."""
    if isinstance(error, BaseException):
        text = str(error).strip()
        line = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    else:
        text = str(error).strip()
        line = text.splitlines()[0].strip() if text else ""
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"
