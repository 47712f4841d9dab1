"""The MLflow model registry: the hand-off from training to use.

Every study registers its refit model as a new version of ``fer-<family>``. The alias
``champion`` moves to it only when its validation score beats the current champion's on
the same data (digest), label set and protocol; ``promote`` then points
``fer-emotion@champion`` at the best family champion. Test scores are tags for people to
read, never a criterion.

A label set other than FER2013's own has registered models of its own, named after it
(``fer-cnn-ferplus``, ``fer-emotion-ferplus``): models that score other classes never
compete, and each label set keeps its champions.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from fer_lab import __version__, labels, tracking
from fer_lab.models import families

CHAMPION = "champion"
BEST_MODEL = "fer-emotion"
# The tags that make two versions' validation scores comparable.
PROTOCOL_TAGS = ("fer.data_digest", tracking.LABELS_TAG, "fer.protocol", "fer.objective")
METRIC_TAGS = ("val_accuracy", "val_macro_f1", "test_private_accuracy", "test_public_accuracy",
               "test_all_accuracy", "test_private_macro_f1", "test_public_macro_f1",
               "test_all_macro_f1")


def model_name(family: str, label_set: str = labels.DEFAULT) -> str:
    """The registered model of a family: ``fer-<family>``, and ``fer-<family>-<label set>``
    for a label set other than FER2013's (``fer-cnn-ferplus``)."""
    return f"fer-{family}{_suffix(label_set)}"


def best_model_name(label_set: str = labels.DEFAULT) -> str:
    """The registered model ``promote`` keeps the best of a label set's champions in:
    ``fer-emotion``, or e.g. ``fer-emotion-ferplus``."""
    return f"{BEST_MODEL}{_suffix(label_set)}"


def _suffix(label_set: str) -> str:
    if label_set not in labels.LABEL_SETS:  # fails here, not as a model never found
        raise ValueError(f"unknown label set {label_set!r}; known: "
                         f"{', '.join(labels.LABEL_SETS)}")
    return "" if label_set == labels.DEFAULT else f"-{label_set}"


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


def model_version(uri: str, client: MlflowClient | None = None) -> ModelVersion | None:
    """The registered version a ``models:/name/3``, ``models:/name/latest`` or
    ``models:/name@alias`` URI names; None for any other URI (``runs:/...``, a logged
    model's ``models:/m-<id>``).

    Raises:
        MlflowException: no such model, version or alias (or a stage: fer-lab uses aliases).
    """
    if not uri.startswith("models:/"):
        return None
    client = client or MlflowClient()
    name, _, number = uri.removeprefix("models:/").partition("/")
    name, _, alias = name.partition("@")
    if alias:
        return client.get_model_version_by_alias(name, alias)
    if not number:  # a logged model, not a registered version
        return None
    if number == "latest":
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise MlflowException(f"registered model {name!r} has no versions",
                                  error_code=RESOURCE_DOES_NOT_EXIST)
        return max(versions, key=lambda v: int(v.version))
    return client.get_model_version(name, number)


def model_run_id(uri: str, client: MlflowClient | None = None) -> str | None:
    """The run that logged the model ``uri`` names: a ``runs:/`` URI, a registered version,
    or a logged model (``models:/m-<id>``); None when it does not say.

    Raises:
        MlflowException: no such model, version, alias or logged model.
    """
    if uri.startswith("runs:/"):
        return uri.removeprefix("runs:/").split("/")[0]
    if not uri.startswith("models:/"):
        return None
    client = client or MlflowClient()
    version = model_version(uri, client)
    if version is not None:
        return version.run_id
    return client.get_logged_model(uri.removeprefix("models:/")).source_run_id


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


def label_set_of(version: ModelVersion) -> str:
    """A version's label set; FER2013's for versions registered before label sets."""
    return version.tags.get(tracking.LABELS_TAG) or labels.DEFAULT


def _protocol(version: ModelVersion) -> tuple[str | None, ...]:
    return tuple(label_set_of(version) if t == tracking.LABELS_TAG else version.tags.get(t)
                 for t in PROTOCOL_TAGS)


def _describe_protocol(version: ModelVersion) -> str:
    return ", ".join(f"{t.removeprefix('fer.')} {value}"
                     for t, value in zip(PROTOCOL_TAGS, _protocol(version)))


def _describe_labels(version: ModelVersion) -> str:
    name = label_set_of(version)
    if name not in labels.LABEL_SETS:  # recorded by a later fer-lab
        return name
    classes = labels.classes_of(name)
    return f"{name} ({len(classes)} classes: {', '.join(classes)})"


def gate(current: ModelVersion | None, new: ModelVersion) -> tuple[bool, str]:
    """Whether ``@champion`` moves from ``current`` to ``new``, and why in words.

    Only versions of the same data, label set and protocol are compared, on their
    validation score; a version of another label set scores other classes, and is never
    compared, whatever its score.
    """
    name = new.name
    if current is None:
        return True, f"v{new.version} is the first champion of {name}"
    if label_set_of(current) != label_set_of(new):
        return False, (f"v{new.version} not compared: champion v{current.version} is labelled "
                       f"{_describe_labels(current)}, this version {_describe_labels(new)}; "
                       f"models of {label_set_of(new)} have their own champion in "
                       f"{model_name(new.tags.get('fer.family', '<family>'), label_set_of(new))}")
    if _protocol(current) != _protocol(new):
        return False, (f"v{new.version} not compared: champion v{current.version} was chosen on "
                       f"{_describe_protocol(current)}, this version on {_describe_protocol(new)}; "
                       "use one tracking store per data set, or move the alias by hand "
                       f"(MlflowClient().set_registered_model_alias('{name}', '{CHAMPION}', "
                       f"'{new.version}'))")
    key = f"val_{new.tags['fer.objective']}"
    ours, theirs = _score(new), _score(current)
    verb = "beats" if ours > theirs else "does not beat"
    return ours > theirs, (f"v{new.version} {key} {ours:.4f} {verb} champion "
                           f"v{current.version}'s {theirs:.4f}")


def register(model_uri: str, family: str, metrics: dict[str, float],
             tags: dict[str, str]) -> Decision:
    """Registers a study's model as a version of ``fer-<family>`` and gates ``@champion``.

    Args:
        model_uri: the logged model.
        family: its family.
        metrics: the study's scores; ``METRIC_TAGS`` become version tags.
        tags: ``fer.data_digest``, ``fer.protocol``, ``fer.objective``, ``fer.study`` and
            ``fer.run_id`` at least, and ``fer.labels`` for a label set other than
            FER2013's, whose versions go to ``model_name(family, label set)``.
    """
    client = MlflowClient()
    label_set = tags.get(tracking.LABELS_TAG) or labels.DEFAULT
    name = model_name(family, label_set)
    classes = labels.classes_of(label_set)
    _ensure_model(client, name, f"fer-lab's `{family}` models of the {label_set} label set "
                  f"({len(classes)} classes: {', '.join(classes)}), one version per study; "
                  f"`@{CHAMPION}` is the best on validation for its data and protocol.")
    version_tags = {**tags, tracking.LABELS_TAG: label_set, "fer.classes": ",".join(classes),
                    "fer.family": family, "fer.code_version": code_version(),
                    **{k: f"{metrics[k]:.6f}" for k in METRIC_TAGS if k in metrics}}
    new = mlflow.register_model(model_uri, name, tags=version_tags)
    move, reason = gate(champion_version(client, name), new)
    if move:
        client.set_registered_model_alias(name, CHAMPION, new.version)
    client.set_model_version_tag(name, new.version, "fer.champion_decision", reason)
    return Decision(name, new.version, move, True, reason)


def promote(label_set: str = labels.DEFAULT) -> Decision:
    """Points ``fer-emotion@champion`` (``fer-emotion-<label set>`` for another label set)
    at the best family champion of the label set; idempotent.

    Family champions are compared on the data and protocol of the newest one (others are
    left out, and the description says so), by their validation score.

    Raises:
        LookupError: no family has a champion of the label set yet.
    """
    client = MlflowClient()
    best_name = best_model_name(label_set)
    champions = [v for v in (champion_version(client, model_name(f, label_set))
                             for f in families()) if v]
    if not champions:
        own = label_set == labels.DEFAULT
        of, flag = ("", "") if own else (f" of {label_set}", f" --labels {label_set}")
        raise LookupError(f"no family has a champion{of} yet: run `fer-lab tune "
                          f"FAMILY{flag}` first")
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
    current = champion_version(client, best_name)
    if current is not None and current.tags.get("fer.source") == source:
        return Decision(best_name, current.version, True, False,
                        f"unchanged: @{CHAMPION} is already {source}")
    _ensure_model(client, best_name, "")
    new = client.copy_model_version(source, best_name)
    for k, v in {**best.tags, "fer.source": source, "fer.champion_decision": reason}.items():
        client.set_model_version_tag(best_name, new.version, k, v)
    client.set_registered_model_alias(best_name, CHAMPION, new.version)
    client.update_registered_model(best_name, description=(
        f"The best facial-emotion classifier fer-lab has trained for the label set "
        f"{_describe_labels(best)}. Chosen by `fer-lab promote`: {reason}. Test scores are in "
        "the version's tags; they played no part in the choice. Load it with "
        f"mlflow.pyfunc.load_model('models:/{best_name}@{CHAMPION}')."))
    return Decision(best_name, new.version, True, True, reason)


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
