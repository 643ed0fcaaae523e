"""Freshness alerts' rules: the data deadline of a run's date and the champion's age (the sensor and the register
task that raise them are tested in tests/dags/test_dag_integrity.py)."""

from __future__ import annotations

import datetime as dt

from retrainer.registry.promotion import Holder
from retrainer.runners.freshness import data_deadline, late_data, stale_champion

DAY = dt.date(2013, 6, 8)


def test_data_is_late_only_past_the_deadline_and_only_when_something_is_missing() -> None:
    deadline = data_deadline(DAY, 6)
    assert deadline == dt.datetime(2013, 6, 8, 6, 0, tzinfo=dt.UTC)
    assert late_data(DAY, "flights: 2013-06-07", deadline - dt.timedelta(seconds=1), 6) is None
    assert late_data(DAY, "", deadline + dt.timedelta(days=3), 6) is None
    message = late_data(DAY, "flights: 2013-06-07", deadline + dt.timedelta(hours=2, minutes=30), 6)
    assert message is not None
    assert "2.5 h after its deadline 2013-06-08 06:00 UTC (RETRAINER_DATA_DEADLINE_HOURS=6)" in message
    assert "flights: 2013-06-07" in message


def test_a_champion_is_stale_only_when_older_than_the_allowed_days() -> None:
    assert stale_champion("m", DAY, None, 14) is None  # no champion: nothing to go stale
    assert stale_champion("m", DAY, Holder("3", None), 14) is None  # no run date recorded: not guessed
    assert stale_champion("m", DAY, Holder("3", DAY - dt.timedelta(days=14)), 14) is None
    message = stale_champion("m", DAY, Holder("3", DAY - dt.timedelta(days=15)), 14)
    assert message is not None and "m's champion v3 was trained for 2013-05-24, 15 days before this run" in message
