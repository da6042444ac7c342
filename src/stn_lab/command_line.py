"""The checks a command line gets before Hydra composes it, each refused in one line.

Hydra reports an unknown option (``model=stnn``) in a dozen lines with exit 1, and happily trains
one job of an experiment given without ``-m``. These read the arguments first:

- a launcher or sweeper whose plugin is missing names its extra (:mod:`stn_lab.plugin_extras`);
- ``experiment=...`` is a sweep, so it needs ``-m``;
- a config group option that does not exist lists the options that do.
"""

from __future__ import annotations

import re

from stn_lab.config_path import CONFIG_DIR
from stn_lab.plugin_extras import missing_plugin

MULTIRUN_FLAGS = ("-m", "--multirun")
# `group=value`, `+group=value`, `++group@package=value`; values may be a comma list.
_GROUP_CHOICE = re.compile(r"^\+{0,2}(?P<group>[\w/]+)(?:@[\w.]+)?=(?P<values>[^=]*)$")
# Sweep expressions (choice(...), range(...), glob(...)) are checked by Hydra itself.
_SWEEP_FUNCTION = re.compile(r"^\w+\(")


def options(group: str) -> list[str]:
    """The options of a config group (its YAML files), sorted."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def unknown_option(argument: str) -> str | None:
    """The refusal for ``group=value`` when ``group`` is a config group of stn_lab and a value is
    none of its options, else None."""
    match = _GROUP_CHOICE.match(argument)
    if match is None or match["group"].startswith("hydra"):
        return None
    group, values = match["group"], match["values"]
    if not (CONFIG_DIR / group).is_dir() or _SWEEP_FUNCTION.match(values):
        return None
    known = options(group)
    for value in values.strip("[]").split(","):
        value = value.strip()
        if value and value != "null" and value not in known:
            return f"{group}={value} is not an option of {group}: choose one of {', '.join(known)}"
    return None


def command_refusal(arguments: list[str]) -> str | None:
    """The one-line refusal for a ``python -m stn_lab.train`` command line, or None."""
    if refusal := missing_plugin(arguments):
        return refusal
    multirun = any(a in MULTIRUN_FLAGS for a in arguments)
    for argument in arguments:
        if refusal := unknown_option(argument):
            return refusal
        match = _GROUP_CHOICE.match(argument)
        if match and match["group"] == "experiment" and match["values"] not in ("", "null"):
            if not multirun:
                return (
                    f"{argument} is a sweep: run it with -m (python -m stn_lab.train -m {argument})"
                )
    return None
