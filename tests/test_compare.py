"""End to end: `mlflow run . -e main` with the quick budget, read back through a real
`mlflow server`'s REST API, then the report it wrote."""

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import check_study, mlflow_server

from fer_lab import machine
from fer_lab import report as fer_report
from fer_lab.compare import study_configs
from fer_lab.config import TuneConfig, load_family
from fer_lab.data import EMOTIONS, load, split
from fer_lab.models import families
from fer_lab.report import CALIBRATION_COLUMNS, SCORE_COLUMNS, SEED_FIGURES

REPO = Path(__file__).resolve().parents[1]
STUDY_METRICS = [metric for _, metric in SCORE_COLUMNS] + [
    "fit_seconds", "search_seconds", "trials_complete", "trials_pruned", "trials_failed"]


def main_run(tmp_path_factory):
    """Runs the README's main job on small synthetic data in a temp folder."""
    tmp = tmp_path_factory.mktemp("main")
    uri = f"sqlite:///{tmp}/mlflow.db"
    # The experiment's artifacts go to the temp folder, not `mlruns/` in the project.
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("fer-lab", artifact_location=(tmp / "artifacts").as_uri())
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "FER_LAB_CACHE": str(tmp / "cache"),
           "FER_LAB_STORAGE": f"sqlite:///{tmp}/optuna.db",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    done = subprocess.run(
        [str(bin_dir / "mlflow"), "run", str(REPO), "-e", "main", "--env-manager", "local",
         "--experiment-name", "fer-lab", "-P", "data=synthetic:20", "-P", "budget=quick",
         "-P", f"out={tmp / 'report'}"],
        env=env, cwd=tmp, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    return tmp, uri, done.stdout


@pytest.mark.parametrize("budget", ["quick", "default", "full"])
def test_the_main_job_ends_with_the_ensemble_of_its_champions(budget):
    """The main job's ensemble votes the champions its studies just produced, whatever the
    budget: with the ensemble's own default it would train two more CNNs (~2 h more)."""
    configs = study_configs(families(), budget)
    assert [c.family for c in configs][-1] == "ensemble"
    assert sorted(c.family for c in configs) == sorted(families())
    ensemble = configs[-1]
    assert ensemble.params["members"] == ["champions"]
    own = load_family("ensemble", budget=budget)
    assert ensemble.study == own.study
    assert {k: v for k, v in ensemble.params.items() if k != "members"} == \
        {k: v for k, v in own.params.items() if k != "members"}
    for config in configs[:-1]:  # the other families keep the budget's settings
        assert config == load_family(config.family, budget=budget)


def test_a_main_job_run_again_goes_on_from_the_study_it_stopped_in(tracking, tmp_path,
                                                                   monkeypatch):
    """Killed (here: failing) in its second study, the main job run again does not redo
    the first, and its report still shows both."""
    from fer_lab import tuning
    from fer_lab.compare import compare
    from fer_lab.models.decision_tree import TreeClassifier

    refit = tuning.refit_and_evaluate

    def interrupted(family, *args, **kwargs):
        if family == "knn":
            raise KeyboardInterrupt
        return refit(family, *args, **kwargs)

    kwargs = dict(data="synthetic:20", budget="quick", families=["tree", "knn"],
                  experiment=tmp_path.name, storage=f"sqlite:///{tmp_path}/optuna.db",
                  out=tmp_path / "report", progress=False)
    monkeypatch.setattr(tuning, "refit_and_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare(**kwargs)
    monkeypatch.setattr(tuning, "refit_and_evaluate", refit)

    def no_fit(*args, **kwargs):
        raise AssertionError("the finished tree study was fitted again")

    monkeypatch.setattr(TreeClassifier, "fit", no_fit)
    done = compare(**kwargs)
    assert set(done.metrics) == {"tree", "knn"}
    runs = mlflow.search_runs(experiment_names=[tmp_path.name], output_format="list")
    trees = [r for r in runs if r.data.tags.get("fer.role") == "study"
             and r.data.tags.get("fer.family") == "tree"]
    assert len(trees) == 1 and trees[0].info.status == "FINISHED"
    [again] = [r for r in runs if r.info.run_id == done.run_id]
    shown = fer_report.studies(tmp_path.name, runs=again.data.tags["fer.study_runs"].split(","))
    assert sorted(s.family for s in shown) == ["knn", "tree"]
    assert trees[0].info.run_id in {s.run.info.run_id for s in shown}
    assert done.report.exists()


# The main job runs every family's study (about 2 minutes): slow.
@pytest.mark.slow
def test_the_main_job_end_to_end(tmp_path_factory):
    """One test for one (minutes-long) main job: under pytest-xdist a module fixture shared
    by several tests can be set up once per worker, and this one is the suite's longest."""
    run = main_run(tmp_path_factory)
    tmp, uri, _ = run
    with mlflow_server(["server", "--backend-store-uri", uri, "--workers", "1"], "/health",
                       tmp / "server.log", cwd=tmp) as url:
        every_study_its_trials_metrics_and_files_are_in_the_tracking_server(url)
    every_study_records_what_a_study_records(uri)
    main_promoted_the_best_model(run)
    report_names_every_family_and_metric(run)


def api(url: str, endpoint: str, payload: dict | None = None, **query) -> dict:
    address = f"{url}/api/2.0/mlflow/{endpoint}"
    if query:
        address += "?" + urllib.parse.urlencode(query)
    body = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(address, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def every_study_its_trials_metrics_and_files_are_in_the_tracking_server(server):
    experiment = api(server, "experiments/get-by-name", experiment_name="fer-lab")["experiment"]
    runs = api(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                       "max_results": 1000})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    by_id = {r["info"]["run_id"]: (r, t) for r, t in zip(runs, tags)}
    [compare] = [r for r, t in zip(runs, tags) if t.get("fer.role") == "compare"]
    assert compare["info"]["status"] == "FINISHED"
    studies = {t["fer.family"]: r for r, t in zip(runs, tags) if t.get("fer.role") == "study"}
    assert set(studies) == set(families())
    for family, run in studies.items():
        run_id = run["info"]["run_id"]
        run_tags = by_id[run_id][1]
        assert run_tags["mlflow.runName"] == f"{family} · study"
        assert run_tags["mlflow.parentRunId"] == compare["info"]["run_id"]
        trials = [t for r, t in by_id.values() if t.get("mlflow.parentRunId") == run_id
                  and t.get("fer.role") == "trial"]
        assert trials and all(t["mlflow.runName"].startswith(f"{family} · trial ") for t in trials)
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert set(STUDY_METRICS) <= metrics, family
        assert {f"test_all_{e}_f1" for e in EMOTIONS} <= metrics
        files = {f["path"] for f in api(server, "artifacts/list", run_id=run_id,
                                         path="evaluation")["files"]}
        assert "evaluation/confusion_test_all_normalized.png" in files
        assert "evaluation/confusion_test_all.json" in files
    [report] = [r for r, t in zip(runs, tags) if t.get("fer.role") == "report"]
    files = {f["path"] for f in api(server, "artifacts/list", run_id=report["info"]["run_id"],
                                     path="report")["files"]}
    assert {"report/report.html", "report/report.md", "report/confusion_matrices.png",
            "report/per_class_f1.png"} <= files


def every_study_records_what_a_study_records(uri: str) -> None:
    """Each family's study, checked as test_tuning checks one (conftest.check_study): the
    suite runs each family's study once, here."""
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["fer-lab"], output_format="list")
    parts = split(load("synthetic:20"), TuneConfig.val_fraction, seed=0)
    for family in families():
        [parent] = [r for r in runs if r.data.tags.get("fer.role") == "study"
                    and r.data.tags.get("fer.family") == family]
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                  and r.data.tags.get("fer.role") == "trial"]
        check_study(family, parent, trials, parts)


def main_promoted_the_best_model(main_run):
    _, uri, stdout = main_run
    mlflow.set_tracking_uri(uri)
    champion = mlflow.MlflowClient().get_model_version_by_alias("fer-emotion", "champion")
    assert champion.tags["fer.family"] in families()
    assert "promoted:" in stdout


def report_names_every_family_and_metric(main_run):
    tmp = main_run[0]
    html = (tmp / "report" / "report.html").read_text()
    markdown = (tmp / "report" / "report.md").read_text()
    # a row of its own per family (the reference rows name families too: not enough)
    def rows(section: str) -> list[list[str]]:
        text = markdown.split(f"## {section}\n")[1].split("\n## ")[0]
        return [line.removeprefix("| ").removesuffix(" |").split(" | ")
                for line in text.splitlines() if line.startswith("| ")]

    assert {row[0] for row in rows("Scores")} >= set(families())
    for family in families():
        assert f"<td>{family}</td>" in html
    cost = rows("Cost")
    machine_column = cost[0].index("machine")
    assert all(machine.isa() in row[machine_column] for row in cost[1:])
    scores = rows("Scores")
    test_all = scores[0].index("test_all acc")
    assert all("[" in row[test_all] for row in scores[1:] if row[0] in families())  # intervals
    for text in (html, markdown):
        for heading, _ in SCORE_COLUMNS + CALIBRATION_COLUMNS:
            assert heading in text
        for emotion in EMOTIONS:
            assert f"{emotion} P/R/F1" in text
        for column in ("trials (complete/pruned/failed)", "search s", "refit s", "machine",
                       "best parameters", "predict img/s", "model MB",
                       "best vs this (McNemar, test_all)"):
            assert column in text
        for family, accuracy in SEED_FIGURES.items():
            assert f"seed slides: {family} (reference)" in text and f"{accuracy:.2f}" in text
    assert html.count("data:image/png;base64,") >= 2 + 2 * len(families())  # self-contained
    assert "Most confident mistakes: cnn" in markdown
    assert "Optimisation history: svm" in markdown
    for png in ("confusion_matrices.png", "per_class_f1.png", "optimization_history_cnn.png"):
        assert (tmp / "report" / png).stat().st_size > 1000
