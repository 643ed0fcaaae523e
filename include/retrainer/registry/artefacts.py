"""A registered version's SavedModel as files, checked against the digest recorded when it was registered.

Why not ``mlflow.pyfunc.load_model``: a pyfunc is a models-from-code artefact, so loading it runs Python
that anyone with write access to the artefact store could have replaced, inside a worker that holds the
deployment's secrets. Evaluation needs only the SavedModel (a graph and weights, no Python): this module
downloads that folder alone, reading its location from the version's ``MLmodel`` (YAML data), and refuses
it unless its files have the digest that ``register`` recorded on the version from the export it checked.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from retrainer.core.fingerprint import tree_digest
from retrainer.registry import RegistryUnavailable, _read, configure, version_tags

SAVED_MODEL_DIGEST_TAG = "retrainer.saved_model_digest"  # tree digest of the SavedModel export checked
SAVED_MODEL_ARTIFACT = "saved_model"  # the pyfunc's artifact key (retrainer.registry.mlflow_run)


class UnverifiedArtefact(RuntimeError):
    """A version's SavedModel is not the one registered: its files no longer have the recorded digest, or
    its MLmodel does not name it inside the model."""


class NoRecordedDigest(UnverifiedArtefact):
    """The version carries no digest (registered before digests were recorded): it cannot be checked."""


def saved_model_path(mlmodel: dict[str, Any], where: str) -> str:
    """The SavedModel folder's path inside the logged model, from its MLmodel file's pyfunc artifacts.

    A path that climbs out of the model (``..``) or is absolute is refused: it comes from the store."""
    try:
        path = mlmodel["flavors"]["python_function"]["artifacts"][SAVED_MODEL_ARTIFACT]["path"]
    except (KeyError, TypeError) as exc:
        raise UnverifiedArtefact(f"{where}: its MLmodel names no {SAVED_MODEL_ARTIFACT!r} artifact") from exc
    pure = PurePosixPath(str(path))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise UnverifiedArtefact(f"{where}: its MLmodel names the SavedModel at {path!r}, outside the model")
    return pure.as_posix()


def download_saved_model(tracking_uri: str, model_name: str, version: str, dest: Path) -> Path:
    """The SavedModel folder of ``model_name`` v``version``, downloaded under ``dest`` and checked.

    Raises :class:`NoRecordedDigest` when the version carries no digest, :class:`UnverifiedArtefact` when the
    files differ from it,
    :class:`~retrainer.registry.RegistryUnavailable` when the store cannot be read."""
    import mlflow
    import yaml

    where = f"{model_name} v{version}"
    recorded = version_tags(tracking_uri, model_name, version).get(SAVED_MODEL_DIGEST_TAG)
    if not recorded:
        raise NoRecordedDigest(
            f"{where} carries no {SAVED_MODEL_DIGEST_TAG} tag (registered before digests were recorded), so its "
            "SavedModel cannot be checked; an operator who has checked it may set the tag to its tree digest"
        )
    configure(tracking_uri)
    uri = f"models:/{model_name}/{version}"
    dest.mkdir(parents=True, exist_ok=True)

    def fetch(path: str, into: Path) -> str:
        into.mkdir(parents=True, exist_ok=True)
        return _read(
            f"{uri}/{path}", tracking_uri,
            lambda: mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{path}", dst_path=str(into)),
        )  # fmt: skip

    mlmodel_file = fetch("MLmodel", dest / "meta")
    try:
        mlmodel = yaml.safe_load(Path(mlmodel_file).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryUnavailable(f"could not read the MLmodel of {where}: {exc}") from exc
    folder = Path(fetch(saved_model_path(mlmodel, where), dest / "files"))
    actual = tree_digest(folder)
    if actual != recorded:
        raise UnverifiedArtefact(
            f"{where}: the SavedModel in the artefact store has digest {actual[:12]}, not the {recorded[:12]} "
            "recorded when it was registered: its files were changed after registration; refusing to score it"
        )
    return folder
