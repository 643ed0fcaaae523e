"""No false alarms: every clean landed day of 2013 (and the planes table) passes the raw gate and the per-day
feature checks.

One run dated 2013-12-31 with a 357-day window reads every landed day of 2013 that has weather
(2013-01-01..2013-12-30; the package has no weather for 12-31). ``bench/thresholds_2013.py`` prints
how far each observed per-day extreme sits from its bound.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from retrainer.stages.check_raw import check_raw_days
from retrainer.stages.features import build_features
from retrainer.stages.validate import validate_features
from support import small_config


def test_every_clean_day_of_2013_passes_both_gates(spark, session_dir: Path) -> None:
    from retrainer.data.landing import land

    root = session_dir / "year"
    land(root, dt.date(2013, 1, 1), dt.date(2013, 12, 30))
    cfg = small_config(root, f"sqlite:///{session_dir / 'year-mlflow.db'}", date=dt.date(2013, 12, 31),
                       window_days=357, eval_days=7)  # fmt: skip
    gate = check_raw_days(cfg)
    days_checked = [k for k in gate.files if not k.startswith("dims/")]
    assert len(days_checked) == 2 * 364 and set(gate.files) - set(days_checked) == {"dims/planes"}
    assert gate.report.failed == [] and gate.quarantined == {}
    validated = validate_features(build_features(gate, cfg), cfg)
    report = validated.report
    assert report.success and report.failed == [] and report.warnings == []
    days = list(cfg.window.days())
    assert (days[0], days[-1], len(days)) == (dt.date(2013, 1, 8), dt.date(2013, 12, 30), 357)
    assert report.evaluated["per_day"] >= 10  # each a per-day bound, held on all 357 days
