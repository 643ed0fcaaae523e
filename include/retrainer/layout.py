"""Where every artefact of a run lives. Keyed by workload and run date so reruns replace, never append."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

FEATURES_META = "features.json"


def raw_partition(data_root: str | Path, source: str, day: dt.date) -> Path:
    return Path(data_root) / "raw" / source / f"date={day.isoformat()}" / f"{source}.csv"


def raw_dim(data_root: str | Path, name: str) -> Path:
    return Path(data_root) / "raw" / "dims" / f"{name}.csv"


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The folder of one run (workload, date) and the fixed names inside it."""

    root: Path

    @classmethod
    def for_run(cls, data_root: str | Path, workload: str, run_date: dt.date) -> RunLayout:
        return cls(Path(data_root) / "runs" / workload / f"date={run_date.isoformat()}")

    @property
    def features(self) -> Path:
        """Validated features: the only feature folder that training reads."""
        return self.root / "features"

    @property
    def features_pending(self) -> Path:
        """Features as built, before validation; promoted to ``features`` only if they pass."""
        return self.root / "features.pending"

    @property
    def features_rejected(self) -> Path:
        """The last features that failed validation, kept for inspection."""
        return self.root / "features.rejected"

    @property
    def features_meta(self) -> Path:
        return self.features / FEATURES_META

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def training_meta(self) -> Path:
        return self.root / "training.json"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def saved_model(self) -> Path:
        return self.root / "saved_model"

    @property
    def export_meta(self) -> Path:
        return self.root / "export.json"

    @property
    def registration(self) -> Path:
        return self.root / "registration.json"


def feature_files(folder: Path) -> dict[str, str]:
    """The URIs inside a features folder, wherever that folder currently is."""
    return {
        "features_uri": str(folder),
        "train_uri": str(folder / "train"),
        "eval_uri": str(folder / "eval"),
        "stats_uri": str(folder / "stats.json"),
        "daily_counts_uri": str(folder / "daily_counts.json"),
        "raw_manifest_uri": str(folder / "raw_manifest.json"),
    }
