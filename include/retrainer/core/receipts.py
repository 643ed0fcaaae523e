"""Receipts: what a task hands the next one instead of a copy of its result.

The run folder is the one record of a stage's result (:class:`retrainer.core.layout.RunLayout` saves
it there). Between Airflow tasks only a receipt travels: the result's type, where it was saved, and a
digest of what was saved. The next task loads the typed result from that file and checks the digest,
so a result rewritten after it was handed on (another run of the same date, a hand edit, a stage rerun
out of order) is refused, by name, instead of silently read as this run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

from retrainer.core import atomic
from retrainer.core.results import StageResult

R = TypeVar("R", bound=StageResult)


class ReceiptMismatch(ValueError):
    """The result in the run folder is not the one the receipt was written for."""


def digest_of(payload: dict[str, Any]) -> str:
    """sha256 of the result's JSON in a canonical form (key order and whitespace do not count)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Receipt:
    """A saved stage result, by reference: small enough for XCom, checked when it is redeemed."""

    type: str  # the result's class name, e.g. "ValidationResult"
    path: str  # the result's JSON file in the run folder
    digest: str  # digest_of the result as saved

    @classmethod
    def issue(cls, result: StageResult, path: str | Path) -> Receipt:
        """The receipt of ``result``, just saved at ``path``."""
        return cls(type(result).__name__, str(path), digest_of(result.to_dict()))

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Receipt:
        if not isinstance(data, dict) or set(data) != {"type", "path", "digest"}:
            raise ReceiptMismatch(
                f"expected a receipt {{type, path, digest}} from the upstream task, got {str(data)[:200]!r}: "
                "was it written by another version of retrainer? clear the upstream task"
            )
        return cls(**data)

    def redeem(self, result_type: type[R]) -> R:
        """The typed result the receipt names, read from the run folder, if it is still the one issued."""
        if self.type != result_type.__name__:
            raise ReceiptMismatch(
                f"receipt for a {self.type} ({self.path}) where a {result_type.__name__} was expected"
            )
        path = Path(self.path)
        if not path.exists():
            raise ReceiptMismatch(f"{path} is gone since the {result_type.STAGE} stage saved it: rerun that stage")
        payload = atomic.read_json(path)
        found = digest_of(payload)
        if found != self.digest:
            raise ReceiptMismatch(
                f"{path} changed after the {result_type.STAGE} stage handed it on (digest {found[:12]}, "
                f"receipt {self.digest[:12]}): another run of the same date rewrote it? rerun from {result_type.STAGE}"
            )
        return result_type.from_dict(payload)
