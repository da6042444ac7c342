"""Reading runs: every run folder becomes one :class:`RunRecord`, whatever became of the run.

:func:`load_runs` walks folders (single runs ``logs/runs/...`` and multirun jobs
``logs/multiruns/<date>/<n>/`` alike) for any folder holding ``.hydra/`` or ``metrics.json``
(but not the copies that loggers keep). Runs with no ``metrics.json``, a half-written or
unreadable one, an unknown ``schema_version`` or a failed status keep a one-line reason and are
listed, never silently dropped.

A record's ``settings`` are what identify its group: the whole resolved Hydra config that the
run recorded (schema 2), flattened to dotted keys, minus the seed and the other keys that
:func:`stn_lab.run_record.result_neutral` calls result-neutral (one definition, shared with the
resume check). Schema-1 records have no config; their settings are the recorded Hydra choices
plus the command-line overrides.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stn_lab.errors import first_line
from stn_lab.run_record import DEBUG_FLAGS, debug_flags, relevant_settings, result_neutral

#: Value of a setting that does not apply (e.g. ``localiser`` for ``model=cnn``) or is missing.
NA = "n/a"
#: Name of the file every training run writes into its output folder.
METRICS_FILE = "metrics.json"
#: metrics.json ``schema_version``s this module reads (v2 added config, debug, step, diverged,
#: best_val_acc and the ``interrupted`` status; v1 records are grouped by choices + overrides).
SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)
COMPLETED = "completed"
#: A failed run's error is shown by its first line, cut to this many characters.
REASON_LIMIT = 300
INTERRUPTED = "interrupted"

#: A setting that can name a group: ``("choice", group)`` for a Hydra choice such as
#: ``optimizer``, ``("config", dotted key)`` for a value such as ``model.stn.lr_mult``.
Setting = tuple[str, str]
#: What identifies a group: the sorted ``(dotted key, value)`` pairs of the runs' settings.
GroupKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RunRecord:
    """One run folder as read from its ``metrics.json``, whatever became of the run.

    ``status`` is the run's own (``completed``, ``failed``, ``interrupted``) or one that
    ``compare`` gives a folder it cannot use (``unfinished``, ``unreadable``, ``unknown
    schema``, ``malformed``); ``reason`` explains anything but ``completed`` in one line.
    ``settings`` identify the run's group: the flattened resolved config (v1: the choices and
    overrides) minus the seed and the result-neutral keys, every value as text.
    """

    path: Path
    status: str
    reason: str = ""
    seed: int | None = None
    choices: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    debug: tuple[str, ...] = ()
    diverged: bool = False
    step: int | None = None
    best_val_acc: float | None = None
    test_acc: float = math.nan
    test_loss: float = math.nan
    acc_per_class: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()
    seconds_per_epoch: tuple[float, ...] = ()
    params_total: int | None = None
    params_stn: int | None = None
    predictions: Path | None = None  # predictions.npy, when the run wrote one
    overridden: tuple[str, ...] = ()  # the config keys set on the command line
    variance: dict[str, tuple[str, ...]] | None = None  # what the seed randomises / fixes
    data_config: dict[str, Any] | None = None  # the resolved ``data`` config, to redraw images

    @property
    def key(self) -> GroupKey:
        return tuple(sorted(self.settings.items()))

    @property
    def described(self) -> dict[Setting, str]:
        """Every setting that can name the run's group: its choices, then its config values."""
        return {
            **{("choice", k): v for k, v in self.choices.items()},
            **{("config", k): v for k, v in self.settings.items()},
        }


@dataclass
class RunSet:
    """The runs found, sorted by what ``compare`` does with them."""

    results: list[RunRecord] = field(default_factory=list)  # completed, pooled over seeds
    debug: list[RunRecord] = field(default_factory=list)  # completed debug runs: not results
    interrupted: list[RunRecord] = field(default_factory=list)  # stopped by a signal
    failed: list[RunRecord] = field(default_factory=list)  # failed, unfinished or unreadable

    def add(self, record: RunRecord) -> None:
        if record.status == COMPLETED:
            (self.debug if record.debug else self.results).append(record)
        elif record.status == INTERRUPTED:
            self.interrupted.append(record)
        else:
            self.failed.append(record)


#: Folders where MLflow keeps its runs' artifacts (a file store; a database store's artifacts).
LOGGER_STORES = ("mlruns", "mlartifacts")
#: MLflow's file store writes this into every experiment and run folder, wherever the store is
#: (``logger.mlflow.tracking_uri=file:<anywhere>``).
MLFLOW_META = "meta.yaml"
#: The folder in which MLflow keeps a run's files (a copy of metrics.json among them).
MLFLOW_ARTIFACTS = "artifacts"


class MetricsError(ValueError):
    """A required metrics.json field that is missing or not a number; the message says which."""


def logger_store(here: Path, dirnames: Iterable[str], filenames: Iterable[str]) -> bool:
    """Whether folder ``here`` belongs to a logger's store rather than to a run.

    MLflow's default stores go by name (:data:`LOGGER_STORES`); a store elsewhere is known by
    what MLflow writes into it: a ``meta.yaml`` in every experiment and run folder, and a
    run's files (metrics.json too) in an ``artifacts/`` folder that has no ``.hydra/``.
    """
    if here.name in LOGGER_STORES or MLFLOW_META in filenames:
        return True
    return here.name == MLFLOW_ARTIFACTS and ".hydra" not in dirnames and METRICS_FILE in filenames


def find_run_dirs(dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """All run folders under ``dirs`` (recursive): folders holding ``.hydra/`` or metrics.json.

    Loggers keep copies of a run's ``metrics.json`` (MLflow's artifacts in its store, W&B's
    files inside the run folder); those copies are not runs, so the walk never goes below a
    run folder nor into a logger's store (:func:`logger_store`).
    """
    found: dict[Path, None] = {}
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if here != root and logger_store(here, dirnames, filenames):
                dirnames[:] = []
                continue
            if ".hydra" in dirnames or METRICS_FILE in filenames:
                found.setdefault(here.resolve(), None)
                dirnames[:] = []  # a run holds no other run
                continue
            # Hidden folders (.hydra, .git, .trash) hold no runs; sorted for a stable order.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def _text(value: Any) -> str:
    """A setting's value as text: strings as they are, anything else as JSON (``null``, ``0.5``)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _norm_choices(raw: Any) -> dict[str, str]:
    raw = raw if isinstance(raw, dict) else {}
    return {
        str(k): NA if v is None or str(v).strip() == "" else str(v)
        for k, v in raw.items()
        if not result_neutral(str(k))
    }


def _overrides(raw: Any) -> dict[str, str]:
    """Command-line overrides as ``{key: value}`` (``+``/``++``/``~`` prefixes dropped)."""
    items = raw if isinstance(raw, list) else []
    pairs = (str(item).lstrip("+~").partition("=") for item in items)
    return {key: value for key, _, value in pairs}


def _config_settings(config: dict[str, Any]) -> dict[str, str]:
    """The result-relevant settings of a resolved config (:func:`relevant_settings`), as
    text."""
    return {k: _text(v) for k, v in relevant_settings(config).items()}


def _settings(data: dict[str, Any], choices: dict[str, str]) -> dict[str, str]:
    """What identifies the run's group (see RunRecord); v1 falls back to choices + overrides."""
    config = data.get("config")
    if isinstance(config, dict):
        return _config_settings(config)
    flat = {**_overrides(data.get("overrides")), **choices}
    return {k: v for k, v in flat.items() if not result_neutral(k)}


def _override_value(text: str) -> Any:
    """A command-line value as Hydra types it: ``null``, booleans and numbers, else text."""
    lowered = text.strip().lower()
    if lowered in ("null", "none"):
        return None
    try:
        return json.loads(lowered)
    except ValueError:
        return text


def _debug(data: dict[str, Any]) -> tuple[str, ...]:
    """The debug flags in effect: v2 records them, for v1 they are read off the overrides."""
    debug = data.get("debug")
    if isinstance(debug, list):
        return tuple(str(d) for d in debug)
    choices = data.get("choices") if isinstance(data.get("choices"), dict) else {}
    flags = [f"debug={choices['debug']}"] if choices.get("debug") else []
    trainer = {
        key.removeprefix("trainer."): _override_value(value)
        for key, value in _overrides(data.get("overrides")).items()
        if key.removeprefix("trainer.") in DEBUG_FLAGS and key.startswith("trainer.")
    }
    return tuple(flags + debug_flags(trainer))


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetricsError(f"metrics.json: {what} is not a number ({value!r})")
    return float(value)


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MetricsError(f"metrics.json: {what} is not a list")
    return tuple(_number(v, f"{what} entry") for v in value)


def _optional_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _optional_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _variance(raw: Any) -> dict[str, tuple[str, ...]] | None:
    """The run's variance manifest (schema 2, newer runs), each list as a tuple of text."""
    if not isinstance(raw, dict):
        return None
    return {str(k): tuple(str(x) for x in v) for k, v in raw.items() if isinstance(v, list)}


def _predictions(name: Any, path: Path) -> Path | None:
    """The run's predictions file, when metrics.json names one and it exists."""
    if not isinstance(name, str) or not name:
        return None
    file = path / name
    return file if file.is_file() else None


def parse_metrics(data: dict[str, Any], path: Path) -> RunRecord:
    """A decoded metrics.json (any of :data:`SCHEMA_VERSIONS`) as a :class:`RunRecord`."""
    choices = _norm_choices(data.get("choices"))
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    record = RunRecord(
        path=path,
        status=COMPLETED,
        seed=_optional_int(data.get("seed")),
        choices=choices,
        settings=_settings(data, choices),
        overridden=tuple(_overrides(data.get("overrides"))),
        debug=_debug(data),
        diverged=data.get("diverged") is True,
        step=_optional_int(data.get("step")),
        best_val_acc=_optional_float(data.get("best_val_acc")),
        predictions=_predictions(data.get("predictions"), path),
        variance=_variance(data.get("variance")),
        data_config=config.get("data") if isinstance(config.get("data"), dict) else None,
    )
    status = data.get("status")
    if status != COMPLETED:
        error = data.get("error")
        no_error = f"status is {status!r} (no error message)"
        reason = first_line(str(error), REASON_LIMIT) if error else no_error
        label = status if status in ("failed", INTERRUPTED) else f"status {status!r}"
        return dataclasses.replace(record, status=label, reason=reason)
    test = data.get("test")
    if not isinstance(test, dict):
        return dataclasses.replace(
            record, status="malformed", reason="metrics.json has no 'test' section"
        )
    try:
        names = data.get("class_names")
        params = data.get("params") if isinstance(data.get("params"), dict) else {}
        return dataclasses.replace(
            record,
            test_acc=_number(test.get("acc"), "test.acc"),
            test_loss=_number(test.get("loss"), "test.loss"),
            acc_per_class=_numbers(test.get("acc_per_class"), "test.acc_per_class"),
            class_names=tuple(str(n) for n in names) if isinstance(names, list) else (),
            seconds_per_epoch=_numbers(data.get("seconds_per_epoch"), "seconds_per_epoch"),
            params_total=_optional_int(params.get("total")),
            params_stn=_optional_int(params.get("stn")),
        )
    except MetricsError as err:
        return dataclasses.replace(record, status="malformed", reason=str(err))


def read_run(run_dir: Path) -> RunRecord:
    """Read one run folder; a folder that holds no usable record gets a status saying why."""
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        has_config = (run_dir / ".hydra" / "config.yaml").is_file()
        what = ".hydra/config.yaml" if has_config else ".hydra/"
        reason = f"no metrics.json (only {what}): never finished"
        return RunRecord(run_dir, "unfinished", reason)
    try:
        text = metrics.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return RunRecord(run_dir, "unreadable", f"cannot read metrics.json: {err}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        reason = f"metrics.json is not valid JSON (half-written?): {err}"
        return RunRecord(run_dir, "unreadable", reason)
    if not isinstance(data, dict):
        return RunRecord(run_dir, "unreadable", "metrics.json does not hold a JSON object")
    version = data.get("schema_version")
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        known = ", ".join(str(v) for v in SCHEMA_VERSIONS)
        reason = f"unknown metrics.json schema_version {version!r} (this compare reads: {known})"
        return RunRecord(run_dir, "unknown schema", reason)
    return parse_metrics(data, run_dir)


def load_runs(dirs: Iterable[str | os.PathLike[str]]) -> RunSet:
    """Find and read every run under ``dirs``, sorted into a :class:`RunSet`."""
    found = RunSet()
    for run_dir in find_run_dirs(dirs):
        found.add(read_run(run_dir))
    return found
