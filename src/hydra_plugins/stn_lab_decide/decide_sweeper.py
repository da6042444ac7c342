"""The sequential seed sweeper: run the arms seed by seed, in rounds, until each comparison is
decided (``conf/hydra/sweeper/decide.yaml``, ``docs/sequential.md``).

Each round goes to the configured launcher (basic, joblib, SLURM, ...) as one batch, so its
jobs run in parallel where the launcher allows. After a round the jobs' ``metrics.json``
records are read back and :mod:`stn_lab.sequential` looks at the paired differences; the
sweep stops when every comparison is better, worse, equivalent or out of seeds, and writes
``decision.json`` after every look. Imports of stn_lab wait for a sweep: Hydra imports every
plugin module at start-up, for every command.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger("stn_lab")


class DecideSweeper(Sweeper):
    """Hydra's sweeper interface around :mod:`stn_lab.seed_rounds`.

    ``arms`` names the swept setting whose values are the arms (None: the one setting swept
    besides ``seed``); ``baseline`` is the arm the others are compared with (None: the last
    value listed). ``delta`` (accuracy points; None: no equivalence test), ``alpha``,
    ``first``, ``step``, ``max_seeds`` and ``spending`` (``obf`` or ``pocock``) are the
    sequential design's. ``params`` are sweep
    overrides from config files, as the basic sweeper's.
    """

    def __init__(
        self,
        arms: str | None = None,
        baseline: Any = None,
        delta: float | None = 1.0,
        alpha: float = 0.05,
        first: int = 3,
        step: int = 1,
        max_seeds: int = 20,
        spending: str = "obf",
        params: dict[str, str] | None = None,
    ) -> None:
        self.settings = dict(arms=arms, baseline=baseline, delta=delta, alpha=alpha, first=first,
                             step=step, max_seeds=max_seeds, spending=spending)  # fmt: skip
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        self.numbers: dict[tuple[str, int], int] = {}  # each job's number in this process

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ------------------------------------------------------------------ the plan
    def plan(self, arguments: list[str]):
        """The :class:`~stn_lab.seed_rounds.Plan` of the config's ``params`` and the command's
        ``arguments``, or a one-line refusal (exit 2) before anything is written."""
        from stn_lab.seed_rounds import Plan, check_names

        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        given = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        swept: dict[str, list[str]] = {}
        fixed: list[str] = []
        for override in parser.parse_overrides(given):
            key = override.get_key_element()
            if override.key_or_group == "seed":
                log.info("decide: the sweeper chooses the seeds (0, 1, ...); %s is ignored",
                         override.input_line)  # fmt: skip
            elif not override.is_sweep_override():
                fixed.append(f"{key}={override.get_value_element_as_str()}")
            elif override.is_discrete_sweep():
                swept[override.key_or_group] = list(override.sweep_string_iterator())
            else:
                refuse(f"decide cannot sweep {key} over a range or interval; list the arms")
        s = self.settings
        setting = s["arms"] or (next(iter(swept)) if len(swept) == 1 else None)
        if setting is None or setting not in swept:
            refuse(
                f"decide compares the values of one swept setting (hydra.sweeper.arms="
                f"{s['arms'] or 'null'}); swept: {', '.join(swept) or 'nothing'}: sweep one, "
                "e.g. model=stn,cnn"
            )
        others = [k for k in swept if k != setting]
        if others:
            refuse(f"decide sweeps only {setting}; also swept: {', '.join(others)}: fix each "
                   "to one value, or sweep them with the basic sweeper")  # fmt: skip
        values = tuple(swept[setting])
        if len(values) < 2 or len(set(values)) < len(values):
            refuse(f"{setting} needs two or more different arms, got {', '.join(values)}")
        baseline = values[-1] if s["baseline"] is None else str(s["baseline"])
        if baseline not in values:
            refuse(f"hydra.sweeper.baseline={baseline} is not one of {setting}="
                   f"{','.join(values)}")  # fmt: skip
        try:
            plan = Plan(setting, values, baseline, tuple(fixed), s["delta"], s["alpha"],
                        s["first"], s["step"], s["max_seeds"], s["spending"])  # fmt: skip
            plan.decide({})  # the design's checks (first, step, max_seeds, alpha, delta, ...)
            check_names(plan)
        except ValueError as err:
            refuse(f"hydra.sweeper: {err}")
        return plan

    def sweep_dir(self, plan) -> Path:
        """The folder given with ``hydra.sweep.dir``, else one named after the plan beside
        where Hydra would have put it: the same command finds the same folder again."""
        assert self.config is not None
        given = any(o.startswith("hydra.sweep.dir=") for o in self.config.hydra.overrides.hydra)
        configured = Path(str(self.config.hydra.sweep.dir))
        return configured if given else plan.folder(configured.parent)

    # ------------------------------------------------------------------ the rounds
    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        from stn_lab import seed_rounds
        from stn_lab.sweep_summary import clear_outcomes

        assert self.config is not None and self.launcher is not None
        plan = self.plan(arguments)
        sweep_dir = self.sweep_dir(plan)
        with read_write(self.config), open_dict(self.config):  # the summary reads it at the end
            self.config.hydra.sweep.dir = str(sweep_dir)
        clear_outcomes(sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        rounds = seed_rounds.previous_rounds(sweep_dir)
        log.info("decide: %s=%s against %s, in %s (re-run this command to continue it)",
                 plan.setting, ",".join(plan.arms), plan.baseline, sweep_dir)  # fmt: skip
        returns: list[JobReturn] = []
        while True:
            scores, runs = seed_rounds.read_scores(plan, sweep_dir)
            decision = plan.decide(scores)
            jobs = seed_rounds.next_jobs(plan, decision, scores)
            if rounds or not jobs:  # a look at the seeds so far
                for line in seed_rounds.describe(plan, decision):
                    log.info("decide: %s", line)
            seed_rounds.write_decision(sweep_dir, plan, decision, runs, rounds, arguments)
            if not jobs:
                break
            started = time.monotonic()
            seeds = sorted({seed for _, seed in jobs})
            log.info("decide: round %d: %d jobs (seeds %s)", len(rounds) + 1, len(jobs),
                     ", ".join(map(str, seeds)))  # fmt: skip
            returns += self.launch(plan, sweep_dir, jobs)
            failed = self.failed(plan, sweep_dir, jobs)
            for value, seed in failed:  # retried once, each on its own
                folder = sweep_dir / plan.job_name(value, seed)
                log.warning("decide: %s failed (%s): retrying it once", folder,
                            self.error(folder))  # fmt: skip
                returns += self.launch(plan, sweep_dir, [(value, seed)], again=True)
            rounds.append({"seeds": seeds, "jobs": len(jobs),
                           "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
            still = self.failed(plan, sweep_dir, failed)
            if still:
                folder = sweep_dir / plan.job_name(*still[0])
                scores, runs = seed_rounds.read_scores(plan, sweep_dir)
                seed_rounds.write_decision(sweep_dir, plan, plan.decide(scores), runs, rounds,
                                           arguments, stopped=True)  # fmt: skip
                log.error("decide: stopped: %s failed twice (%s); fix it and re-run the same "
                          "command to continue", folder, self.error(folder))  # fmt: skip
                return returns
        log.info("decide: %s", sweep_dir / seed_rounds.DECISION)
        return returns

    def launch(
        self, plan, sweep_dir: Path, jobs: list[tuple[str, int]], again: bool = False
    ) -> list[JobReturn]:
        """One batch of jobs through the configured launcher, numbered after every earlier one
        of this sweep. A job run ``again`` keeps its number, so that the sweep's summary counts
        its last outcome only (a retry that succeeds is no failure)."""
        batch = [plan.overrides(value, seed, sweep_dir) for value, seed in jobs]
        self.validate_batch_is_legal(batch)
        if again:
            (job,) = jobs
            return list(self.launcher.launch(batch, initial_job_idx=self.numbers[job]))
        first = len(self.numbers)
        self.numbers.update({job: first + i for i, job in enumerate(jobs)})
        return list(self.launcher.launch(batch, initial_job_idx=first))

    @staticmethod
    def failed(plan, sweep_dir: Path, jobs: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The jobs whose folder holds no completed record of their seed."""
        from stn_lab.seed_rounds import read_record, score

        return [
            (value, seed)
            for value, seed in jobs
            if score(read_record(sweep_dir / plan.job_name(value, seed)), seed) is None
        ]

    @staticmethod
    def error(folder: Path) -> str:
        from stn_lab.seed_rounds import read_record

        record = read_record(folder) or {}
        return record.get("error") or f"no completed metrics.json in {folder}"


def refuse(message: str) -> None:
    """Stop the sweep before it writes anything: one line, exit 2 (as ``stn-train``'s own
    refusals)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
