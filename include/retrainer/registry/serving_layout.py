"""The champion in TensorFlow Serving's layout: ``<serving root>/<model>/<version>/`` holding its SavedModel.

Why: TensorFlow Serving (``--model_base_path=<serving root>/<model>``) polls that folder and serves the version
it finds, with no MLflow in between. Only the champion's version is kept there: TF Serving's default policy
serves the *highest* version number present, and after a rollback the champion is a lower number than versions
registered since, so any other folder would be served in its place. A move first copies the new version's folder
completely beside its place (:func:`stage`, before the champion alias moves, so a failed copy moves nothing), then
renames it into place and removes the others (:meth:`Staged.activate`, after the alias moved). The bytes are the
ones the version's digest names: on promotion the run's checked export, on rollback the registry's copy, checked
against the digest before it is written.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import uuid
from pathlib import Path

from retrainer.core import atomic
from retrainer.core.fingerprint import tree_digest

log = logging.getLogger(__name__)


def serving_root(data_root: str | Path) -> Path:
    """``RETRAINER_SERVING_ROOT``, or ``<data root>/serving``."""
    from retrainer.core.deployment import deployment

    configured = deployment().serving_root
    return Path(configured) if configured else Path(data_root) / "serving"


@dataclasses.dataclass(frozen=True)
class Staged:
    """A version's SavedModel copied and checked beside its place, under a name TF Serving ignores (it reads only
    numeric folder names): everything that can fail (the digest, the copy, the disk) has happened; what is left
    is a rename. Why: the copy is done *before* the champion alias moves, so a failure there leaves the champion
    where it was."""

    staging: Path
    target: Path

    def activate(self) -> Path:
        """Rename into place and remove every other version (after the alias moved)."""
        atomic.replace_dir(self.staging, self.target)
        for other in self.target.parent.iterdir():
            if other != self.target and other.is_dir() and other.name.isdigit():
                shutil.rmtree(other, ignore_errors=True)
        log.info("TensorFlow Serving layout: %s holds v%s", self.target.parent, self.target.name)
        return self.target

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def stage(root: Path, model_name: str, version: str, saved_model: Path, digest: str) -> Staged:
    """``saved_model`` (whose tree digest must be ``digest``) copied next to ``root/model_name/version``."""
    if tree_digest(saved_model) != digest:
        raise ValueError(f"{saved_model} is not the SavedModel {model_name} v{version} recorded (digest differs)")
    target = root / model_name / str(int(version))
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(".staging-*"):  # an attempt that died (under the lock: no one else's)
        shutil.rmtree(stale, ignore_errors=True)
    staging = target.with_name(f".staging-{target.name}-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(saved_model, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Staged(staging, target)


def publish(root: Path, model_name: str, version: str, saved_model: Path, digest: str) -> Path:
    """``saved_model`` as ``root/model_name/version``, the only version there; returns that folder."""
    return stage(root, model_name, version, saved_model, digest).activate()


def stage_from_registry(tracking_uri: str, root: Path, model_name: str, version: str) -> Staged:
    """The registry's copy of ``version`` (checked against its digest while downloading), staged."""
    from retrainer import registry
    from retrainer.registry.artefacts import SAVED_MODEL_DIGEST_TAG, download_saved_model

    digest = registry.version_tags(tracking_uri, model_name, version)[SAVED_MODEL_DIGEST_TAG]
    with tempfile.TemporaryDirectory(prefix="serving-") as scratch:
        folder = download_saved_model(tracking_uri, model_name, version, Path(scratch))
        return stage(root, model_name, version, folder, digest)
