"""MLflow: the tracking store, the registered model and its aliases.

``champion`` is the version that serves; ``challenger`` is the newest version trained. A version
is registered once per training run (tag ``retrainer.run_key``), so a rerun reuses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PROFILE_ARTIFACT = "data_profile.json"  # the training split's feature histograms, logged with each version


class RegistryUnavailable(RuntimeError):
    """The registry could not be read (as opposed to: it holds no such model or alias)."""


def _is_absent(exc: Exception) -> bool:
    """MLflow's "no such model" / "no such alias" (both stores answer INVALID_PARAMETER_VALUE for an
    unknown alias); every other error code, and every non-MLflow error, means "could not read"."""
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc).lower()
    )


def champion_profile(tracking_uri: str, model_name: str) -> tuple[str, dict[str, Any] | None] | None:
    """(champion version, its training data profile or None if it was registered without one), or None
    without a champion. A profile that exists but cannot be read raises :class:`RegistryUnavailable`: the
    drift gate must fail (and be retried), never pass as "not measured", while the store is down."""
    import mlflow

    mv = version_by_alias(tracking_uri, model_name, CHAMPION)
    if mv is None:
        return None
    uri = f"runs:/{mv.run_id}/{PROFILE_ARTIFACT}"
    try:
        return str(mv.version), mlflow.artifacts.load_dict(uri)
    except Exception as exc:
        if isinstance(exc, FileNotFoundError) or _is_absent(exc):
            return str(mv.version), None
        raise RegistryUnavailable(f"could not read {uri} (champion v{mv.version}'s data profile): "
                                  f"{type(exc).__name__}: {exc}") from exc  # fmt: skip


def configure(tracking_uri: str) -> Any:
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_id(tracking_uri: str, name: str) -> str:
    """Get or create the experiment; on an embedded SQLite store artifacts go beside the database."""
    import mlflow

    client = configure(tracking_uri)
    exp = _read(f"the experiment {name}", tracking_uri, lambda: client.get_experiment_by_name(name))
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def version_by_alias(tracking_uri: str, model_name: str, alias: str) -> Any | None:
    """The MLflow ModelVersion (with its tags) an alias points at; None only if the model or the alias
    does not exist.

    Any other failure (a server that does not answer, a 403, a locked store) raises
    :class:`RegistryUnavailable`: "cannot tell" must never read as "no champion yet".
    """
    client = configure(tracking_uri)
    what = f"the {alias} alias of {model_name}"

    def read() -> Any:
        try:
            return client.get_model_version_by_alias(model_name, alias)
        except Exception as exc:
            # MLflow's basic-auth app answers 403, not 404, on a version route of a model that does not exist (it
            # cannot look up the model's permissions): ask for the model itself, which says 404 if it is absent.
            if getattr(exc, "error_code", "") == "PERMISSION_DENIED":
                model = _read(f"the registered model {model_name}", tracking_uri,
                              lambda: client.get_registered_model(model_name), absent=None)  # fmt: skip
                if model is None:
                    return None
            raise

    return _read(what, tracking_uri, read, absent=None)


def alias_version(tracking_uri: str, model_name: str, alias: str) -> str | None:
    """The version an alias points at (see :func:`version_by_alias`)."""
    mv = version_by_alias(tracking_uri, model_name, alias)
    return None if mv is None else str(mv.version)


def version_tags(tracking_uri: str, model_name: str, version: str) -> dict[str, str]:
    client = configure(tracking_uri)
    what = f"the tags of {model_name} v{version}"
    return dict(_read(what, tracking_uri, lambda: client.get_model_version(model_name, version)).tags)


_MUST_EXIST = object()


def _read(what: str, tracking_uri: str, call: Callable[[], Any], absent: Any = _MUST_EXIST) -> Any:
    """``call()``; ``absent`` (when given) if MLflow says the thing does not exist; any other failure
    raises RegistryUnavailable."""
    try:
        return call()
    except Exception as exc:
        if absent is not _MUST_EXIST and _is_absent(exc):
            return absent
        raise RegistryUnavailable(f"could not read {what} from {tracking_uri}: {type(exc).__name__}: {exc}") from exc


def versions(tracking_uri: str, model_name: str) -> list[Any]:
    """Every version of the model, with its tags ([] if the model does not exist); RegistryUnavailable if
    unreadable."""
    client = configure(tracking_uri)
    search = lambda: list(client.search_model_versions(f"name = '{model_name}'"))  # noqa: E731
    return _read(f"the versions of {model_name}", tracking_uri, search, absent=[])


def tag_filter(tags: dict[str, str]) -> str:
    """An MLflow run search matching runs that carry every one of ``tags``."""
    return " and ".join(f"tags.`{tag}` = '{value}'" for tag, value in tags.items())


def find_version_of_run(tracking_uri: str, model_name: str, experiment_id: str, tags: dict[str, str]) -> str | None:
    """The version registered from an MLflow run carrying every one of ``tags``, if any.

    Looked up through the run (tagged when it starts) rather than a version tag, so a retry after a
    crash between registering and tagging the version still finds it instead of registering a twin.
    """
    client = configure(tracking_uri)
    runs = client.search_runs([experiment_id], filter_string=tag_filter(tags))
    for run in runs:
        versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run.info.run_id}'")
        if versions:
            return str(max(int(v.version) for v in versions))
    return None


def model_tags(tracking_uri: str, model_name: str) -> dict[str, str]:
    """The registered model's own tags ({} if the model does not exist); RegistryUnavailable if unreadable."""
    client = configure(tracking_uri)
    read = lambda: dict(client.get_registered_model(model_name).tags)  # noqa: E731
    return _read(f"the tags of {model_name}", tracking_uri, read, absent={})


def aliases(tracking_uri: str, model_name: str) -> dict[str, str]:
    """Every alias of the model ({} if the model does not exist); RegistryUnavailable if unreadable."""
    client = configure(tracking_uri)

    def read() -> dict[str, str]:
        return {a: str(v) for a, v in client.get_registered_model(model_name).aliases.items()}

    return _read(f"the aliases of {model_name}", tracking_uri, read, absent={})
