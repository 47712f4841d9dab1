"""Several workers on one study: storage, exact trial counts, crash recovery.

Optuna does the coordination: its RDB storage (PostgreSQL for teams; SQLite for one
process) or its journal file (several processes on one machine) holds the study, and its
heartbeats mark a dead worker's trial failed. fer-lab adds only the claim that makes the
number of trials exact: under a lock held for milliseconds (PostgreSQL's advisory lock, or
a file lock beside the journal), a worker checks the count and enqueues one trial, which it
then runs through ``study.optimize(n_trials=1)``. Every worker enqueues one trial before
it pops one, so a pop always finds one waiting, and no trial is created past the count.
A trial whose worker was lost (killed, crashed, its machine off) does not count: it is run
again, with the same parameters when it was one of the study's first trials; a trial that
raised counts, so a configuration that always fails cannot loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow import MlflowClient
from mlflow.entities import RunStatus

log = logging.getLogger(__name__)

JOURNAL = "journal://"
# The trial user attribute naming the process that runs it (see worker_identity).
WORKER_ATTR = "fer.worker"
# The trial user attribute holding the error a trial raised (a failed trial without it
# was lost with its worker).
ERROR_ATTR = "fer.error"
# The study user attribute naming its lead process and the study run it holds.
LEAD_ATTR = "fer.lead"
# A worker's trial is failed when its heartbeat is older than GRACE_FACTOR intervals.
GRACE_FACTOR = 3
SCHEMA_ATTEMPTS = 5


STORAGE_FORMS = ("sqlite:///optuna.db, journal:///path/optuna.journal or "
                 "postgresql://user:password@host/db")
SHARED_STORAGES = ("Use PostgreSQL (--storage postgresql://user:pass@host/db) or, on one "
                   "machine, a journal file (--storage journal:///path/optuna.journal)")


class StorageError(ValueError):
    """A storage URL that cannot be used; the message says what to give instead."""


def storage(url: str, workers: int = 1, heartbeat: float = 30.0,
            joining: bool = False) -> optuna.storages.BaseStorage:
    """The Optuna storage for ``url``: ``sqlite:///...``, ``postgresql://...`` (or any
    database SQLAlchemy knows), or ``journal:///path/optuna.journal``.

    Args:
        url: the storage URL.
        workers: worker processes this machine will start; SQLite takes one.
        heartbeat: seconds between a running trial's heartbeats (database storages); a
            trial silent for three of them is failed when a worker next starts a trial.
        joining: this process joins a study that another process leads.

    Raises:
        StorageError: not a storage URL, a database SQLAlchemy has no driver for, a
            server that does not answer, or several writers asked of SQLite.
    """
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix(JOURNAL))
        if not path.parent.is_dir():
            raise StorageError(f"--storage {url}: no folder {path.parent} for the journal")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    _check_database_url(url)
    if url.startswith("sqlite") and (workers > 1 or joining):
        who = f"{workers} workers" if workers > 1 else "a worker joining another's study"
        raise StorageError(f"{url}: SQLite takes one writer at a time, so {who} would fail "
                           f"with 'database is locked'. {SHARED_STORAGES}")
    from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

    attempt = 1
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=max(int(heartbeat), 1),
                    grace_period=max(int(heartbeat * GRACE_FACTOR), 2),
                    engine_kwargs={"pool_pre_ping": True})
        except (IntegrityError, ProgrammingError):
            if attempt == SCHEMA_ATTEMPTS:
                raise
            # Workers started at once on a fresh database race to create Optuna's schema
            # (e.g. CREATE TYPE studydirection): the losers find it made on a retry.
            time.sleep(0.2 * attempt)
            attempt += 1
        except SQLAlchemyError as err:  # the server does not answer, refuses the login, ...
            raise StorageError(f"cannot open the Optuna storage at {_where(url)}: "
                               f"{str(err.__cause__ or err).splitlines()[0]}") from None


def _check_database_url(url: str) -> None:
    """Fails with what to give instead when ``url`` is no database URL SQLAlchemy can open."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if "://" not in url:
        raise StorageError(f"--storage {url!r} is not a storage URL; give one of "
                           f"{STORAGE_FORMS}")
    try:
        sqlalchemy.engine.make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError):
        raise StorageError(f"--storage {url!r}: no database driver for "
                           f"{url.partition(':')[0]!r}; give one of {STORAGE_FORMS}") from None


def _where(url: str) -> str:
    """The host and port (or file) of a database URL, without its password."""
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.host:
        port = parsed.port or {"postgresql": 5432, "mysql": 3306}.get(parsed.get_backend_name())
        return f"{parsed.host}:{port} (database {parsed.database})"
    return str(parsed.database)


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


def lost(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` failed without raising: its worker was lost mid-trial (killed,
    crashed, interrupted), and the trial says nothing of its parameters."""
    return trial.state == optuna.trial.TrialState.FAIL and ERROR_ATTR not in trial.user_attrs


def counted(study: optuna.Study) -> int:
    """The trials that count towards a study's number: all but the lost ones."""
    return sum(not lost(t) for t in study.get_trials(deepcopy=False))


def work(study: optuna.Study, objective: Callable[[optuna.Trial], float], url: str,
         trials: int, deadline: float | None, first_trials: Sequence[dict] = (),
         on_trial: Callable[[], None] = lambda: None) -> None:
    """Runs trials of ``study`` until it holds ``trials`` trials that were not lost (see
    ``lost``) or ``deadline`` (``time.monotonic()``) passes; any number of workers may do
    this at once. ``objective`` marks the trials that raise with ``ERROR_ATTR``.

    Args:
        first_trials: parameters of the study's first trials, in order (e.g. the
            config's defaults, a known-good baseline); later trials are sampled. Whichever
            worker claims the ``i``-th trial not lost runs ``first_trials[i]``: a first
            trial lost with its worker (the ensemble's, hours of training) is run again.
    """
    while deadline is None or time.monotonic() < deadline:
        with claim_lock(url, study.study_name):
            existing = counted(study)
            if existing >= trials:
                return
            # One trial of this worker's; its parameters are sampled when it starts.
            study.enqueue_trial(first_trials[existing] if existing < len(first_trials) else {})
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
    fail_lost_trials(study)
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
            client.set_tag(run.info.run_id, "fer.error", "worker lost (process gone, or no "
                                                         "heartbeat)")
        elif tags.get("fer.role") != "study" or alive or run.info.run_id == current_run:
            continue
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        closed.append(run.info.run_id)
    return closed


def worker_identity() -> dict[str, str | int | None]:
    """The process running a trial, recorded on it: host, pid and the process's start
    time (a pid is reused, a pid with its start time is not)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid())}


def _started(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), None if it is gone or
    the OS does not say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # field 22: starttime
    except (OSError, IndexError):
        return None


def _gone(identity: dict) -> bool:
    """Whether the process of ``identity`` ran on this host and has ended; a process on
    another host is taken to be alive (database storages' heartbeats cover those)."""
    if identity.get("host") != socket.gethostname():
        return False
    pid = int(identity["pid"])
    if identity.get("started") is not None and Path("/proc").is_dir():
        return _started(pid) != identity["started"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def wait_for_running(study: optuna.Study, poll: float = 5.0) -> None:
    """Returns once no trial of ``study`` is running: trials that workers elsewhere
    (``--join``, another host) still run finish before the lead picks the best; a lost
    worker's trial is failed (stale heartbeat, or its process gone on this host)."""
    told = False
    while True:
        fail_lost_trials(study)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return
        if not told:
            log.warning("study %s: waiting for %d trial(s) other workers are running",
                        study.study_name, len(running))
            told = True
        time.sleep(poll)


def fail_lost_trials(study: optuna.Study) -> None:
    """Fails the running trials of lost workers: stale heartbeats (database storages) and
    processes gone on this host (the journal's, which has no heartbeats)."""
    with warnings.catch_warnings(), contextlib.suppress(Exception):  # no heartbeats: nothing
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    fail_dead_local_trials(study)


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Fails the RUNNING trials whose process, on this host, is gone (killed, crashed):
    the journal storage has no heartbeats, so nothing else would. Returns their numbers."""
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        identity = trial.user_attrs.get(WORKER_ATTR)
        if identity and _gone(identity):
            study._storage.set_trial_state_values(trial._trial_id,
                                                  state=optuna.trial.TrialState.FAIL)
            dead.append(trial.number)
    return dead


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


def claim_lead(study: optuna.Study, url: str, heartbeat: float) -> bool:
    """Makes this process the study's lead unless a live one holds the lead; returns
    whether it did. Identical commands started at once (a cluster's job array) thus get
    exactly one lead, and the others work as ``--join`` does.

    A lead on this host is alive while its process is; one elsewhere while its beat
    (refreshed every ``heartbeat`` seconds) is younger than ``GRACE_FACTOR`` beats."""
    with claim_lock(url, study.study_name):
        lead = study.user_attrs.get(LEAD_ATTR)
        if lead and _lead_alive(lead, heartbeat):
            return False
        study.set_user_attr(LEAD_ATTR, {**worker_identity(), "beat": time.time(), "run": None})
        return True


def _lead_alive(lead: dict, heartbeat: float) -> bool:
    if lead.get("host") == socket.gethostname():
        return not _gone(lead)
    return time.time() - float(lead.get("beat", 0)) < GRACE_FACTOR * heartbeat


@contextlib.contextmanager
def leading(study: optuna.Study, url: str, run: mlflow.ActiveRun,
            heartbeat: float) -> Iterator[None]:
    """Holds the lead while the block runs: publishes the study run that workers nest
    their trial runs under and keeps the lead's beat fresh; gives the lead up at the end."""
    record = {**worker_identity(), "run": run.info.run_id}
    study.set_user_attr(LEAD_ATTR, {**record, "beat": time.time()})
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat):
            study.set_user_attr(LEAD_ATTR, {**record, "beat": time.time()})

    # SQLite takes one process, so nobody needs the beat (nor a second writing thread).
    beating = threading.Thread(target=beat, daemon=True) if not url.startswith("sqlite") else None
    if beating:
        beating.start()
    try:
        yield
    finally:
        stop.set()
        if beating:
            beating.join()
        study.set_user_attr(LEAD_ATTR, None)


def lead_run(study: optuna.Study, wait: float = 120.0) -> str | None:
    """The live lead's study run, waiting up to ``wait`` seconds for a lead that is
    starting to open it; None when no lead shows up."""
    lead = awaited_attr(study, LEAD_ATTR, wait, lambda lead: bool(lead and lead.get("run")))
    return None if lead is None else lead["run"]


def awaited_attr(study: optuna.Study, key: str, wait: float,
                 ready: Callable[[Any], bool] = lambda value: value is not None) -> Any:
    """The study's user attr ``key`` once ``ready`` takes it (another process is about to
    set it), polling for up to ``wait`` seconds; None when it never is."""
    deadline = time.monotonic() + wait
    while True:
        value = study.user_attrs.get(key)
        if ready(value):
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)
