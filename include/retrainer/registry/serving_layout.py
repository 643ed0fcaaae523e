"""The champion in TensorFlow Serving's layout: ``<serving root>/<model>/<version>/`` holding its SavedModel.

Why: TensorFlow Serving (``--model_base_path=<serving root>/<model>``) polls that folder and serves the version
it finds, with no MLflow in between. Only the champion's version is kept there: TF Serving's default policy
serves the *highest* version number present, and after a rollback the champion is a lower number than versions
registered since, so any other folder would be served in its place. A move writes the new version's folder
completely (a staging sibling renamed into place, so the server never sees half a model), then removes the
others. The bytes are the ones the version's digest names: on promotion the run's checked export, on rollback
the registry's copy, checked against the digest before it is written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from retrainer.core import atomic
from retrainer.core.fingerprint import tree_digest

log = logging.getLogger(__name__)


def serving_root(data_root: str | Path) -> Path:
    """``RETRAINER_SERVING_ROOT``, or ``<data root>/serving``."""
    from retrainer.core.deployment import deployment

    configured = deployment().serving_root
    return Path(configured) if configured else Path(data_root) / "serving"


def publish(root: Path, model_name: str, version: str, saved_model: Path, digest: str) -> Path:
    """``saved_model`` (whose tree digest must be ``digest``) as ``root/model_name/version``, the only version
    there; returns that folder. Called under the promotion lock, after the alias moved."""
    if tree_digest(saved_model) != digest:
        raise ValueError(f"{saved_model} is not the SavedModel {model_name} v{version} recorded (digest differs)")
    base = root / model_name
    target = base / str(int(version))
    with atomic.staged_dir(target) as staging:
        shutil.copytree(saved_model, staging, dirs_exist_ok=True)
    for other in base.iterdir():
        if other != target and other.is_dir() and other.name.isdigit():
            shutil.rmtree(other, ignore_errors=True)
    log.info("TensorFlow Serving layout: %s holds %s v%s", base, model_name, version)
    return target


def publish_from_registry(tracking_uri: str, root: Path, model_name: str, version: str) -> Path:
    """The registry's copy of ``version`` (checked against its digest while downloading), published."""
    from retrainer import registry
    from retrainer.registry.artefacts import SAVED_MODEL_DIGEST_TAG, download_saved_model

    digest = registry.version_tags(tracking_uri, model_name, version)[SAVED_MODEL_DIGEST_TAG]
    with tempfile.TemporaryDirectory(prefix="serving-") as scratch:
        folder = download_saved_model(tracking_uri, model_name, version, Path(scratch))
        return publish(root, model_name, version, folder, digest)
