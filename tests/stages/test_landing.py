"""Landing zone: one CSV per source and day, the package's columns unchanged, idempotent; and the
raw-input rule that every runner (sensor, CLI, local pipeline) checks before a run reads them."""

from __future__ import annotations

import csv
import datetime as dt
import re
import zipfile
from pathlib import Path

import pytest

from retrainer.core.config import RunConfig
from retrainer.core.layout import raw_dim, raw_partition
from retrainer.core.run_window import days_between
from retrainer.data.landed_files import MissingRawData, check_raw_inputs, describe_missing, missing_raw_inputs
from retrainer.data.landing import land, package_data_dir
from support import LAND_END, LAND_START


def _package_rows(day: dt.date) -> tuple[list[str], list[list[str]]]:
    with zipfile.ZipFile(package_data_dir() / "flights.csv.zip") as zf, zf.open("flights.csv") as fh:
        rows = list(csv.reader(line.decode() for line in fh))
    header = rows[0]
    keep = [r for r in rows[1:] if (int(r[0]), int(r[1]), int(r[2])) == (day.year, day.month, day.day)]
    return header, keep


def test_partitions_hold_exactly_the_package_rows_of_their_day(landed: Path) -> None:
    day = LAND_START + dt.timedelta(days=4)
    header, expected = _package_rows(day)
    with open(raw_partition(landed, "flights", day), newline="") as fh:
        got = list(csv.reader(fh))
    assert got[0] == header
    assert got[1:] == expected
    assert len(expected) > 500


def test_every_day_and_dimension_is_landed(landed: Path) -> None:
    for day in days_between(LAND_START, LAND_END + dt.timedelta(days=1)):
        assert raw_partition(landed, "flights", day).exists() and raw_partition(landed, "weather", day).exists()
    for name in ("planes", "airports", "airlines"):
        assert raw_dim(landed, name).stat().st_size > 0
    assert not raw_partition(landed, "flights", LAND_END + dt.timedelta(days=1)).exists()


def test_landing_twice_replaces_without_duplicates_or_temp_files(tmp_path: Path) -> None:
    day = dt.date(2013, 3, 1)
    land(tmp_path, day, day)
    first = raw_partition(tmp_path, "weather", day).read_bytes()
    land(tmp_path, day, day)
    assert raw_partition(tmp_path, "weather", day).read_bytes() == first
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "temporary files left behind"


def test_missing_raw_inputs_are_listed_by_source_and_date(tmp_path: Path) -> None:
    # a run dated 03-11 with window 3 reads 03-08 .. 03-10 plus 7 days of history: 03-01 .. 03-10
    cfg = RunConfig.build(
        "2013-03-11", "flight_delay", window_days=3, eval_days=1, validation_days=1, data_root=str(tmp_path)
    )
    land(tmp_path, dt.date(2013, 3, 1), dt.date(2013, 3, 9))
    raw_partition(tmp_path, "weather", dt.date(2013, 3, 5)).unlink()
    raw_dim(tmp_path, "airports").unlink()  # not read by this workload: not required
    missing = missing_raw_inputs(cfg)
    assert missing == {"flights": ["2013-03-10"], "weather": ["2013-03-05", "2013-03-10"]}
    assert "weather: 2013-03-05, 2013-03-10" in describe_missing(missing)
    with pytest.raises(MissingRawData, match="flights: 2013-03-10"):
        check_raw_inputs(cfg)
    land(tmp_path, dt.date(2013, 3, 5), dt.date(2013, 3, 10))
    assert check_raw_inputs(cfg) == days_between(dt.date(2013, 3, 1), dt.date(2013, 3, 11))
    raw_dim(tmp_path, "planes").unlink()
    assert missing_raw_inputs(cfg) == {"dims": ["planes.csv"]}


def test_land_refuses_an_inverted_range(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="before"):
        land(tmp_path, dt.date(2013, 2, 1), dt.date(2013, 1, 1))


def test_scale_writes_k_distinct_replicas_of_each_flight_and_the_same_weather(landed: Path, tmp_path: Path) -> None:
    day = LAND_START
    land(tmp_path, day, day, scale=3)

    def rows(root: Path, source: str) -> list[dict[str, str]]:
        with open(raw_partition(root, source, day), newline="") as fh:
            return list(csv.DictReader(fh))

    real, scaled = rows(landed, "flights"), rows(tmp_path, "flights")
    assert len(scaled) == 3 * len(real)
    assert scaled[0::3] == real  # replica 0 is the real row
    keys = {(r["carrier"], r["flight"]) for r in scaled}
    assert len(keys) == len({(r["carrier"], r["flight"]) for r in real}) * 3  # distinct flight numbers
    with open(raw_dim(tmp_path, "planes"), newline="") as fh:
        planes = {r["tailnum"] for r in csv.DictReader(fh)}
    for original, *copies in zip(scaled[0::3], scaled[1::3], scaled[2::3], strict=True):
        for copy in copies:
            if original["tailnum"] in planes:  # another real plane: the planes join still finds it
                assert copy["tailnum"] in planes and copy["tailnum"] != original["tailnum"]
            for column in ("dep_delay", "arr_delay", "air_time"):
                if original[column] != "NA":
                    assert abs(int(copy[column]) - int(original[column])) <= 2
            for delay, clock, scheduled in (("dep_delay", "dep_time", "sched_dep_time"),
                                            ("arr_delay", "arr_time", "sched_arr_time")):  # fmt: skip
                if copy[delay] != "NA":  # the delay is still the clock time minus the scheduled one
                    minutes = [int(copy[c]) // 100 * 60 + int(copy[c]) % 100 for c in (clock, scheduled)]
                    assert (minutes[0] - minutes[1] - int(copy[delay])) % 1440 == 0, (copy, delay)
            if copy["tailnum"] != "NA":
                assert re.fullmatch(r"N[0-9A-Z]{1,5}", copy["tailnum"]), copy["tailnum"]
            assert (copy["origin"], copy["dest"], copy["time_hour"]) == (
                original["origin"], original["dest"], original["time_hour"],
            )  # fmt: skip
    assert rows(tmp_path, "weather") == rows(landed, "weather")
    first = raw_partition(tmp_path, "flights", day).read_bytes()
    land(tmp_path, day, day, scale=3)
    assert raw_partition(tmp_path, "flights", day).read_bytes() == first  # deterministic


def test_land_refuses_a_scale_below_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--scale must be at least 1"):
        land(tmp_path, LAND_START, LAND_START, scale=0)


def test_a_run_past_the_end_of_a_finite_source_fails_at_once_instead_of_waiting(tmp_path: Path) -> None:
    """The reference data ends on 2013-12-31 and `retrainer land` records so: a run that needs a later day
    (the trigger form's default logical date is today) is refused with a message saying why, as bad input that no
    retry or wait can fix; a feed that names no end (or no landing record) still waits for its days."""
    from retrainer.core import atomic
    from retrainer.core.errors import BadData
    from retrainer.core.layout import landed_marker
    from retrainer.data.landed_files import PastTheSource, past_the_source
    from retrainer.data.landing import SOURCE_ENDS, write_landed_marker

    def cfg(day: str) -> RunConfig:
        return RunConfig.build(day, data_root=str(tmp_path), window_days=7, eval_days=2)

    assert past_the_source(cfg("2026-12-07")) is None  # nothing landed: nothing says the feed ends
    write_landed_marker(tmp_path, dt.date(2013, 12, 20), dt.date(2013, 12, 31), {"flights": 12})
    assert atomic.read_json(landed_marker(tmp_path))["source_ends"] == str(SOURCE_ENDS) == "2013-12-31"
    assert past_the_source(cfg("2014-01-01")) is None  # reads raw days up to 2013-12-31
    why = past_the_source(cfg("2026-12-07"))
    assert why and "reads raw days up to 2026-12-06, but its source ends on 2013-12-31" in why
    with pytest.raises(PastTheSource, match="will never land") as refused:
        check_raw_inputs(cfg("2014-01-02"))
    assert isinstance(refused.value, BadData)  # the DAG fails such a task at once, without retries
    record = atomic.read_json(landed_marker(tmp_path))
    atomic.write_json(landed_marker(tmp_path), {k: v for k, v in record.items() if k != "source_ends"})
    assert past_the_source(cfg("2026-12-07")) is None  # a live feed: the sensor waits for the day
