"""Several workers on one study: storage, exact trial counts, crash recovery.

Optuna does the coordination: its RDB storage (PostgreSQL for teams; SQLite for one
process) or its journal file (several processes on one machine) holds the study, and its
heartbeats mark a dead worker's trial failed. fer-lab adds only the claim that makes the
number of trials exact: under a lock held for milliseconds (PostgreSQL's advisory lock, or
a file lock beside the journal), a worker checks the count and enqueues one trial, which it
then runs through ``study.optimize(n_trials=1)``. Every worker enqueues one trial before
it pops one, so a pop always finds one waiting, and no trial is created past the count.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import optuna
from mlflow import MlflowClient
from mlflow.entities import RunStatus

JOURNAL = "journal://"
# A worker's trial is failed when its heartbeat is older than GRACE_FACTOR intervals.
GRACE_FACTOR = 3


def storage(url: str, workers: int = 1, heartbeat: float = 30.0) -> optuna.storages.BaseStorage:
    """The Optuna storage for ``url``: ``sqlite:///...``, ``postgresql://...`` (or any
    database SQLAlchemy knows), or ``journal:///path/optuna.journal``.

    Args:
        url: the storage URL.
        workers: worker processes this machine will start; SQLite takes one.
        heartbeat: seconds between a running trial's heartbeats (database storages); a
            trial silent for three of them is failed when a worker next starts a trial.

    Raises:
        ValueError: parallel workers asked of SQLite.
    """
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL)))
    if url.startswith("sqlite") and workers > 1:
        raise ValueError(
            f"{url}: SQLite takes one writer at a time, so {workers} workers would fail with "
            "'database is locked'. Use PostgreSQL (--storage postgresql://user:pass@host/db) "
            "or, on one machine, a journal file (--storage journal:///path/optuna.journal)")
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=max(int(heartbeat), 1),
            grace_period=max(int(heartbeat * GRACE_FACTOR), 2),
            engine_kwargs={"pool_pre_ping": True})


@contextlib.contextmanager
def claim_lock(url: str, study_name: str) -> Iterator[None]:
    """Mutual exclusion among every worker of one study, wherever it runs."""
    key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
    if url.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        engine.dispose()
        return
    if url.startswith(JOURNAL):  # several processes, one machine
        path = Path(url.removeprefix(JOURNAL) + f".{key & 0xFFFFFFFF:x}.lock")
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    yield  # SQLite (one process), other databases: no concurrent workers


def work(study: optuna.Study, objective: Callable[[optuna.Trial], float], url: str,
         trials: int, deadline: float | None, first_params: dict | None = None,
         on_trial: Callable[[], None] = lambda: None) -> None:
    """Runs trials of ``study`` until it holds ``trials`` trials or ``deadline``
    (``time.monotonic()``) passes; any number of workers may do this at once.

    Args:
        first_params: parameters of the study's first trial (e.g. the config's defaults,
            a known-good baseline); later trials are sampled.
    """
    while deadline is None or time.monotonic() < deadline:
        with claim_lock(url, study.study_name):
            existing = len(study.get_trials(deepcopy=False))
            if existing >= trials:
                return
            # One trial of this worker's; its parameters are sampled when it starts.
            study.enqueue_trial((first_params or {}) if existing == 0 else {})
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        on_trial()


def run_orphans(study: optuna.Study, objective: Callable[[optuna.Trial], float]) -> None:
    """Runs trials left waiting by a worker that died between claiming and starting one
    (the lead does this before other workers start)."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if waiting:
        study.optimize(objective, n_trials=len(waiting), catch=(Exception,),
                       gc_after_trial=True)


def close_lost_runs(study: optuna.Study, experiment_id: str, current_run: str) -> list[str]:
    """Fails the trials of dead workers (stale heartbeats) and ends their MLflow runs as
    KILLED, and so the study runs of dead leads when no trial is left running; returns the
    runs' ids. Completed trials and their runs are not touched."""
    with warnings.catch_warnings(), contextlib.suppress(Exception):  # no heartbeats: nothing
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    client = MlflowClient()
    runs = client.search_runs(
        [experiment_id], filter_string=(f"tags.`fer.study` = '{study.study_name}' and "
                                        "attributes.status = 'RUNNING'"))
    alive = optuna.trial.TrialState.RUNNING in states.values()
    closed = []
    for run in runs:
        tags = run.data.tags
        if tags.get("fer.role") == "trial":
            if states.get(int(tags.get("fer.trial", -1))) not in (optuna.trial.TrialState.FAIL,
                                                                  None):
                continue
            client.set_tag(run.info.run_id, "fer.trial_state", "FAILED")
            client.set_tag(run.info.run_id, "fer.error", "worker lost (no heartbeat)")
        elif tags.get("fer.role") != "study" or alive or run.info.run_id == current_run:
            continue
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        closed.append(run.info.run_id)
    return closed


def spawn_workers(n: int, target: Callable[..., None], *args) -> list:
    """Starts ``n`` worker processes running ``target(*args, worker=k)`` for k = 1..n
    (spawned: no state shared with this process but the arguments)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=target, args=args, kwargs={"worker": k})
             for k in range(1, n + 1)]
    for proc in procs:
        proc.start()
    return procs


def parent_run(study: optuna.Study) -> str | None:
    """The lead's study run that workers nest their trial runs under."""
    return study.user_attrs.get("fer.study_run")


def set_parent_run(study: optuna.Study, run: mlflow.ActiveRun) -> None:
    study.set_user_attr("fer.study_run", run.info.run_id)
