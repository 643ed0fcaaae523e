"""The bad-input matrix: one landed day broken the way upstream feeds break, run through the pipeline.

Each case copies the landed days (with their raw-gate records, so only the broken file is scanned
again), breaks one file, runs ``run_pipeline`` against a registry that already has a champion, and
checks three things: the run stops at the right gate, the message names the problem (source, day,
check, observed value), and the champion did not move (no version was even registered). Cases the
pipeline must absorb (BOM/CRLF, reordered and extra columns, a couple of malformed lines) are shown to
pass the gate with the same features, or with the bad rows quarantined and counted.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from retrainer import registry
from retrainer.core.layout import RunLayout, quarantine_file, raw_dim, raw_gate_record, raw_partition
from retrainer.core.results import FeaturesResult, GateReport, TrainingResult
from retrainer.runners.pipeline import run_pipeline
from retrainer.stages.check_raw import RawDataRejected, check_raw_days
from retrainer.stages.features import build_features
from retrainer.stages.validate import ValidationFailed, validate_features
from retrainer.workloads.flight_delay import WORKLOAD
from support import arrive_later, small_config

Rows = list[list[str]]
MODEL = "flight_delay"


@pytest.fixture(scope="module")
def baseline(spark, landed: Path, tmp_path_factory) -> tuple[Path, str]:
    """A landed copy gated once, and a registry whose champion was trained on it."""
    root = tmp_path_factory.mktemp("matrix") / "data"
    shutil.copytree(landed / "raw", root / "raw")
    tracking = f"sqlite:///{root.parent / 'mlflow.db'}"
    result = run_pipeline(small_config(root, tracking))
    assert result.registration.promoted
    return root, tracking


@pytest.fixture
def case_root(baseline: tuple[Path, str], tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(baseline[0] / "raw", root / "raw")
    return root


def _rows(path: Path) -> Rows:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _write(path: Path, rows: Rows) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def _set(column: str, value: Callable[[str], str], every: int = 1, limit: int | None = None) -> Callable[[Rows], Rows]:
    def edit(rows: Rows) -> Rows:
        i = rows[0].index(column)
        out, changed = [rows[0]], 0
        for n, r in enumerate(rows[1:]):
            if n % every == 0 and (limit is None or changed < limit):
                r = r[:i] + [value(r[i])] + r[i + 1 :]
                changed += 1
            out.append(r)
        return out

    return edit


def _drop(column: str) -> Callable[[Rows], Rows]:
    return lambda rows: [[v for i, v in enumerate(r) if i != rows[0].index(column)] for r in rows]


def _rename(old: str, new: str) -> Callable[[Rows], Rows]:
    return lambda rows: [[new if v == old else v for v in rows[0]], *rows[1:]]


def _hours(v: str) -> str:
    return v if v == "NA" else f"{float(v) / 60:.2f}"


def _celsius(v: str) -> str:
    return v if v == "NA" else f"{(float(v) - 32) * 5 / 9:.2f}"


def _plus_hours(hours: int) -> Callable[[str], str]:
    def shift(v: str) -> str:
        t = dt.datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ") + dt.timedelta(hours=hours)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    return shift


def _malformed(lines: int) -> Callable[[Rows], Rows]:
    return lambda rows: [rows[0]] + [r[:5] if n < lines else r for n, r in enumerate(rows[1:])]


def _later(minutes: int) -> Callable[[str], str]:
    return lambda v: v if v == "NA" else str(float(v) + minutes)


# (id, source, edit of the rows (or None: bytes edit), expected error, message pattern)
RAW_GATE = RawDataRejected
CASES = [
    ("missing-column", "flights", _drop("carrier"), RAW_GATE,
     r"flights: missing required columns outside \[0, 0\] on {day}: 1 \(.*lacks \['carrier'\]"),
    ("renamed-column", "flights", _rename("arr_delay", "arrival_delay"), RAW_GATE,
     r"lacks \['arr_delay'\]"),
    ("wrong-type", "flights", _set("distance", lambda v: "far"), RAW_GATE,
     r"flights: share of rows that do not parse \(quarantined\) outside \[0, 0.01\] on {day}: 1 .*distance is not "
     r"double: far"),
    ("null-in-required-field", "flights", _set("origin", lambda v: "NA", every=100), RAW_GATE,
     r"flights: null share of origin outside \[0, 0\] on {day}: 0\.01"),
    ("out-of-range", "flights", _set("sched_dep_time", lambda v: "2600", every=50), RAW_GATE,
     r"flights: share of sched_dep_time values not in \[0, 2359\] outside \[0, 0\] on {day}: 0\.02"),
    ("delays-in-hours", "flights", _set("arr_delay", _hours), RAW_GATE,
     r"flights: standard deviation of arr_delay \(wrong units\?\) outside \[5, 300\] on {day}: 0\.\d+"),
    ("celsius-temperatures", "weather", _set("temp", _celsius), RAW_GATE,
     r"weather: distance of the day's mean temp from its neighbours' \(wrong units\?\) outside \[0, 26\] on {day}"),
    ("unknown-category", "flights", _set("carrier", lambda v: "ZZ", every=10), RAW_GATE,
     r"flights: share of carrier not in .* on {day}: 0\.1"),
    ("empty-file", "weather", lambda rows: [], RAW_GATE,
     r"weather: missing required columns outside \[0, 0\] on {day}: 11 .*header \[\]"),
    ("header-only", "flights", lambda rows: rows[:1], RAW_GATE,
     r"flights: rows per day outside \[300, 1500\] on {day}: 0"),
    ("duplicate-rows", "flights", lambda rows: rows + rows[1:41], RAW_GATE,
     r"flights: rows repeating the key .* on {day}: 40"),
    ("duplicated-day", "weather", lambda rows: rows + rows[1:], RAW_GATE,
     r"weather: rows relative to the median of the 7 days either side outside \[0.5, 1.5\] on {day}: 2"),
    ("rows-dated-another-day", "flights", _set("day", lambda v: str(int(v) % 28 + 1), limit=3), RAW_GATE,
     r"flights: rows not dated on their partition's day outside \[0, 0\] on {day}: 3 \(e\.g\. 2013,"),
    ("impossible-date", "flights", _set("month", lambda v: "13", limit=2), RAW_GATE,
     r"flights: rows not dated on their partition's day outside \[0, 0\] on {day}: 2"),
    ("weather-time-zone-shift", "weather", _set("time_hour", _plus_hours(5)), RAW_GATE,
     r"weather: rows not dated on their partition's day outside \[0, 0\] on {day}: 1[05]"),
    ("weather-all-missing", "weather", _set("temp", lambda v: "NA"), RAW_GATE,
     r"weather: null share of temp outside \[0, 0.25\] on {day}: 1"),
    ("malformed-lines", "flights", _malformed(30), RAW_GATE,
     r"flights: share of rows that do not parse \(quarantined\) .* on {day}: 0\.03\d* \(30 of \d+ rows, e\.g\. "
     r"malformed line"),
    # Wrong but plausible values, caught by the facts a row states twice (cross-field rules of the raw contract).
    ("label-ten-minutes-late", "flights", _set("arr_delay", _later(10)), RAW_GATE,
     r"flights: share of rows breaking 'arr_delay is arr_time - sched_arr_time in minutes' outside \[0, 0\] on "
     r"{day}: 0\.9\d* \(\d+ of \d+ rows, e\.g\. 2013,"),
    ("departure-delays-in-hours", "flights", _set("dep_delay", _hours), RAW_GATE,
     r"flights: share of rows breaking 'dep_delay is dep_time - sched_dep_time in minutes' outside \[0, 0\]"),
    ("distance-in-kilometres", "flights", _set("distance", lambda v: f"{float(v) * 1.609:.0f}"), RAW_GATE,
     r"flights: share of rows breaking 'distance \(miles\) over air_time \(minutes\) is at most 700 mph' outside "
     r"\[0, 0\.005\] on {day}: 0\.\d+"),
    ("time-hour-an-hour-off", "flights", _set("time_hour", _plus_hours(1)), RAW_GATE,
     r"flights: share of rows breaking 'time_hour is the scheduled hour in New York' outside \[0, 0\] on {day}: 1"),
    ("garbage-tail-numbers", "flights", _set("tailnum", lambda v: v if v == "NA" else "#" + v[::-1], every=10),
     RAW_GATE, r"flights: share of rows breaking 'tailnum is N and 1-5 letters or digits' outside \[0, 0\.01\] on "
               r"{day}: 0\.\d+ \(\d+ of \d+ rows, e\.g\. .*#"),
    ("garbage-destinations", "flights", _set("dest", lambda v: v.lower(), every=25), RAW_GATE,
     r"flights: share of rows breaking 'dest is three capital letters' outside \[0, 0\] on {day}: 0\.0[34]"),
    ("shifted-label-distribution", "flights", lambda rows: arrive_later(rows, 60), ValidationFailed,
     r"\[per_day\] mean of is_late per day outside \[0.01, 0.9\] on {day}: 0\.9\d"),
    # The dimension table every day's features join (read whole by the gate on every run).
    ("planes-empty-file", "dims/planes", lambda rows: [], RAW_GATE,
     r"planes: missing required columns outside \[0, 0\] on dims/planes\.csv: 3 \(lacks .* header \[\] "
     r"\(EmptyDataError"),
    ("planes-missing-column", "dims/planes", _drop("seats"), RAW_GATE,
     r"planes: missing required columns outside \[0, 0\] on dims/planes\.csv: 1 \(lacks \['seats'\]"),
    ("planes-duplicate-tailnum", "dims/planes", lambda rows: rows + rows[1:4], RAW_GATE,
     r"planes: values of the key \['tailnum'\] on more than one row outside \[0, 0\] on dims/planes\.csv: 3 "
     r"\(e\.g\. \[{{'tailnum': "),
    ("planes-garbage-seats", "dims/planes", _set("seats", lambda v: "many", every=20), RAW_GATE,
     r"planes: share of rows with a value that does not parse outside \[0, 0\.01\] on dims/planes\.csv: 0\.05\d* "
     r"\(seats e\.g\. \['many'"),
    ("planes-years-out-of-range", "dims/planes", _set("year", lambda v: v if v == "NA" else "1850", every=10),
     RAW_GATE, r"planes: share of year values not in \[1940, 2014\] outside \[0, 0\.01\] on dims/planes\.csv: 0\.1"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "edit", "error", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_broken_day_stops_at_its_gate_and_the_champion_stays(
    baseline: tuple[Path, str], case_root: Path, source: str, edit, error: type[Exception], pattern: str
) -> None:
    _, tracking = baseline
    cfg = small_config(case_root, tracking)
    day = cfg.window.eval_start
    dims, name = source.split("/") if "/" in source else ("", "")
    path = raw_dim(case_root, name) if dims else raw_partition(case_root, source, day)
    _write(path, edit(_rows(path)))
    before = registry.aliases(tracking, MODEL)
    versions = _versions(tracking)

    with pytest.raises(error) as err:
        run_pipeline(cfg)
    message = str(err.value)
    assert re.search(pattern.format(day=day), message), message
    assert registry.aliases(tracking, MODEL) == before  # champion (and challenger) unchanged
    assert _versions(tracking) == versions  # nothing was trained or registered
    assert RunLayout.of(cfg).load_optional(TrainingResult) is None


def _versions(tracking: str) -> list[str]:
    client = registry.configure(tracking)
    return sorted(v.version for v in client.search_model_versions(f"name = '{MODEL}'"))


def test_unparseable_rows_are_quarantined_with_their_reason(baseline: tuple[Path, str], case_root: Path) -> None:
    cfg = small_config(case_root, baseline[1])
    day = cfg.window.eval_start
    path = raw_partition(case_root, "flights", day)
    _write(path, _set("distance", lambda v: "far")(_rows(path)))
    with pytest.raises(RawDataRejected):
        check_raw_days(cfg)
    quarantined = _rows(quarantine_file(case_root, "flights", day))
    assert quarantined[0] == ["problem", "line"]
    assert len(quarantined) - 1 == len(_rows(path)) - 1
    assert all(r[0] == "distance is not double: far" for r in quarantined[1:])


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda b: b"\xef\xbb\xbf" + b, id="utf8-bom"),
        pytest.param(lambda b: b.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(lambda b: b"\xef\xbb\xbf" + b.replace(b"\n", b"\r\n"), id="bom-and-crlf"),
        pytest.param(None, id="reordered-and-extra-columns"),
    ],
)
def test_absorbed_encodings_and_layouts_give_the_same_features(
    baseline: tuple[Path, str], case_root: Path, encode
) -> None:
    cfg = small_config(case_root, baseline[1])
    clean = RunLayout.of(small_config(baseline[0], baseline[1])).load(FeaturesResult)  # the same bytes, built once
    for source in ("flights", "weather"):
        path = raw_partition(case_root, source, cfg.window.eval_start)
        if encode is None:
            rows = _rows(path)
            order = list(reversed(range(len(rows[0]))))
            _write(path, [[r[i] for i in order] + ["extra"] for r in rows])
        else:
            path.write_bytes(encode(path.read_bytes()))
    gate = check_raw_days(cfg)
    assert len(gate.scanned) == 2 and gate.quarantined == {}
    again = build_features(gate, cfg)  # no "lacks column 'year'", no shifted values
    assert (again.rows, again.train_fingerprint) == (clean.rows, clean.train_fingerprint)
    assert again.store_digests == clean.store_digests  # every day's stored features, the edited day's included
    assert validate_features(again, cfg).report.success  # and the same features pass validation


def test_a_few_malformed_lines_are_quarantined_and_counted_not_fatal(
    baseline: tuple[Path, str], case_root: Path
) -> None:
    cfg = small_config(case_root, baseline[1])
    day = cfg.window.eval_start
    path = raw_partition(case_root, "flights", day)
    rows = _rows(path)
    _write(path, _malformed(2)(rows))
    gate = check_raw_days(cfg)
    assert gate.quarantined == {f"flights/{day}": 2}
    assert len(_rows(quarantine_file(case_root, "flights", day))) == 3
    features = build_features(gate, cfg)  # reads the other rows; the two are not silently turned into nulls
    assert features.rows["eval"] > 0


def test_an_unchanged_day_is_not_scanned_again_and_a_changed_one_is(
    baseline: tuple[Path, str], case_root: Path
) -> None:
    cfg = small_config(case_root, baseline[1])
    first = check_raw_days(cfg)
    days = [k for k in first.files if not k.startswith("dims/")]
    assert first.scanned == [] and first.reused == len(days)  # records copied with the files
    assert set(first.files) - set(days) == {"dims/planes"}  # read whole every run; its digest handed on too
    path = raw_partition(case_root, "weather", cfg.window.train_start)
    rows = _rows(path)
    _write(path, rows[:-1])  # one reading fewer: a changed file
    second = check_raw_days(cfg)
    assert second.scanned == [f"weather/{cfg.window.train_start}"]
    # A record cut to nothing (a full disk) or damaged is no record: the day is scanned again, not wedged.
    empty, damaged = (cfg.window.train_start + dt.timedelta(days=n) for n in (1, 2))
    raw_gate_record(case_root, "flights", empty, WORKLOAD.raw.name).write_text("")
    raw_gate_record(case_root, "flights", damaged, WORKLOAD.raw.name).write_text('{"digest": "ab')
    third = check_raw_days(cfg)
    assert sorted(third.scanned) == [f"flights/{empty}", f"flights/{damaged}"]
    assert check_raw_days(cfg).scanned == []  # rewritten whole


# --- drift against the champion's training data ------------------------------------------------------


def test_psi_is_zero_for_equal_distributions_and_grows_with_the_shift() -> None:
    from retrainer.data.drift import psi

    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    small, large = psi([0.25] * 4, [0.3, 0.2, 0.25, 0.25]), psi([0.25] * 4, [0.7, 0.1, 0.1, 0.1])
    assert 0 < small < 0.1 < 0.25 < large
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) > 0.1  # a bin that appears counts (no division by zero)


def test_a_run_records_drift_against_the_champion_in_its_report_summary_and_mlflow(
    baseline: tuple[Path, str], case_root: Path
) -> None:
    import mlflow

    from retrainer.runners.run_summary import run_summary
    from retrainer.workloads import get_workload

    tracking = baseline[1]
    champion = registry.aliases(tracking, MODEL)["champion"]
    cfg = small_config(case_root, tracking, date=dt.date(2013, 2, 6))
    result = run_pipeline(cfg)
    report = result.validation.report
    checked = {c.name for c in get_workload(MODEL).contract.features}
    assert report.drift is not None and set(report.drift) == checked
    assert report.drift_baseline == f"champion v{champion}"
    assert all(v >= 0 for v in report.drift.values())
    assert report.drift["distance"] < 0.1 and report.drift["carrier"] < 0.1  # windows one day apart
    assert "drift" in report.evaluated
    summary = run_summary(cfg)
    assert f"PSI against champion v{champion}" in summary
    run = mlflow.MlflowClient(tracking_uri=tracking).get_run(result.registration.mlflow_run_id)
    assert run.data.metrics["psi_carrier"] == pytest.approx(report.drift["carrier"])
    assert run.data.tags["drift_baseline"] == report.drift_baseline
    assert run.data.tags["validation.checks_could_fail"] == str(report.could_fail)


def test_critical_drift_fails_the_run_and_a_warning_does_not(baseline: tuple[Path, str], case_root: Path) -> None:
    """Every flight of the window attributed to one airport: each day looks valid, the mix is not."""
    tracking = baseline[1]
    cfg = small_config(case_root, tracking)
    for day in cfg.window.days():
        path = raw_partition(case_root, "flights", day)
        _write(path, _set("origin", lambda v: "EWR")(_rows(path)))
    before = registry.aliases(tracking, MODEL)
    with pytest.raises(ValidationFailed, match=r"\[drift\] PSI of origin against champion v\d+'s training data "
                       r"outside \[0, 1\] on \[2013-01-29, 2013-02-03\): \d+\.\d+"):  # fmt: skip
        run_pipeline(cfg)
    assert registry.aliases(tracking, MODEL) == before
    report = RunLayout.of(cfg).load(GateReport)
    assert report.drift["origin"] > 1.0
    assert any("[drift] PSI of origin" in w for w in report.warnings)  # above its warning bound too


def test_a_record_is_reused_only_while_the_source_declaration_is_the_same() -> None:
    import dataclasses

    from retrainer.data.raw_scan import source_fingerprint as _source_fingerprint
    from retrainer.workloads._nyc_flights import WEATHER

    base = _source_fingerprint(WEATHER)
    assert _source_fingerprint(dataclasses.replace(WEATHER, min_rows=1)) == base  # a bound: applied, not stored
    humid = WEATHER.column("humid")
    with_units = tuple(dataclasses.replace(c, std_per_day=(1.0, 50.0)) if c is humid else c for c in WEATHER.columns)
    assert _source_fingerprint(dataclasses.replace(WEATHER, columns=with_units)) != base  # needs a new statistic
    assert _source_fingerprint(dataclasses.replace(WEATHER, key=("origin",))) != base
    from retrainer.spec.raw_contract import RowRule

    rule = RowRule("dry_when_humid", "humid < 90 OR precip >= 0", "precipitation is not negative")
    with_rule = _source_fingerprint(dataclasses.replace(WEATHER, rules=(rule,)))
    assert with_rule != base  # a rule added later rescans the stored days instead of passing them unchecked
    loosened = dataclasses.replace(rule, max_share=0.5)  # its bound: applied, not stored
    assert _source_fingerprint(dataclasses.replace(WEATHER, rules=(loosened,))) == with_rule
