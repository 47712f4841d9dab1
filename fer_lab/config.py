"""Typed, frozen configuration: family defaults from ``fer_lab/configs/``, overrides on top.

Config flows one way: ``fer_lab/configs/<family>.yaml`` (shipped inside the package) → an optional experiment file that only
overrides → command-line values. The resolved result is logged with every study.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # `fer-lab bench`, `predict`, `analyze` run without importing Optuna
    import optuna

OBJECTIVES = ("accuracy", "macro_f1")
DEFAULT_BUDGET = "default"
# Optuna's storage unless --storage says otherwise; teams point it at PostgreSQL.
DEFAULT_STORAGE = os.environ.get("FER_LAB_STORAGE") or "sqlite:///optuna.db"
BUDGETS = (DEFAULT_BUDGET, "quick", "full")
# The main job (`fer-lab compare`, MLproject's main entry point) runs every family: by
# default in minutes; one family's study (`tune`) takes its tuned budget.
MAIN_JOB_BUDGET = "quick"


def config_dir() -> Path:
    """``$FER_LAB_CONFIGS``, else the package's own ``configs/`` (installed with it, so a
    non-editable ``pip install`` finds them too)."""
    return Path(os.environ.get("FER_LAB_CONFIGS") or Path(__file__).resolve().parent / "configs")


@dataclass(frozen=True)
class Param:
    """One dimension of a search space.

    ``choices`` makes it categorical, else ``low``/``high`` (ints → integer, floats → float,
    ``log`` for a log scale). ``when`` maps another parameter to the values under which
    this one exists, e.g. ``{"features": ["pca", "hog_pca"]}``.
    """

    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    when: Mapping[str, tuple] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial, chosen: Mapping[str, Any]) -> Any:
        """Asks the trial for a value; returns ``None`` when ``when`` rules it out."""
        if any(chosen.get(k) not in v for k, v in self.when.items()):
            return None
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class StudySettings:
    """How a family's study runs.

    Attributes:
        trials: trials to reach (a resumed study counts the ones it has).
        timeout: seconds after which no new trial starts; None for no limit.
        rungs: training-set fractions a trial fits on in turn; a trial below the median
            at a rung is pruned before the next, larger one (multi-fidelity). The best
            configuration is then refit on the whole training split.
        objective: validation metric to maximise: ``accuracy`` or ``macro_f1``.
        startup_trials: trials that run every rung before pruning starts.
        warmup_steps: reports of a trial that never prune it (e.g. noisy early epochs).
        refit_params: parameters that replace the best trial's for the final fit, e.g. a
            longer training budget than the short trials had.
        first_trials: parameters of the trials that follow the defaults' one before the
            sampler proposes any (e.g. each of the ensemble's votes: in four trials a
            sampler can miss one of three); parameters left out are sampled.
    """

    trials: int = 20
    timeout: float | None = None
    rungs: tuple[float, ...] = (1.0,)
    objective: str = "accuracy"
    startup_trials: int = 4
    warmup_steps: int = 0
    refit_params: Mapping[str, Any] = field(default_factory=dict)
    first_trials: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class FamilyConfig:
    """A family's defaults, search space and study settings."""

    family: str
    params: Mapping[str, Any]
    search_space: tuple[Param, ...]
    study: StudySettings


@dataclass(frozen=True)
class TuneConfig:
    """Everything one ``fer-lab tune`` needs, fully resolved."""

    model: FamilyConfig
    data: str = "synthetic"
    seed: int = 0
    val_fraction: float = 0.1
    experiment: str = "fer-lab"
    storage: str = DEFAULT_STORAGE
    study_name: str | None = None
    budget: str = DEFAULT_BUDGET
    register: bool = True
    workers: int = 1
    heartbeat: float = 30.0
    labels: str = "fer2013"  # the label set (fer_lab.labels): fer2013, ferplus[:VOTES_FILE]

    @property
    def label_set(self) -> str:
        """The label set's name, without a votes file: ``fer2013`` or ``ferplus``."""
        return self.labels.partition(":")[0]

    @property
    def protocol(self) -> str:
        """How validation was carved: what makes two studies' validation scores comparable."""
        return f"val {self.val_fraction:g} of Training, seed {self.seed}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logging as the resolved config."""
        out = asdict(self)
        out["model"]["search_space"] = {p["name"]: {k: v for k, v in p.items() if k != "name"}
                                        for p in out["model"]["search_space"]}
        return _plain(out)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(base: dict, override: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_family(family: str, experiment_file: str | os.PathLike | None = None,
                budget: str = DEFAULT_BUDGET, **study_overrides: Any) -> FamilyConfig:
    """Reads ``fer_lab/configs/<family>.yaml``, applies a budget, an experiment file, then study
    overrides.

    Args:
        family: a registered family name.
        experiment_file: a yaml holding only overrides (``params``, ``search_space``,
            ``study``); ``search_space: {name: null}`` removes a dimension.
        budget: ``default`` (the file as it is) or a name under the file's ``budgets``,
            whose overrides apply first: ``quick`` (a smoke run in minutes) and ``full``
            (for more time or a GPU).
        study_overrides: ``StudySettings`` fields given on the command line; None values
            leave the file's value.
    """
    path = config_dir() / f"{family}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in config_dir().glob("*.yaml")))
        raise FileNotFoundError(f"unknown family {family!r}; known: {known} "
                                f"(no {path.name} in {path.parent})")
    raw = yaml.safe_load(path.read_text()) or {}
    budgets = raw.pop("budgets", None) or {}
    if budget != DEFAULT_BUDGET:
        if budget not in budgets:
            known = ", ".join([DEFAULT_BUDGET, *budgets])
            raise ValueError(f"{path}: unknown budget {budget!r}; known: {known}")
        raw = _merge(raw, budgets[budget])
    if experiment_file:
        raw = _merge(raw, yaml.safe_load(Path(experiment_file).read_text()) or {})
    study = {**raw.get("study", {}), **{k: v for k, v in study_overrides.items() if v is not None}}
    if study.get("objective", "accuracy") not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {study['objective']!r}")
    if "rungs" in study:
        study["rungs"] = tuple(float(r) for r in study["rungs"])
    if "first_trials" in study:
        study["first_trials"] = tuple(dict(t) for t in study["first_trials"] or ())
    space = tuple(
        Param(name, **{**spec, "choices": tuple(spec["choices"]) if "choices" in spec else None,
                       "when": {k: tuple(v) for k, v in spec.get("when", {}).items()}})
        for name, spec in (raw.get("search_space") or {}).items() if spec is not None
    )
    return FamilyConfig(family, dict(raw.get("params") or {}), space, StudySettings(**study))
