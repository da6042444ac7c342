"""What two groups differ in: every result-relevant setting, sorted into causes and consequences.

A group's config holds the Hydra choices (``optimizer=sgd``) and the values they put into the
config (``optimizer.lr``), beside the values set one by one (``trainer.max_epochs=4``). Two
groups can differ in several of these at once; :func:`contrast` names them all:

- a config key **follows** from a choice that differs between the groups when the choice puts
  it there: it lies in the choice's node (``optimizer.*`` for ``optimizer``), or it is a copy
  of a key in that node (``model.stn.transform`` interpolates ``${transform}``, so it follows
  from ``transform``). A key set on the command line (``optimizer.lr=0.1``) that both groups
  have never follows: it was chosen. (A key only one side has, such as ``model.stn.lr_mult``
  beside a CNN, follows from the choice that gave it.)
- every other differing key, and every differing choice that puts a differing key into the
  config, is a **cause**. One cause makes a clean comparison; more than one confounds it: the
  difference in accuracy cannot be given to any one of them.

``n/a`` (a choice that does not apply, such as ``localiser`` for a CNN) matches anything when
the ``model`` choice differs, and the keys of a choice that does not apply are not compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stn_lab.compare.records import NA

#: The Hydra choice whose ``n/a`` settings match anything when it differs.
MODEL = "model"


@dataclass(frozen=True)
class Side:
    """One group as :func:`contrast` sees it: its choices, its config values (dotted keys, as
    text) and the config keys its runs set on the command line."""

    choices: Mapping[str, str]
    config: Mapping[str, str]
    overridden: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Contrast:
    """What two groups differ in: ``causes`` (the choices and keys that differ of their own
    accord, choices first) and ``follows`` (the keys that a differing choice put there)."""

    causes: tuple[str, ...]
    follows: tuple[str, ...]

    @property
    def confounded(self) -> bool:
        return len(self.causes) > 1


def _under(key: str, node: str) -> bool:
    return key == node or key.startswith(node + ".")


def _package(key: str, choices: Iterable[str]) -> str | None:
    """The choice whose node holds ``key`` (Hydra's default package: the group's name)."""
    top = key.split(".", 1)[0]
    return top if top in choices else None


def _depth(key: str) -> int:
    return key.count(".")


def contrast(a: Side, b: Side) -> Contrast:
    """Every result-relevant setting in which ``a`` and ``b`` differ (see the module doc)."""
    names = list(dict.fromkeys([*a.choices, *b.choices]))
    value = {g: (a.choices.get(g, NA), b.choices.get(g, NA)) for g in names}
    model_differs = value.get(MODEL, (NA, NA))[0] != value.get(MODEL, (NA, NA))[1]
    not_applicable = {g for g, pair in value.items() if NA in pair and pair != (NA, NA)}
    differing = [
        g
        for g, (va, vb) in value.items()
        if va != vb and not (model_differs and g in not_applicable)
    ]
    chosen = {k for k in a.overridden | b.overridden if k not in value}
    keys = sorted(
        k for k in a.config.keys() | b.config.keys() if a.config.get(k, NA) != b.config.get(k, NA)
    )

    def seen(k: str) -> tuple[str, str, str]:
        return k.rsplit(".", 1)[-1], a.config.get(k, NA), b.config.get(k, NA)

    copies: dict[tuple[str, str, str], list[str]] = {}
    for k in keys:
        copies.setdefault(seen(k), []).append(k)
    owned: dict[str, list[str]] = {g: [] for g in differing}
    causes: list[str] = []
    for k in keys:
        if _package(k, not_applicable):
            continue  # a setting of a choice that does not apply to one side
        applies = NA not in (a.config.get(k, NA), b.config.get(k, NA))
        if applies and any(_under(k, o) for o in chosen):
            causes.append(k)  # set on the command line, on a side where the choice has it
            continue
        # The choice that put k there: its own node, or the node it copies; the shallowest
        # of these is the source (``transform._target_``, not ``model.stn.transform._target_``).
        owners = [(_depth(k), 0, g) for g in [_package(k, differing)] if g]
        owners += [
            (_depth(q), 1, g)
            for q in copies[seen(k)]
            if q != k
            for g in [_package(q, differing)]
            if g
        ]
        if owners:
            owned[min(owners)[2]].append(k)
        else:
            causes.append(k)
    named = [g for g in differing if owned[g]]
    if not named and not causes:
        named = differing  # choices whose options differ in name only
    follows = tuple(k for g in differing for k in owned[g])
    return Contrast((*named, *causes), follows)


def conjunction(items: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + f" and {items[-1]}"
