"""The run calendar: which days a run dated D trains on, evaluates on, and reads.

A run dated D with window W and evaluation E trains on ``[D-W, D-E)`` and evaluates on ``[D-E, D)``;
the last V days of the training range (``validation_days``) are held out of the fit for early stopping;
features that look back (lagged rates) also read ``history_days`` of raw days before ``D-W``.
Every module that needs a day range asks this one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Days in [start, end)."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


@dataclasses.dataclass(frozen=True)
class RunWindow:
    run_date: dt.date
    window_days: int
    eval_days: int
    validation_days: int = 0  # the last days of the training range, held out for early stopping

    @property
    def train_start(self) -> dt.date:
        return self.run_date - dt.timedelta(days=self.window_days)

    @property
    def eval_start(self) -> dt.date:
        return self.run_date - dt.timedelta(days=self.eval_days)

    @property
    def end(self) -> dt.date:
        """Exclusive end of the evaluation window: the run's own date."""
        return self.run_date

    @property
    def validation_start(self) -> dt.date:
        return self.eval_start - dt.timedelta(days=self.validation_days)

    @property
    def fit_range(self) -> tuple[str, str]:
        """The days the network's weights are fitted on: the training range minus the validation days."""
        return self.train_start.isoformat(), self.validation_start.isoformat()

    @property
    def validation_range(self) -> tuple[str, str] | None:
        return (self.validation_start.isoformat(), self.eval_start.isoformat()) if self.validation_days else None

    @property
    def train_range(self) -> tuple[str, str]:
        return self.train_start.isoformat(), self.eval_start.isoformat()

    @property
    def eval_range(self) -> tuple[str, str]:
        return self.eval_start.isoformat(), self.end.isoformat()

    def days(self) -> list[dt.date]:
        """Every day whose rows the run trains or evaluates on."""
        return days_between(self.train_start, self.end)

    def raw_days(self, history_days: int) -> list[dt.date]:
        """Every raw day the run reads: its window plus ``history_days`` before it."""
        return days_between(self.train_start - dt.timedelta(days=history_days), self.end)
