"""Benchmark: the features of a whole year into the feature store, on Spark ``local[*]`` and, as a
reference, the same computation written in DuckDB SQL on the same landed CSV files, at 1x, 10x and 30x
the real data (``retrainer land --scale K``), in one run.

Each engine runs in a fresh process per scale, so start-up is included and peak memory is its own:
for Spark the driver JVM's peak RSS (``VmHWM``; in local mode it also runs the executors) and the
Python driver's; for DuckDB the process's. After the year is built, the same Spark process drops the
last day from the store and computes it again: the incremental cost of a new day without a JVM start.

    make bench-spark                       # scales 1 10 30 under bench/.data (git-ignored)
    python bench/spark_features.py --scales 1 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
YEAR_START, YEAR_END = dt.date(2013, 1, 1), dt.date(2013, 12, 31)
FIRST_DAY = YEAR_START + dt.timedelta(days=7)  # the first day with its 7 days of lookback landed


def _days() -> list[dt.date]:
    from retrainer.core.run_window import days_between

    return days_between(FIRST_DAY, YEAR_END)  # the weather of 12-31 (local) is not in the package


def _java_peak_mib() -> float:
    """Peak RSS of this process's java children (the Spark driver JVM)."""
    peak = 0.0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
            if fields.get("PPid", "").strip() == str(os.getpid()) and fields.get("Name", "").strip() == "java":
                peak = max(peak, int(fields["VmHWM"].split()[0]) / 1024)
        except (OSError, KeyError, ValueError):
            continue
    return peak


def _self_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def land(root: Path, scale: int) -> int:
    """Landed flights rows (lands the year first unless this scale is already there)."""
    from retrainer.core import atomic
    from retrainer.core.layout import landed_marker
    from retrainer.data.landing import land as land_days
    from retrainer.data.landing import write_landed_marker

    marker = landed_marker(root)
    if not marker.exists() or atomic.read_json(marker).get("scale") != scale:
        shutil.rmtree(root, ignore_errors=True)
        written = land_days(root, YEAR_START, YEAR_END, scale)
        write_landed_marker(root, YEAR_START, YEAR_END, written, scale)
    return sum(sum(1 for _ in open(p)) - 1 for p in (root / "raw" / "flights").glob("date=*/flights.csv"))


def spark_one(root: Path) -> dict[str, Any]:
    from retrainer.data.feature_store import FeatureStore
    from retrainer.data.landed_files import landed_digests
    from retrainer.spark.session import get_spark
    from retrainer.workloads import get_workload

    workload = get_workload("flight_delay")
    t0 = time.perf_counter()
    spark = get_spark("local[*]", app_name="bench-spark-features")
    year = [YEAR_START + dt.timedelta(days=i) for i in range((YEAR_END - YEAR_START).days + 1)]
    digests = landed_digests(root, workload.daily_sources, year, workload.dimensions)
    store = FeatureStore(spark, workload, str(root), digests)
    shutil.rmtree(store.root, ignore_errors=True)
    days = _days()
    update = store.ensure(days)
    seconds = time.perf_counter() - t0
    rows_out = spark.read.parquet(str(store.root)).count()
    shutil.rmtree(store.day_dir(days[-1]))
    t1 = time.perf_counter()
    again = store.ensure(days)
    one_day = time.perf_counter() - t1
    assert again.computed == [days[-1].isoformat()], again
    out = {
        "seconds": round(seconds, 1),
        "rows_out": rows_out,
        "days": len(update.computed),
        "one_new_day_seconds": round(one_day, 1),
        "driver_jvm_peak_mib": round(_java_peak_mib()),
        "python_peak_mib": round(_self_peak_mib()),
    }
    spark.stop()
    return out


DUCKDB_SQL = """
CREATE VIEW flights AS SELECT *, make_date(year, month, day) AS flight_date
FROM read_csv('{raw}/flights/date=*/flights.csv', header = true, nullstr = 'NA', union_by_name = true,
  types = {{'year': 'INTEGER', 'month': 'INTEGER', 'day': 'INTEGER', 'sched_dep_time': 'INTEGER',
           'arr_delay': 'DOUBLE', 'carrier': 'VARCHAR', 'tailnum': 'VARCHAR', 'origin': 'VARCHAR',
           'dest': 'VARCHAR', 'distance': 'DOUBLE', 'time_hour': 'TIMESTAMPTZ'}});
CREATE VIEW weather AS SELECT origin, time_hour, avg(temp) AS temp, avg(humid) AS humid,
  avg(wind_speed) AS wind_speed, avg(precip) AS precip, avg(pressure) AS pressure, avg(visib) AS visib
FROM read_csv('{raw}/weather/date=*/weather.csv', header = true, nullstr = 'NA', union_by_name = true,
  types = {{'origin': 'VARCHAR', 'time_hour': 'TIMESTAMPTZ', 'temp': 'DOUBLE', 'humid': 'DOUBLE',
           'wind_speed': 'DOUBLE', 'precip': 'DOUBLE', 'pressure': 'DOUBLE', 'visib': 'DOUBLE'}})
GROUP BY origin, time_hour;
CREATE VIEW planes AS SELECT tailnum, any_value(TRY_CAST(year AS INTEGER)) AS plane_year,
  any_value(TRY_CAST(seats AS DOUBLE)) AS seats
FROM read_csv('{raw}/dims/planes.csv', header = true, nullstr = 'NA', all_varchar = true) GROUP BY tailnum;
CREATE VIEW daily AS SELECT carrier, origin, flight_date, (arr_delay > 15)::BIGINT AS late
FROM flights WHERE arr_delay IS NOT NULL;
CREATE VIEW carrier_rate AS SELECT carrier, flight_date,
  sum(late) OVER w / sum(n) OVER w AS carrier_late_rate_7d
FROM (SELECT carrier, flight_date, sum(late) AS late, count(*) AS n FROM daily GROUP BY ALL)
WINDOW w AS (PARTITION BY carrier ORDER BY flight_date
             RANGE BETWEEN INTERVAL 7 DAYS PRECEDING AND INTERVAL 1 DAY PRECEDING);
CREATE VIEW origin_rate AS SELECT origin, flight_date,
  sum(late) OVER w / sum(n) OVER w AS origin_late_rate_7d
FROM (SELECT origin, flight_date, sum(late) AS late, count(*) AS n FROM daily GROUP BY ALL)
WINDOW w AS (PARTITION BY origin ORDER BY flight_date
             RANGE BETWEEN INTERVAL 7 DAYS PRECEDING AND INTERVAL 1 DAY PRECEDING);
COPY (
  SELECT f.flight_date, f.month, dayofweek(f.flight_date) + 1 AS day_of_week,
    floor(f.sched_dep_time / 100)::BIGINT AS sched_dep_hour, f.carrier, f.origin, f.dest, f.distance,
    w.temp, w.humid, w.wind_speed, w.precip, w.pressure, w.visib,
    f.year - p.plane_year AS plane_age, p.seats, c.carrier_late_rate_7d, o.origin_late_rate_7d,
    (f.arr_delay > 15)::BIGINT AS is_late
  FROM flights f
  LEFT JOIN weather w USING (origin, time_hour)
  LEFT JOIN planes p USING (tailnum)
  LEFT JOIN carrier_rate c USING (carrier, flight_date)
  LEFT JOIN origin_rate o USING (origin, flight_date)
  WHERE f.flight_date >= DATE '{first}' AND f.flight_date < DATE '{end}'
) TO '{out}' (FORMAT parquet, PARTITION_BY (flight_date));
"""


def duckdb_one(root: Path) -> dict[str, Any]:
    import duckdb

    out = root / "duckdb_features"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    con.execute(DUCKDB_SQL.format(raw=root / "raw", out=out, first=FIRST_DAY.isoformat(), end=YEAR_END.isoformat()))
    seconds = time.perf_counter() - t0
    (rows_out,) = con.execute(f"SELECT count(*) FROM read_parquet('{out}/*/*.parquet')").fetchone()
    return {"seconds": round(seconds, 1), "rows_out": rows_out, "peak_mib": round(_self_peak_mib())}


DAILY_RUN = dt.date(2013, 6, 16)


def daily_stage(root: Path) -> dict[str, Any]:
    """Seconds of one scheduled run's features stage (default window, every day already in the store),
    submitted with spark-submit through the provider's hook to local[*] and to a running standalone cluster."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from retrainer.core.config import RunConfig
    from retrainer.data import features_submission
    from retrainer.devtools.spark_standalone import StandaloneCluster
    from retrainer.stages.check_raw import check_raw_days

    cfg = RunConfig.build(date=DAILY_RUN, data_root=str(root), spark_master="local[*]")
    check_raw_days(cfg)
    out = {}
    with StandaloneCluster.start(root / "standalone") as cluster:
        targets = {"local": '{"conn_type": "spark", "host": "local[*]"}', "standalone": cluster.master_url}
        for name, uri in targets.items():
            os.environ["AIRFLOW_CONN_BENCH_SPARK"] = uri
            features_submission.before_submit(cfg)
            t0 = time.perf_counter()
            hook = SparkSubmitHook(conn_id="bench_spark", **features_submission.submit_settings(cfg))
            hook.submit(features_submission.application())
            out[name] = round(time.perf_counter() - t0, 1)
            out[f"{name}_days_computed"] = len(features_submission.result_of(cfg).store_days_computed)
    return out


def _child(kind: str, root: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, f"--{kind}-one", str(root)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} at {root} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--root", type=Path, default=HERE / ".data")
    parser.add_argument("--spark-one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--duckdb-one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spark_one:
        print(json.dumps(spark_one(args.spark_one)))
        return
    if args.duckdb_one:
        print(json.dumps(duckdb_one(args.duckdb_one)))
        return
    results = []
    for k in args.scales:
        root = args.root / f"x{k}"
        t0 = time.perf_counter()
        rows_in = land(root, k)
        landed = time.perf_counter() - t0
        spark, duck = _child("spark", root), _child("duckdb", root)
        row = {"scale": k, "rows_in": rows_in, "land_seconds": round(landed, 1), "spark": spark, "duckdb": duck}
        print(json.dumps(row), flush=True)
        results.append(row)
    base = results[0]["spark"]["driver_jvm_peak_mib"]
    lines = [
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}; Spark local[*], DuckDB threads = cores; full year "
        f"({FIRST_DAY}..{YEAR_END - dt.timedelta(days=1)}), fresh process per engine and scale.",
        "",
        "| scale | flights in | Spark s | Spark rows/s | DuckDB s | Spark / DuckDB | driver JVM peak MiB "
        "(vs 1x) | Python driver MiB | one new day s | rows out (Spark = DuckDB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for r in results:
        s, d = r["spark"], r["duckdb"]
        lines.append(
            f"| {r['scale']}x | {r['rows_in']:,} | {s['seconds']} | {s['rows_out'] / s['seconds']:,.0f} | "
            f"{d['seconds']} | {s['seconds'] / d['seconds']:.1f}x | {s['driver_jvm_peak_mib']:,} "
            f"({s['driver_jvm_peak_mib'] / base:.2f}x) | {s['python_peak_mib']} | {s['one_new_day_seconds']} | "
            f"{s['rows_out']:,} {'=' if s['rows_out'] == d['rows_out'] else '!= ' + format(d['rows_out'], ',')} |"
        )
    if 1 in args.scales:
        daily = daily_stage(args.root / "x1")
        lines += [
            "",
            f"Features stage of the scheduled run dated {DAILY_RUN} (28-day window, every day already in the "
            f"store), spark-submit through the provider: to local[*] {daily['local']} s, to a running standalone "
            f"cluster {daily['standalone']} s (both start a driver JVM; target 5 s). Days computed: "
            f"{daily['local_days_computed']} and {daily['standalone_days_computed']}.",
        ]
    table = "\n".join(lines)
    print(table)
    (HERE / "SPARK_FEATURES.md").write_text(f"# Spark features vs DuckDB (bench/spark_features.py)\n\n{table}\n")


if __name__ == "__main__":
    main()
