"""What tests share besides fixtures: the project root, the landed slice of 2013, the tiny run config.

Tests import these (``from support import small_config``) instead of importing ``conftest``; the fixtures
that build engines and data stay in ``tests/conftest.py``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from retrainer.core.processes import free_ports

ROOT = Path(__file__).resolve().parents[2]

# Test tiers, one folder each; a test's marker is its folder's name (``pytest -m unit``).
TIERS = {
    "unit": "fast tests of single modules: no Spark, no TensorFlow training, no DAG run",
    "dags": "DAG integrity: every DAG file imports, its shape, params and alerts",
    "stages": "stage functions on the real engines (Spark, Great Expectations, TensorFlow, MLflow) on small data",
    "e2e": "whole DAG runs under dag.test()",
    "server": "servers: Airflow and MLflow as services on PostgreSQL and Redis, a browser, compose",
}

# The landed days every test shares: enough for a run dated 2013-02-05 with a 7-day window
# (train 01-29..02-02, eval 02-03..02-04) plus 7 days of history for lagged rates. The date is after
# the DAG's start_date (2013-01-29): Airflow creates no task instances for runs before it.
LAND_START = dt.date(2013, 1, 21)
LAND_END = dt.date(2013, 2, 6)
RUN_DATE = dt.date(2013, 2, 5)
# The tests' own Spark Connect server (conftest starts it for the tiers that use Spark, stops it at the end), on
# a free port of this session's own: two sessions at once (two checkouts, a CI run beside a developer's) must
# not share one server, which the first to finish would stop under the other. RETRAINER_TEST_SPARK_CONNECT_PORT
# names a fixed port instead.
SPARK_CONNECT_PORT = int(os.environ.get("RETRAINER_TEST_SPARK_CONNECT_PORT") or free_ports(1)[0])
SPARK_CONNECT_URL = f"sc://127.0.0.1:{SPARK_CONNECT_PORT}"


def small_config(data_root: Path, tracking_uri: str, workload: str = "flight_delay", **overrides: Any) -> Any:
    """A tiny run: 7-day window, 2 evaluation days (1 validation day), 1 epoch, small model."""
    from retrainer.core.config import RunConfig

    base = {
        "date": RUN_DATE,
        "workload": workload,
        "window_days": 7,
        "eval_days": 2,
        "validation_days": 1,
        "epochs": 1,
        "batch_size": 256,
        "hidden_units": 8,
        "members": "joint",  # one member of the ensemble: the plumbing's tests; the ensemble's own ask for all
        "part_files": 2,
        "data_root": str(data_root),
        "tracking_uri": tracking_uri,
        "spark_master": SPARK_CONNECT_URL,
    }
    return RunConfig.build(**(base | overrides))


def arrive_later(rows: list[list[str]], minutes: int) -> list[list[str]]:
    """A flights file's rows (header first) with every flight arriving ``minutes`` later, its arrival time and
    delay moved together: each row stays consistent (the raw gate's cross-field rules hold), only the label's
    distribution is off, for validation to catch."""
    from retrainer.data.scale_replicas import later_clock

    t, d = rows[0].index("arr_time"), rows[0].index("arr_delay")
    out = [rows[0]]
    for r in rows[1:]:
        r = list(r)
        if r[t] != "NA" and r[d] != "NA":
            r[t], r[d] = later_clock(r[t], minutes), str(float(r[d]) + minutes)
        out.append(r)
    return out


def run_root(tmp_path: Path, landed: Path) -> tuple[Path, str]:
    """A data root of a test's own over the session's landed raw files (linked, not copied), and a SQLite
    registry beside it whose first-use migration is done (two processes doing it at once collide)."""
    from retrainer import registry

    root = tmp_path / "data"
    root.mkdir()
    (root / "raw").symlink_to(landed / "raw")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry.experiment_id(tracking, "retrainer/flight_delay")
    return root, tracking
