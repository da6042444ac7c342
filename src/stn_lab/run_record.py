"""The record's contract: the fields of ``metrics.json`` (:func:`metrics_record`) and which
settings can change a run's result (:func:`relevant_settings`, :func:`changed_settings`).

``train`` (through :class:`stn_lab.record.RunRecorder`, its one writer) and ``compare`` both read
these rules, so a resume refuses exactly the changes that ``compare`` would group apart.
"""

from __future__ import annotations

SCHEMA_VERSION = 2
#: Settings that never change what a run learns (where files go, how often things are printed or
#: saved): a resume may change them, and ``compare`` does not group by them. Each entry covers
#: the key itself and every key below it (``paths`` covers ``paths.log_dir``, not ``pathsx``).
RESULT_NEUTRAL = (
    "seed", "ckpt_path", "checkpoint_every_n_steps", "paths", "hydra", "logger", "callbacks",
    "trainer.logger",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "trainer.default_root_dir", "data.data_dir", "data.num_workers", "data.keep_on_device",
    "data.download",
)  # fmt: skip
#: Exceptions inside neutral entries: the longest entry that covers a key decides.
RESULT_RELEVANT = (
    "callbacks.early_stopping",
    # which checkpoint the test scores
    "callbacks.best_checkpoint.monitor", "callbacks.best_checkpoint.mode",
)  # fmt: skip
#: Callback classes that change what a run learns or which model is kept, however they are
#: added (the ``callbacks`` group or ``+trainer.callbacks``); any other callback only watches.
RESULT_CHANGING_CALLBACKS = (
    "EarlyStopping", "StochasticWeightAveraging", "WeightAveraging", "EMAWeightAveraging",
    "GradientAccumulationScheduler", "BaseFinetuning", "BackboneFinetuning", "ModelPruning",
    "QuantizationAwareTraining", "Timer", "LearningRateFinder", "BatchSizeFinder",
)  # fmt: skip
#: What a resume may change besides those: how long to train.
RESUMABLE = ("trainer.max_epochs", "trainer.max_steps")
#: Trainer settings that make a run a check, not a result.
DEBUG_FLAGS = ("fast_dev_run", "limit_train_batches", "limit_val_batches", "limit_test_batches",
               "overfit_batches")  # fmt: skip
NOT_APPLICABLE = "n/a"
# Groups that only shape the STN: for a plain CNN their choice changes nothing.
STN_ONLY_GROUPS = ("localiser", "localiser_size", "activation", "transform")


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and empty dicts stay values)."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _longest_cover(entries: tuple[str, ...], key: str) -> int:
    return max((len(e) for e in entries if key == e or key.startswith(e + ".")), default=-1)


def result_neutral(key: str) -> bool:
    """Whether a dotted config key leaves what a run learns unchanged: the longest entry of
    :data:`RESULT_NEUTRAL` and :data:`RESULT_RELEVANT` that covers it decides."""
    return _longest_cover(RESULT_NEUTRAL, key) > _longest_cover(RESULT_RELEVANT, key)


#: Trainer settings whose ``null`` means Lightning's default: both mean the same run.
LIGHTNING_DEFAULTS = {
    "trainer.limit_train_batches": 1.0, "trainer.limit_val_batches": 1.0,
    "trainer.limit_test_batches": 1.0, "trainer.overfit_batches": 0.0,
    "trainer.check_val_every_n_epoch": 1, "trainer.accumulate_grad_batches": 1,
}  # fmt: skip


def effective(key: str, value):
    """A setting's value as Lightning applies it: ``null`` is its default, and the type counts
    (``limit_train_batches`` 1 is one batch, 1.0 the whole epoch)."""
    value = LIGHTNING_DEFAULTS.get(key) if value is None else value
    return (type(value).__name__, value) if isinstance(value, int | float) else value


def callback_changes_results(entry, name: str | None = None) -> bool:
    """Whether a callback config can change a run's result as a whole: a ``callbacks.<name>``
    entry that :func:`result_neutral` keeps (early stopping), or any callback, however added,
    whose ``_target_`` class is one of :data:`RESULT_CHANGING_CALLBACKS`."""
    if name is not None and not result_neutral(f"callbacks.{name}"):
        return True
    target = entry.get("_target_") if isinstance(entry, dict) else None
    return isinstance(target, str) and target.rsplit(".", 1)[-1] in RESULT_CHANGING_CALLBACKS


def relevant_settings(config: dict) -> dict[str, object]:
    """The result-relevant settings of a resolved config, flattened to dotted keys: what sets
    runs apart in ``compare`` and what a resume may not change.

    Callbacks are judged one by one, the same way wherever they are listed: an entry of the
    ``callbacks`` group or of ``+trainer.callbacks=[...]`` that changes results counts whole;
    of any other, only its result-relevant keys (``callbacks.best_checkpoint.monitor``).
    """
    config = dict(config)
    group = config.pop("callbacks", None)
    trainer = config.get("trainer")
    listed = None
    if isinstance(trainer, dict):
        trainer = dict(trainer)
        listed = trainer.pop("callbacks", None)
        config["trainer"] = trainer
    flat = {k: v for k, v in flatten(config).items() if not result_neutral(k)}
    for name, entry in (group if isinstance(group, dict) else {}).items():
        whole = callback_changes_results(entry, str(name))
        for key, value in flatten({"callbacks": {name: entry}}).items():
            if whole or not result_neutral(key):
                flat[key] = value
    entries = listed if isinstance(listed, list) else [] if listed is None else [listed]
    relevant = [e for e in entries if callback_changes_results(e)]
    if relevant:
        flat["trainer.callbacks"] = relevant
    return flat


def changed_settings(old: dict, new: dict) -> dict[str, tuple]:
    """The result-relevant settings (dotted keys) that differ between two resolved configs,
    after Lightning's defaults are applied, as ``{key: (old, new)}``."""
    a, b = relevant_settings(old), relevant_settings(new)
    return {
        key: (a.get(key), b.get(key))
        for key in sorted(a.keys() | b.keys())
        if effective(key, a.get(key)) != effective(key, b.get(key))
    }


def identity_changes(old: dict, new: dict) -> dict[str, tuple]:
    """The changes that make ``new`` another run than ``old``: its result-relevant settings
    (:func:`changed_settings`) and its seed, which never sets runs apart in a comparison but is
    part of which run this is."""
    changed = changed_settings(old, new)
    if old.get("seed") != new.get("seed"):
        changed["seed"] = (old.get("seed"), new.get("seed"))
    return changed


def not_resumable(changed: dict[str, tuple]) -> dict[str, tuple]:
    """The changes of :func:`changed_settings` that a resume may not make."""
    return {key: change for key, change in changed.items() if key not in RESUMABLE}


def length_fitted_schedule(config: dict) -> str | None:
    """The scheduler argument that a run's length fills in (``T_max`` of ``scheduler=cosine``,
    ``total_steps`` of ``thirds``, when left null), else None. A resume that changes such a
    run's length would keep the old value (the scheduler's state holds it) and so follow
    neither its old schedule nor that of a new run of the new length."""
    scheduler = config.get("scheduler") or {}
    arg = scheduler.get("total_steps_arg")
    return arg if arg and (scheduler.get("scheduler") or {}).get(arg) is None else None


def is_debug_setting(name: str, value) -> bool:
    """Whether trainer setting ``name`` (one of :data:`DEBUG_FLAGS`) at ``value`` is a check."""
    if value is None or value is False:
        return False
    if name in ("fast_dev_run", "overfit_batches"):
        return value != 0  # True or a batch count; 0 is off, as in Lightning
    return not (isinstance(value, float) and value == 1.0)  # limit_*: 1.0 is the whole split


def debug_flags(trainer_config: dict) -> list[str]:
    """The trainer settings in effect that make a run a check rather than a result, e.g.
    ``["fast_dev_run"]`` or ``["limit_train_batches=5"]``."""
    return [
        name if value is True else f"{name}={value}"
        for name in DEBUG_FLAGS
        if is_debug_setting(name, value := trainer_config.get(name))
    ]


def variance_manifest(config: dict) -> dict[str, list[str]]:
    """What the seed of a run with this resolved ``config`` randomises, and what every run of
    the sweep shares (so that two seeds differ only in the first list)."""
    flat = flatten(config)
    distorted = config.get("distortion") is not None
    dropout = any(
        k.endswith("dropout") and v for k, v in flat.items() if isinstance(v, float | int)
    )
    randomised = ["weight init", "training data order"]
    randomised += ["training distortion draws"] * distorted + ["dropout masks"] * dropout
    eval_seed = flat.get("data.eval_seed", 0)
    fixed = [f"validation split (data.eval_seed={eval_seed})", "validation and test images"]
    fixed += [f"test distortions (data.eval_seed={eval_seed}, per image index)"] * distorted
    return {"randomised_by_seed": randomised, "fixed_across_seeds": fixed}


def record_choices(choices: dict[str, str | None], has_stn: bool) -> dict[str, str | None]:
    """The Hydra group choices worth recording (``distortion`` among them).

    STN-only groups are ``n/a`` without an STN.
    """
    recorded = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    if not has_stn:
        recorded.update({group: NOT_APPLICABLE for group in STN_ONLY_GROUPS})
    return recorded


def metrics_record(
    *,
    status: str,
    seed: int,
    choices: dict,
    overrides: list[str],
    error: str | None = None,
    class_names: list[str] | None = None,
    test: dict | None = None,
    epochs: int = 0,
    seconds_per_epoch: list[float] | None = None,
    skipped_batches: int = 0,
    params: dict | None = None,
    best_checkpoint: str | None = None,
    selection: dict | None = None,
    config: dict | None = None,
    debug: list[str] | None = None,
    step: int = 0,
    diverged: bool = False,
    best_val_acc: float | None = None,
    resumes: list[dict] | None = None,
    predictions: str | None = None,
) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "error": error,
        "seed": seed,
        "choices": choices,
        "overrides": overrides,
        "class_names": class_names,
        "test": test,
        "epochs": epochs,
        "seconds_per_epoch": seconds_per_epoch or [],
        "skipped_batches": skipped_batches,
        "params": params,
        "best_checkpoint": best_checkpoint,
        # How the tested model was chosen: the checkpoint callback's monitor, mode and score,
        # and whether the test scored that checkpoint ("best") or the last weights ("last").
        "selection": selection,
        "config": config,
        "debug": debug or [],
        "step": step,
        "diverged": diverged,
        "best_val_acc": best_val_acc,
        "resumes": resumes or [],
        "variance": variance_manifest(config) if config else None,
        "predictions": predictions,
    }
