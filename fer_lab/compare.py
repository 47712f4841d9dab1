"""The main job: every family's study on one data set and budget (the ensemble of their
champions last), then promotion of the best model and the comparison report, all under
one ``compare`` run."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow

from fer_lab import labels as label_sets
from fer_lab import registry, report, tracking
from fer_lab.config import (
    DEFAULT_STORAGE,
    MAIN_JOB_BUDGET,
    FamilyConfig,
    TuneConfig,
    load_family,
)
from fer_lab.models import families as all_families
from fer_lab.tuning import result_run_id, tune

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    """What ``compare`` produced.

    Attributes:
        metrics: each family's study metrics.
        promotion: what ``promote`` did.
        report: the HTML report.
        run_id: the ``compare`` run holding the studies and the report.
    """

    metrics: dict[str, dict[str, float]]
    promotion: registry.Decision
    report: Path
    run_id: str


def compare(data: str = "synthetic", budget: str = MAIN_JOB_BUDGET,
            families: Sequence[str] | None = None, *, seed: int = 0,
            experiment: str = "fer-lab", storage: str = DEFAULT_STORAGE,
            out: str | Path = "report", progress: bool = True,
            labels: str = label_sets.DEFAULT) -> Comparison:
    """Tunes every family (or ``families``) on ``data`` labelled with ``labels`` (a label
    set, ``fer_lab.labels``) with ``budget``, promotes the best and writes the report of
    these studies into ``out``. Re-run after an interruption, it goes on from the study it
    stopped in: the studies that ended are not run again, and the report shows them."""
    tracking.configure()
    dataset = label_sets.load(data, labels)
    configs = [TuneConfig(model=model, data=data, seed=seed, experiment=experiment,
                          storage=storage, budget=budget, labels=labels)
               for model in study_configs(families or all_families(), budget)]
    metrics = {}
    with tracking.top_run(experiment, f"compare · {budget}", "compare",
                          {"fer.budget": budget, "fer.data_digest": dataset.digest,
                           tracking.LABELS_TAG: dataset.label_set}) as run:
        mlflow.log_params({"compare.data": data, "compare.budget": budget,
                           "compare.families": ",".join(c.model.family for c in configs),
                           "compare.seed": seed, "compare.labels": labels})
        study_runs = []
        for config in configs:
            log.warning("compare: %s study (%s budget)", config.model.family, budget)
            metrics[config.model.family] = tune(config, dataset, progress=progress)
            study_runs.append(result_run_id(config, dataset.digest))
        mlflow.set_tag("fer.study_runs", ",".join(filter(None, study_runs)))
        promotion = registry.promote(dataset.label_set)
        mlflow.set_tag("fer.promotion", promotion.reason)
        page = report.log_report(out, experiment, runs=[r for r in study_runs if r])
    return Comparison(metrics, promotion, page, run.info.run_id)


def study_configs(families: Sequence[str], budget: str) -> list[FamilyConfig]:
    """The main job's studies, every config read before hours of training start. Ensembles
    come last and vote the champions the other studies produced, whatever the budget: the
    ensemble's own default (two CNNs it trains, ~110 min) is its entry point's, not the
    comparison's."""
    configs = []
    for family in sorted(families, key=lambda f: f == "ensemble"):
        model = load_family(family, budget=budget)
        if family == "ensemble":
            model = dataclasses.replace(model, params={**model.params, "members": ["champions"]})
        configs.append(model)
    return configs
