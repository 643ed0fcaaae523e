"""Landing zone: one CSV per source and day, the package's columns unchanged, idempotent."""

from __future__ import annotations

import csv
import datetime as dt
import zipfile
from pathlib import Path

from conftest import LAND_END, LAND_START
from retrainer.landing import (
    describe_missing,
    land,
    missing_partitions,
    package_data_dir,
)
from retrainer.layout import raw_dim, raw_partition


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
    days = [LAND_START + dt.timedelta(days=i) for i in range((LAND_END - LAND_START).days + 1)]
    assert missing_partitions(landed, days) == {}
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


def test_missing_partitions_are_listed_by_source_and_date(tmp_path: Path) -> None:
    day = dt.date(2013, 3, 1)
    land(tmp_path, day, day)
    raw_partition(tmp_path, "weather", day).unlink()
    missing = missing_partitions(tmp_path, [day, day + dt.timedelta(days=1)])
    assert missing == {"flights": ["2013-03-02"], "weather": ["2013-03-01", "2013-03-02"]}
    assert "weather: 2013-03-01, 2013-03-02" in describe_missing(missing)


def test_land_refuses_an_inverted_range(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="before"):
        land(tmp_path, dt.date(2013, 2, 1), dt.date(2013, 1, 1))
