"""The files inside one features folder: a leaf both the run layout and the stage results name."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class FeatureFiles:
    """The files inside one features folder (pending, validated or rejected: the names are the same)."""

    folder: Path

    @property
    def train(self) -> Path:
        return self.folder / "train"

    @property
    def eval(self) -> Path:
        return self.folder / "eval"

    @property
    def stats(self) -> Path:
        """Normalisation statistics and vocabularies of the training split."""
        return self.folder / "stats.json"

    @property
    def daily_profile(self) -> Path:
        """One row per day of the window: rows, rows without a label, label mean, null fractions."""
        return self.folder / "daily_profile.json"

    @property
    def profile(self) -> Path:
        """Histograms of each feature over the training split: what drift is later measured against."""
        return self.folder / "profile.json"
