"""Where every artefact of a run lives. Keyed by workload and run date so reruns replace, never append."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path


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
        return self.root / "features"

    @property
    def train(self) -> Path:
        return self.features / "train"

    @property
    def eval(self) -> Path:
        return self.features / "eval"

    @property
    def stats(self) -> Path:
        return self.features / "stats.json"

    @property
    def daily_counts(self) -> Path:
        return self.features / "daily_counts.json"

    @property
    def raw_manifest(self) -> Path:
        return self.features / "raw_manifest.json"

    @property
    def features_meta(self) -> Path:
        return self.features / "features.json"

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
