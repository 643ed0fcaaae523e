"""How the gates' thresholds sit against 2013: every per-day statistic's observed range next to its bound.

Runs the raw gate and the features stage over every landed day of 2013 (a run dated 2013-12-31 with
a 357-day window: its raw days are 2013-01-01..2013-12-30, the last day with weather), then prints,
for each bounded per-day statistic, the lowest and highest value seen and the contract's bounds, and
how often the unit checks would catch a day converted to other units. Results go to
bench/THRESHOLDS.md; the README quotes them.

    .venv/bin/python bench/thresholds_2013.py      # about 2 minutes; uses RETRAINER_DATA_ROOT's landed data
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.feature_files import FeatureFiles
from retrainer.core.layout import raw_gate_record
from retrainer.data import raw_gate_suite
from retrainer.stages import check_raw
from retrainer.stages.features import build_features
from retrainer.workloads import get_workload

HERE = Path(__file__).resolve().parent
RUN_DATE = dt.date(2013, 12, 31)


def _bounds_table(frame: Any, specs: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    out = []
    for spec in specs:
        col = spec["kwargs"].get("column")
        if spec["type"] != "expect_column_values_to_be_between" or col not in frame:
            continue
        values = [v for v in frame[col] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        low, high = spec["kwargs"]["min_value"], spec["kwargs"]["max_value"]
        seen = f"{min(values):.4g} .. {max(values):.4g}" if values else "-"
        out.append(f"| {labels.get(col, col)} | {seen} | [{low}, {high}] |")
    return out


def main() -> int:
    data_root = Path(os.environ.get("RETRAINER_DATA_ROOT", "data")).resolve()
    work = Path(tempfile.mkdtemp(prefix="thresholds-"))
    (work / "raw").symlink_to(data_root / "raw")
    cfg = RunConfig.build(
        date=RUN_DATE, workload="flight_delay", window_days=357, eval_days=7, data_root=str(work),
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )  # fmt: skip
    workload = get_workload("flight_delay")
    gate = check_raw.check_raw_days(cfg)  # raises if any clean day fails
    features = build_features(gate, cfg)
    days = cfg.window.raw_days(workload.history_days)

    lines = [
        f"Every landed day of 2013 through the raw gate ({len(days)} days x {len(workload.raw.sources)} sources) and"
        f" the per-day feature checks ({len(list(cfg.window.days()))} days): all pass.",
        "",
        "| per-day statistic | observed in 2013 | contract bound |",
        "|---|---|---|",
    ]
    records: dict[str, dict[str, Any]] = {}
    for source in workload.raw.sources:
        records[source.name] = {
            d.isoformat(): atomic.read_json(raw_gate_record(work, source.name, d, workload.raw.name)) for d in days
        }
        suite = raw_gate_suite.day_suite(source, records[source.name], workload.raw)
        lines += _bounds_table(suite.frame, suite.specs, dict(suite.labels))

    import pandas as pd

    contract = workload.contract
    per_day = pd.DataFrame(atomic.read_json(FeatureFiles(Path(features.folder)).daily_profile))
    labels = {"rows": "features: labelled rows per day", "label_mean": "features: late rate per day"}
    labels |= {f"null_fraction.{c}": f"features: null share of {c}" for c in contract.nullable_checked_per_day()}
    lines += _bounds_table(per_day, contract.per_day_expectations([]), labels)

    # Detection power of the unit checks: each day converted to other units, checked against its bound.
    flights, weather = records["flights"], records["weather"]
    lo, hi = workload.raw.source("flights").column("arr_delay").std_per_day or (0, math.inf)
    in_hours = sum(not (lo <= r["std"]["arr_delay"] / 60 <= hi) for r in flights.values())
    limit = workload.raw.source("weather").column("temp").max_shift_from_neighbours or math.inf
    means = {d: r["mean"]["temp"] for d, r in weather.items()}
    caught = 0
    for d, mean in means.items():
        ref = raw_gate_suite.neighbour_median(means, d, workload.raw.neighbour_days)
        caught += ref is not None and abs((mean - 32) * 5 / 9 - ref) > limit
    lines += [
        "",
        f"Unit checks: a day of delays in hours instead of minutes is caught on {in_hours} of {len(flights)} days; "
        f"a day of temperatures in Celsius instead of Fahrenheit on {caught} of {len(means)} days "
        "(missed only on the coldest days, where the two scales are close).",
    ]
    (HERE / "THRESHOLDS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
