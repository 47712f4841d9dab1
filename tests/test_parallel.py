"""Several workers on one study, and workers that die: real processes, real storages.

The PostgreSQL test runs when ``FER_LAB_TEST_POSTGRES`` names a server (``.ci/run``
installs and starts one); the others need nothing but this machine.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from conftest import mlflow_server

from fer_lab import cli, parallel

POSTGRES = os.environ.get("FER_LAB_TEST_POSTGRES")
# `python -m fer_lab.cli` as a user's terminal starts it: a suite started in the background
# of a non-interactive shell (nohup, `cmd &`) passes on an ignored SIGINT, and Python then
# never raises KeyboardInterrupt; a user's Ctrl-C reaches fer-lab with the default one.
FER_LAB = [
    sys.executable, "-c",
    ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
     "runpy.run_module('fer_lab.cli', run_name='__main__', alter_sys=True)")]
# Slow enough trials (a few seconds) to be killed in the middle of one.
SLOW_CNN = {"params": {"width": 8, "epochs": 30, "min_steps": 0, "batch_size": 16,
                       "max_minutes": None, "tta": "none"},
            "search_space": {"arch": None},
            "study": {"rungs": [1.0], "warmup_steps": 0,
                      "refit_params": {"epochs": 1, "max_minutes": None, "tta": "none"}}}


def trial_runs(experiment: str) -> list:
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    return [r for r in runs if r.data.tags.get("fer.role") == "trial"]


def test_the_lead_waits_for_trials_running_elsewhere_and_not_for_lost_ones():
    """A joiner on another host still runs a trial when the lead's own are done: the lead
    waits for it before picking the best; a trial whose process is gone does not hold it."""
    import threading

    study = optuna.create_study(direction="maximize")
    elsewhere = study.ask()  # a live worker's trial (another host: no identity checked)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lost = study.ask()
    lost.set_user_attr(parallel.WORKER_ATTR, {**parallel.worker_identity(), "pid": dead.pid,
                                              "started": "0"})
    threading.Timer(0.5, lambda: study.tell(elsewhere, 0.9)).start()
    started = time.monotonic()
    parallel.wait_for_running(study, poll=0.05)
    assert time.monotonic() - started >= 0.45
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert parallel.lost(study.trials[1]) and parallel.counted(study) == 1


def test_a_worker_started_by_mlflow_run_nests_its_trials_under_the_lead(tracking,
                                                                        monkeypatch):
    """Identical `mlflow run` commands (a job array): the workers' trial runs go under the
    lead's study run, not into the run `mlflow run` made for each worker."""
    from fer_lab import tracking as fer_tracking

    client = mlflow.MlflowClient()
    experiment = client.create_experiment(f"job-array-{uuid.uuid4().hex[:8]}")
    own = client.create_run(experiment).info.run_id  # the worker's `mlflow run` run
    lead = client.create_run(experiment).info.run_id  # the lead's study run
    monkeypatch.setenv("MLFLOW_RUN_ID", own)
    with fer_tracking.trial_run("knn", 3, "s", parent=lead) as run:
        mlflow.log_metric("val_accuracy", 0.5)
    assert run.info.run_id not in (own, lead)
    trial = client.get_run(run.info.run_id)
    assert trial.data.tags["mlflow.parentRunId"] == lead
    assert trial.data.tags["fer.trial"] == "3" and trial.info.status == "FINISHED"
    assert "val_accuracy" not in client.get_run(own).data.metrics


def test_sqlite_refuses_parallel_workers_with_a_clear_message(tmp_path, capsys):
    with pytest.raises(ValueError, match="journal.*optuna.journal"):
        parallel.storage(f"sqlite:///{tmp_path}/o.db", workers=2)
    args = ["tune", "knn", "--data", "synthetic:20", "--workers", "2",
            "--storage", f"sqlite:///{tmp_path}/o.db"]
    assert cli.main(args) == 1
    assert "SQLite takes one writer at a time" in capsys.readouterr().err


@pytest.mark.slow
def test_workers_on_a_journal_split_the_trials_exactly(tracking, tmp_path):
    from fer_lab.config import TuneConfig, load_family

    config = TuneConfig(model=load_family("knn", trials=8, timeout=None), data="synthetic:20",
                        experiment=tmp_path.name, workers=2, study_name="knn-journal",
                        storage=f"journal://{tmp_path}/optuna.journal")
    from fer_lab.tuning import tune

    tune(config, progress=False)
    study = optuna.load_study(study_name="knn-journal", storage=parallel.storage(config.storage))
    assert sorted(t.number for t in study.trials) == list(range(8))
    assert all(t.state.is_finished() for t in study.trials)
    runs = trial_runs(config.experiment)
    assert sorted(int(r.data.tags["fer.trial"]) for r in runs) == list(range(8))
    [parent] = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert mlflow.get_run(parent).data.tags["fer.role"] == "study"


def fer_lab(args: list[str], env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(FER_LAB + args, env={**os.environ, **env},
                            **kwargs)


@pytest.fixture
def postgres():
    """Databases of the test's own on the server of ``FER_LAB_TEST_POSTGRES``: one for
    Optuna, one for MLflow (each keeps its schema version in a table of the same name)."""
    if not POSTGRES:
        pytest.skip("FER_LAB_TEST_POSTGRES is not set (.ci/run starts a PostgreSQL server)")
    import sqlalchemy

    names = [f"fer_test_{uuid.uuid4().hex[:8]}_{use}" for use in ("optuna", "mlflow")]
    admin = sqlalchemy.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in names:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    yield [POSTGRES.rsplit("/", 1)[0] + f"/{name}" for name in names]
    with admin.connect() as connection:
        for name in names:
            connection.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


def test_workers_opening_a_fresh_postgresql_at_once_all_get_the_storage(postgres):
    """A cluster's job array starts workers at the same moment on an empty database: they
    race to create Optuna's schema, and none may crash for it."""
    optuna_db, _ = postgres
    code = ("import sys; from fer_lab import parallel; "
            "parallel.storage(sys.argv[1]); print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code, optuna_db], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]


@pytest.mark.slow
def test_three_workers_on_postgresql_run_exactly_the_trials_asked(postgres, tmp_path):
    """The team set-up: Optuna on PostgreSQL, an MLflow server on PostgreSQL, 3 workers."""
    optuna_db, mlflow_db = postgres
    with mlflow_server(["server", "--backend-store-uri", mlflow_db, "--workers", "1",
                        "--artifacts-destination", str(tmp_path / "artifacts")], "/health",
                       tmp_path / "server.log", cwd=tmp_path) as url:
        env = {"MLFLOW_TRACKING_URI": url, "FER_LAB_CACHE": str(tmp_path / "cache")}
        common = ["tune", "knn", "--data", "synthetic:20", "--storage", optuna_db,
                  "--study-name", "team", "--trials", "12", "--experiment", "team"]
        lead = fer_lab(common + ["--workers", "2"], env, cwd=tmp_path,
                       stderr=subprocess.PIPE, text=True)
        time.sleep(8)  # the lead opens the study run the joiners nest under
        joiner = fer_lab(common + ["--join"], env, cwd=tmp_path, stderr=subprocess.PIPE,
                         text=True)
        _, lead_err = lead.communicate(timeout=600)
        _, join_err = joiner.communicate(timeout=600)
        assert lead.returncode == 0, lead_err[-3000:]
        assert joiner.returncode == 0, join_err[-3000:]
        for err in (lead_err, join_err):
            assert "database is locked" not in err and "deadlock" not in err.lower()
        study = optuna.load_study(study_name="team", storage=optuna_db)
        numbers = [t.number for t in study.trials]
        assert sorted(numbers) == list(range(12))
        assert all(t.state.is_finished() for t in study.trials)
        mlflow.set_tracking_uri(url)
        runs = trial_runs("team")
        assert sorted(int(r.data.tags["fer.trial"]) for r in runs) == list(range(12))
        assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.2)
    return value


@pytest.mark.slow
@pytest.mark.parametrize("stop, kind", [(signal.SIGKILL, "sqlite"), (signal.SIGINT, "sqlite"),
                                        (signal.SIGKILL, "journal")])
def test_a_worker_stopped_mid_trial_is_recovered_on_resume(fresh_tracking, tmp_path, stop,
                                                           kind):
    """SQLite's trials have heartbeats; the journal's have none: there the dead process
    (its pid and start time, recorded on the trial) is what gives it away."""
    experiment = f"crash-{stop.name}-{kind}"
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(SLOW_CNN))
    url = {"sqlite": f"sqlite:///{tmp_path}/optuna.db",
           "journal": f"journal://{tmp_path}/optuna.journal"}[kind]
    args = ["tune", "cnn", "--data", "synthetic:20", "--config", str(tmp_path / "slow.yaml"),
            "--trials", "3", "--heartbeat", "1", "--study-name", "s", "--experiment",
            experiment, "--storage", url]
    env = {"MLFLOW_TRACKING_URI": fresh_tracking, "FER_LAB_CACHE": str(tmp_path / "cache")}
    worker = fer_lab(args, env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                     stderr=open(tmp_path / "first.log", "w"))

    def trial_inside_its_epochs():
        # An epoch's metrics logged: the trial has (~30 epochs of ~0.1 s) more to go.
        return [r for r in trial_runs(experiment) if r.data.tags.get("fer.trial") != "0"
                and r.info.status == "RUNNING" and r.data.metrics]

    try:
        wait_for(trial_inside_its_epochs, 300, "running trial after the first")
    finally:
        worker.send_signal(stop)
        worker.wait(timeout=60)
    storage = parallel.storage(url)
    hit = {t.number for t in optuna.load_study(study_name="s", storage=storage).trials
           if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL)}
    assert hit, "the stop hit no trial"
    before = {r.info.run_id: r for r in trial_runs(experiment)}
    completed_before = {i: r.info.end_time for i, r in before.items()
                        if r.data.tags.get("fer.trial_state") == "COMPLETE"}
    if kind == "sqlite":
        time.sleep(parallel.GRACE_FACTOR * 1 + 1)  # the dead worker's heartbeat goes stale
    resumed = fer_lab(args, env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                      stderr=open(tmp_path / "second.log", "w"))
    assert resumed.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]

    study = optuna.load_study(study_name="s", storage=parallel.storage(url))
    states = {t.number: t.state for t in study.trials}
    # the trials the stop hit failed, and as many others ran: three that finished
    assert len(states) == 3 + len(hit) and all(s.is_finished() for s in states.values())
    assert all(states[n] == optuna.trial.TrialState.FAIL for n in hit)
    assert sum(not parallel.lost(t) for t in study.trials) == 3
    for run in trial_runs(experiment):
        if int(run.data.tags["fer.trial"]) in hit:
            assert run.info.status in ("FAILED", "KILLED")
            assert run.data.tags["fer.trial_state"] == "FAILED"
    after = {r.info.run_id: r for r in trial_runs(experiment)}
    for run_id, end_time in completed_before.items():  # completed trials untouched
        assert after[run_id].info.end_time == end_time
        assert after[run_id].info.status == "FINISHED"
    assert not [r for r in after.values() if r.info.status == "RUNNING"]
    studies = [r for r in mlflow.search_runs(experiment_names=[experiment], output_format="list")
               if r.data.tags.get("fer.role") == "study"]
    assert sorted(r.info.status for r in studies) in (["FINISHED", "KILLED"],
                                                      ["FAILED", "FINISHED"])


@pytest.mark.slow
def test_a_study_killed_in_its_refit_resumes_the_refit_on_rerun(fresh_tracking, tmp_path):
    """A long refit (hours on a CPU for the full budget) outlives sessions and laptops'
    lids: running the same command again continues it from its last epoch."""
    config = {**SLOW_CNN, "params": {**SLOW_CNN["params"], "epochs": 2},  # a short trial
              "study": {**SLOW_CNN["study"], "refit_params": {
                  "epochs": 40, "max_minutes": None, "tta": "none"}}}
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(config))
    args = ["tune", "cnn", "--data", "synthetic:20", "--config", str(tmp_path / "slow.yaml"),
            "--trials", "1", "--study-name", "s", "--experiment", "refit",
            "--storage", f"sqlite:///{tmp_path}/optuna.db"]
    env = {"MLFLOW_TRACKING_URI": fresh_tracking, "FER_LAB_CACHE": str(tmp_path / "cache")}
    first = fer_lab(args, env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                    stderr=open(tmp_path / "first.log", "w"))
    checkpoints = tmp_path / "cache" / "checkpoints"
    try:
        [checkpoint] = wait_for(lambda: list(checkpoints.glob("*/fit.ckpt")), 300,
                                "refit checkpoint")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    resumed = fer_lab(args, env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                      stderr=open(tmp_path / "second.log", "w"))
    assert resumed.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert "resuming the fit from" in log
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 1  # the search was done: not run again
    runs = mlflow.search_runs(experiment_names=["refit"], output_format="list")
    [done] = [r for r in runs if r.data.tags.get("fer.role") == "study"
              and r.info.status == "FINISHED"]
    assert done.data.metrics["resumed_epochs"] >= 1
    history = mlflow.MlflowClient().get_metric_history(done.info.run_id, "refit_val_accuracy")
    assert len(history) == 40  # every epoch's record, the killed process's too
    assert "fer-cnn" in {m.name for m in mlflow.MlflowClient().search_registered_models()}
    assert not checkpoint.parent.exists()  # the study's checkpoints go with it


@pytest.mark.slow
def test_same_seed_same_data_same_command_same_trials(tracking, tmp_path):
    from fer_lab.config import TuneConfig, load_family
    from fer_lab.tuning import tune

    results = []
    for run in ("a", "b"):
        config = TuneConfig(model=load_family("knn", trials=3, timeout=None),
                            data="synthetic:20", experiment=f"{tmp_path.name}-{run}",
                            storage=f"sqlite:///{tmp_path}/{run}.db", seed=3)
        metrics = tune(config, progress=False)
        study = optuna.load_study(study_name=optuna.get_all_study_summaries(
            config.storage)[0].study_name, storage=config.storage)
        results.append(([t.params for t in study.trials], [t.value for t in study.trials],
                        metrics["test_all_accuracy"]))
    assert results[0] == results[1]
    assert Path(tmp_path / "a.db").exists()


@pytest.mark.slow
def test_ddp_study_on_two_cpu_processes_logs_from_rank_zero_only(fresh_tracking, tmp_path):
    tiny = {"params": {"width": 8, "epochs": 2, "min_steps": 0, "batch_size": 16, "tta": "none",
                       "mixed_precision": "fp32", "channels_last": False, "arch": "seed_cnn",
                       "max_minutes": None},
            "search_space": {"arch": None},
            "study": {"trials": 1, "rungs": [1.0], "refit_params": {"epochs": 1}}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    args = ["tune", "cnn", "--data", "synthetic:20", "--config", str(tmp_path / "tiny.yaml"),
            "--devices", "2", "--strategy", "ddp", "--experiment", "ddp", "--no-register",
            "--storage", f"sqlite:///{tmp_path}/optuna.db"]
    assert cli.main(args) == 0
    runs = mlflow.search_runs(experiment_names=["ddp"], output_format="list")
    roles = sorted(r.data.tags.get("fer.role") for r in runs)
    assert roles == ["study", "trial"]  # no run of a rank's own
    [trial] = [r for r in runs if r.data.tags["fer.role"] == "trial"]
    history = mlflow.MlflowClient().get_metric_history(trial.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [0, 1, 2]  # two epochs, then the restored best
    assert trial.data.params["devices"] == "2" and trial.data.params["strategy"] == "ddp"
    # the best epoch, restored in this process
    assert history[-1].value == pytest.approx(max(m.value for m in history[:2]), abs=0.02)


def test_devices_are_refused_for_families_without_lightning(tmp_path, capsys):
    assert cli.main(["tune", "svm", "--devices", "2", "--storage",
                     f"sqlite:///{tmp_path}/o.db"]) == 1
    assert "applies to families trained with Lightning" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_ranks_keep_the_time_budget_and_stop_together():
    from fer_lab.data import load, split
    from fer_lab.models import create

    splits = split(load("synthetic:10"), val_fraction=0.2, seed=0)
    model = create("cnn", arch="seed_cnn", width=8, epochs=500, batch_size=8, tta="none",
                   mixed_precision="fp32", channels_last=False, max_minutes=0.03, devices=2,
                   strategy="ddp")
    model.fit(splits.train.X, splits.train.y, eval_set=(splits.val.X, splits.val.y))
    # stopped on time (not after 500 epochs), the schedule annealed to its end
    assert 1 <= len(model.history_) < 500
    assert model.history_[-1]["lr"] == pytest.approx(0.0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_identical_commands_started_at_once_get_exactly_one_lead(kind, fresh_tracking,
                                                                  tmp_path, request):
    """As a cluster's job array starts them: no crash, exactly the trials asked, and one
    process refits and registers while the others join without being told to."""
    if kind == "postgresql":
        url = request.getfixturevalue("postgres")[0]
    else:
        url = f"journal://{tmp_path}/optuna.journal"
    args = ["tune", "tree", "--data", "synthetic:20", "--trials", "6", "--study-name", "par",
            "--experiment", "par", "--storage", url]
    env = {"MLFLOW_TRACKING_URI": fresh_tracking, "FER_LAB_CACHE": str(tmp_path / "cache")}
    procs = [fer_lab(args, env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    leads = [out for out, _ in outputs if "test_all_accuracy" in out]
    assert len(leads) == 1  # the others say they joined
    assert sum("joined the study's live lead" in out for out, _ in outputs) == 2
    study = optuna.load_study(study_name="par", storage=parallel.storage(url))
    assert sorted(t.number for t in study.trials) == list(range(6))
    runs = mlflow.search_runs(experiment_names=["par"], output_format="list")
    assert [r.data.tags["fer.role"] for r in runs].count("study") == 1
    versions = mlflow.MlflowClient().search_model_versions("name = 'fer-tree'")
    assert len(versions) == 1
