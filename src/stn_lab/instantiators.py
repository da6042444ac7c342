"""Callbacks, plugins and any other ``_target_`` entry from config: the one place a named entry
becomes an object (the lightning-hydra-template's ``instantiators.py`` shape).

The ``callbacks`` group holds named entries with a ``_target_``, so one more callback is one
override (``+callbacks.name._target_=...``). Entries given the Trainer's own way
(``+trainer.callbacks=[...]``, ``+trainer.plugins=[...]``) are honoured too, never dropped; one
that cannot be (not a ``_target_`` config, a target that does not import,
``trainer.default_root_dir``) is refused in one line. An optional package that is missing is one
line naming the pip extra that installs it. Loggers are built in :mod:`stn_lab.loggers` with
:func:`build_entry`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import ListConfig

from stn_lab.errors import ConfigError, UserError, first_line

#: The pip extra (``pip install -e '.[name]'``) each optional logger or callback needs.
EXTRAS = {
    "tensorboard": "tensorboard",
    "tensorboardX": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "rich": "rich",
}


class MissingExtra(UserError, ImportError):
    """An optional logger or callback whose package is not installed."""


def build_entry(name: str, config: Any, group: str):
    """Instantiate one entry; a missing optional package becomes :class:`MissingExtra`, and an
    entry that is not a ``_target_`` config, or whose target cannot be imported, one line."""
    if not isinstance(config, Mapping) or "_target_" not in config:
        hint = {"logger": "; pick named ones with logger=[...]",
                "callback": "; pick named ones with callbacks=[...]"}.get(group, "")  # fmt: skip
        raise ConfigError(
            f"{group} {name!r} must be a config with a _target_ (a class path), "
            f"got {config!r}{hint}"
        )
    try:
        return instantiate(config)
    except (ImportError, InstantiationException) as err:
        extra, text = _missing(err)
        if extra is not None:
            raise MissingExtra(
                f"{group} {name!r} needs the {extra!r} extra: pip install -e '.[{extra}]'"
            ) from None
        if text is not None:
            raise ConfigError(
                f"{group} {name!r}: cannot import {config['_target_']!r} ({text})"
            ) from None
        cause = err
        while cause.__cause__ is not None and not isinstance(cause, OSError):
            cause = cause.__cause__
        if isinstance(cause, OSError):  # a store or folder it cannot create or write
            raise UserError(f"{group} {name!r} cannot be set up: {first_line(cause)}") from err
        raise


def _missing(err: BaseException) -> tuple[str | None, str | None]:
    """(the extra to install, or None; the import failure's first line, or None for errors
    that are not about a missing import: those are bugs and keep their traceback)."""
    chain = [err]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    failed = [e for e in chain if isinstance(e, ImportError)]
    if not failed:
        return None, None
    named = [e for e in failed if getattr(e, "name", None)]
    cause = named[-1] if named else failed[-1]
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    # A failed `import x` names the module; Lightning's own check ("Requirement 'mlflow>=1.0.0'
    # not met", "Neither `tensorboard` nor `tensorboardX` is available") names the package.
    words = [cause.name.split(".")[0]] if named else re.findall(r"[\w-]+", str(cause))
    return next((EXTRAS[w] for w in words if w in EXTRAS), None), text


def entries(group: Mapping | None, name: str) -> list[tuple[str, Any]]:
    """The named entries of a group node, skipping ones set to null (``callbacks.x=null``)."""
    if group is None:
        return []
    if not isinstance(group, Mapping):
        raise ConfigError(f"{name} must be a mapping of named entries, got {type(group).__name__}")
    return [(key, conf) for key, conf in group.items() if conf is not None]


def as_list(value: Any, key: str) -> list:
    """``trainer.callbacks`` / ``trainer.logger``: one config or a list of them."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list | tuple | ListConfig):
        return list(value)
    hint = " (to log nothing: ~logger)" if key == "trainer.logger" else ""
    raise ConfigError(
        f"{key}={value!r} cannot be honoured: give a config with a _target_ or a list of them{hint}"
    )


def build_callbacks(cfg_callbacks: Mapping | None, extra: Any = None) -> list[L.Callback]:
    """The ``callbacks`` group's entries, then any given as ``trainer.callbacks``."""
    callbacks = [build_entry(n, c, "callback") for n, c in entries(cfg_callbacks, "callbacks")]
    extra = as_list(extra, "trainer.callbacks")
    callbacks += [build_entry("trainer.callbacks", c, "callback") for c in extra]
    return callbacks


def build_plugins(extra: Any = None) -> list:
    """Plugins given as ``+trainer.plugins=[...]`` (e.g. a cluster environment); train.py puts
    them after its own atomic checkpoint writer."""
    return [build_entry("trainer.plugins", c, "plugin") for c in as_list(extra, "trainer.plugins")]


#: Trainer arguments that train.py sets itself: an override is refused, never dropped.
RESERVED_TRAINER_ARGS = {
    "default_root_dir": "it is the run folder: set hydra.run.dir (or hydra.sweep.dir) instead",
}


def refuse_reserved(trainer_cfg: Mapping) -> None:
    """One line for a ``trainer.<key>`` override that train.py would silently replace."""
    for key, why in RESERVED_TRAINER_ARGS.items():
        if trainer_cfg.get(key) is not None:
            raise ConfigError(f"trainer.{key} cannot be overridden: {why}")
