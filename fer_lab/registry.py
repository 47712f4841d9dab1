"""The MLflow model registry: the hand-off from training to use.

Every study registers its refit model as a new version of ``fer-<family>``. The alias
``champion`` moves to it only when its validation score beats the current champion's on
the same data (digest) and protocol; ``promote`` then points ``fer-emotion@champion`` at
the best family champion. Test scores are tags for people to read, never a criterion.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from fer_lab import __version__, tracking
from fer_lab.models import families

CHAMPION = "champion"
BEST_MODEL = "fer-emotion"
# The tags that make two versions' validation scores comparable.
PROTOCOL_TAGS = ("fer.data_digest", "fer.protocol", "fer.objective")
METRIC_TAGS = ("val_accuracy", "val_macro_f1", "test_private_accuracy", "test_public_accuracy",
               "test_all_accuracy", "test_private_macro_f1", "test_public_macro_f1",
               "test_all_macro_f1")


def model_name(family: str) -> str:
    """The registered model of a family: ``fer-<family>``."""
    return f"fer-{family}"


def code_version() -> str:
    """The git commit of the working tree when there is one, else the package version."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        if out.returncode == 0 and out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"fer-lab=={__version__}"  # "0+unknown" from a source copy never installed


@dataclass(frozen=True)
class Decision:
    """What registering or promoting did.

    Attributes:
        name: the registered model.
        version: the version concerned.
        champion: whether ``@champion`` points at it now.
        changed: whether anything in the registry changed.
        reason: why, in words, as the run's and the version's ``fer.champion_decision``.
    """

    name: str
    version: str
    champion: bool
    changed: bool
    reason: str


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version ``@champion`` points at, or None (no such model, or no alias yet).

    Raises:
        MlflowException: any other failure (e.g. the tracking server is down): reading it
            as "no champion yet" would crown whatever comes next.
    """
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if _not_found(err):
            return None
        raise


def _not_found(err: MlflowException) -> bool:
    """The registry's answer for a model or an alias that does not exist (MLflow reports a
    missing alias as an invalid parameter "... not found")."""
    return err.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        err.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(err.message))


def _ensure_model(client: MlflowClient, name: str, description: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if not _not_found(err):
            raise
        client.create_registered_model(name, description=description)


def _score(version: ModelVersion) -> float:
    return float(version.tags[f"val_{version.tags['fer.objective']}"])


def _protocol(version: ModelVersion) -> tuple[str | None, ...]:
    return tuple(version.tags.get(t) for t in PROTOCOL_TAGS)


def _describe_protocol(version: ModelVersion) -> str:
    return ", ".join(f"{t.removeprefix('fer.')} {version.tags.get(t)}" for t in PROTOCOL_TAGS)


def register(model_uri: str, family: str, metrics: dict[str, float],
             tags: dict[str, str]) -> Decision:
    """Registers a study's model as a version of ``fer-<family>`` and gates ``@champion``.

    Args:
        model_uri: the logged model.
        family: its family.
        metrics: the study's scores; ``METRIC_TAGS`` become version tags.
        tags: ``fer.data_digest``, ``fer.protocol``, ``fer.objective``, ``fer.study`` and
            ``fer.run_id`` at least.
    """
    client = MlflowClient()
    name = model_name(family)
    _ensure_model(client, name, f"fer-lab's `{family}` models, one version per study; "
                  f"`@{CHAMPION}` is the best on validation for its data and protocol.")
    version_tags = {**tags, "fer.family": family, "fer.code_version": code_version(),
                    **{k: f"{metrics[k]:.6f}" for k in METRIC_TAGS if k in metrics}}
    new = mlflow.register_model(model_uri, name, tags=version_tags)
    current = champion_version(client, name)
    key = f"val_{tags['fer.objective']}"
    if current is None:
        move, reason = True, f"v{new.version} is the first champion of {name}"
    elif _protocol(current) != _protocol(new):
        move = False
        reason = (f"v{new.version} not compared: champion v{current.version} was chosen on "
                  f"{_describe_protocol(current)}, this version on {_describe_protocol(new)}; "
                  "use one tracking store per data set, or move the alias by hand "
                  f"(MlflowClient().set_registered_model_alias('{name}', '{CHAMPION}', "
                  f"'{new.version}'))")
    else:
        ours, theirs = _score(new), _score(current)
        move = ours > theirs
        verb = "beats" if move else "does not beat"
        reason = (f"v{new.version} {key} {ours:.4f} {verb} champion v{current.version}'s "
                  f"{theirs:.4f}")
    if move:
        client.set_registered_model_alias(name, CHAMPION, new.version)
    client.set_model_version_tag(name, new.version, "fer.champion_decision", reason)
    return Decision(name, new.version, move, True, reason)


def promote() -> Decision:
    """Points ``fer-emotion@champion`` at the best family champion; idempotent.

    Family champions are compared on the data and protocol of the newest one (others are
    left out, and the description says so), by their validation score.

    Raises:
        LookupError: no family has a champion yet.
    """
    client = MlflowClient()
    champions = [v for v in (champion_version(client, model_name(f)) for f in families()) if v]
    if not champions:
        raise LookupError("no family has a champion yet: run `fer-lab tune FAMILY` first")
    newest = max(champions, key=lambda v: v.creation_timestamp)
    comparable = [v for v in champions if _protocol(v) == _protocol(newest)]
    best = max(comparable, key=_score)
    source = f"models:/{best.name}/{best.version}"
    key = f"val_{best.tags['fer.objective']}"
    skipped = sorted(f"{v.name} v{v.version}" for v in champions if v not in comparable)
    reason = (f"{source} has the best {key} ({_score(best):.4f}) of the family champions "
              + ", ".join(f"{v.name} v{v.version} {_score(v):.4f}" for v in comparable)
              + f" on {_describe_protocol(best)}")
    if skipped:
        reason += f"; not comparable, left out: {', '.join(skipped)}"
    current = champion_version(client, BEST_MODEL)
    if current is not None and current.tags.get("fer.source") == source:
        return Decision(BEST_MODEL, current.version, True, False,
                        f"unchanged: @{CHAMPION} is already {source}")
    _ensure_model(client, BEST_MODEL, "")
    new = client.copy_model_version(source, BEST_MODEL)
    for k, v in {**best.tags, "fer.source": source, "fer.champion_decision": reason}.items():
        client.set_model_version_tag(BEST_MODEL, new.version, k, v)
    client.set_registered_model_alias(BEST_MODEL, CHAMPION, new.version)
    client.update_registered_model(BEST_MODEL, description=(
        "The best facial-emotion classifier fer-lab has trained (FER2013's 7 emotions: "
        "angry, disgust, fear, happy, sad, surprise, neutral). Chosen by `fer-lab promote`: "
        f"{reason}. Test scores are in the version's tags; they played no part in the choice. "
        f"Load it with mlflow.pyfunc.load_model('models:/{BEST_MODEL}@{CHAMPION}')."))
    return Decision(BEST_MODEL, new.version, True, True, reason)


def load_champion(name: str = BEST_MODEL):
    """The champion of a registered model as a pyfunc."""
    return load_model(f"models:/{name}@{CHAMPION}")


TRAIN_ONE = ("train and register one first (`mlflow run . --env-manager local`, or "
             "`fer-lab tune cnn --data fer2013.csv.gz`), or point MLFLOW_TRACKING_URI at "
             "the store that holds it")


def load_model(uri: str):
    """A logged or registered model as a pyfunc, loaded from the configured tracking store.

    Raises:
        LookupError: the model is not there; the message names the store searched and
            how to get a model (and an SQLite store that does not exist is not created).
    """
    store = tracking.configure()
    registered = uri.startswith("models:/")
    if registered and not tracking.store_exists(store):
        raise LookupError(f"{uri}: no tracking store at {store} (nothing trained here yet); "
                          f"{TRAIN_ONE}")
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as err:
        if not registered:
            raise
        reason = str(err.message).splitlines()[0]
        raise LookupError(f"{uri}: not found in {store} ({reason}); {TRAIN_ONE}") from None
