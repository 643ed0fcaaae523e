"""Freshness: is the data arriving, and is the model in production still a recent one?

Two questions a failed task never asks, because nothing fails: a feed that stops delivering leaves the run's
sensor waiting (for hours, by design: late data is normal), and a champion that no challenger beats for weeks
keeps serving while the world moves on. Both are deployment settings with an alert each:

- ``data_late``: the raw days a run dated D reads have not all landed ``RETRAINER_DATA_DEADLINE_HOURS`` (6)
  after D 00:00 UTC. Raised once per waiting task try by the raw-partitions sensor, which keeps waiting.
- ``champion_stale``: after a run dated D, the champion was trained for a date more than
  ``RETRAINER_CHAMPION_MAX_AGE_DAYS`` (14) before D. Raised by the run's ``register`` task.

Plain functions over dates and the registry: the sensor, the DAG and the tests call the same ones.
"""

from __future__ import annotations

import datetime as dt

from retrainer.registry.promotion import Holder


def data_deadline(run_date: dt.date, hours: float) -> dt.datetime:
    """When a run dated ``run_date`` should have all its raw days (UTC): ``hours`` after its date's midnight."""
    return dt.datetime.combine(run_date, dt.time(0), dt.UTC) + dt.timedelta(hours=hours)


def late_data(run_date: dt.date, missing: str, now: dt.datetime, hours: float) -> str | None:
    """The ``data_late`` message when ``missing`` (what the sensor still waits for, described) is not landed by
    the deadline at ``now``; None before the deadline or when nothing is missing."""
    deadline = data_deadline(run_date, hours)
    if not missing or now < deadline:
        return None
    late = now - deadline
    return (
        f"raw data for the run dated {run_date} is late: still missing {late.total_seconds() / 3600:.1f} h after "
        f"its deadline {deadline:%Y-%m-%d %H:%M} UTC (RETRAINER_DATA_DEADLINE_HOURS={hours:g}): {missing}. "
        "The run keeps waiting until its sensor times out; check the feed that lands these files"
    )


def stale_champion(model: str, run_date: dt.date, champion: Holder | None, max_age_days: int) -> str | None:
    """The ``champion_stale`` message when, after the run dated ``run_date``, the champion's own run date is more
    than ``max_age_days`` before it; None when there is no champion (nothing to go stale) or it is recent."""
    if champion is None or champion.run_date is None:
        return None
    age = (run_date - champion.run_date).days
    if age <= max_age_days:
        return None
    return (
        f"{model}'s champion v{champion.version} was trained for {champion.run_date}, {age} days before this run "
        f"({run_date}; RETRAINER_CHAMPION_MAX_AGE_DAYS={max_age_days}): no newer run has been promoted since. "
        "Read the recent runs' decisions (retrainer summary, the run reports) for why the challengers were held"
    )
