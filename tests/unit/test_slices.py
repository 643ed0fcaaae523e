"""The slice gate's arithmetic: exact AUC and RMSE under bootstrap weights, which slices are gated, which hold."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from retrainer.evaluation.slices import GateSettings, KeptRows, auc_weighted, holding, rmse_weighted, sliced
from retrainer.runners.run_summary import slice_lines
from retrainer.spec.slices import SliceSpec
from retrainer.workloads._nyc_flights import HOUR_BUCKETS, SLICES

SETTINGS = GateSettings(min_rows=200, max_drop=0.05, resamples=100, seed=7)


def _rows(n: int = 3000, seed: int = 0) -> tuple[KeptRows, np.ndarray, np.ndarray]:
    """Rows of three origins, a tiny carrier, every hour; a champion and a new model of the same skill."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    champion = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    new = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    carrier = np.where(np.arange(n) < 50, "OO", rng.choice(["AA", "UA"], n))
    batch = pa.record_batch({
        "origin": rng.choice(["EWR", "JFK", "LGA"], n), "carrier": carrier,
        "sched_dep_hour": rng.integers(0, 24, n),
    })  # fmt: skip
    return KeptRows(SLICES), batch, np.stack([y, new, champion])


def _kept(batch: pa.RecordBatch, y: np.ndarray, p: np.ndarray) -> KeptRows:
    kept = KeptRows(SLICES)
    half = len(y) // 2  # in two batches, as evaluation streams them
    kept.add(batch.slice(0, half), y[:half], p[:half])
    kept.add(batch.slice(half), y[half:], p[half:])
    return kept


def test_weighted_auc_is_sklearns_auc_of_the_resampled_rows_ties_included() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500).astype(float)
    p = np.round(rng.random(500) * 0.5 + 0.3 * y, 2)  # many ties
    assert auc_weighted(y, p, np.ones((1, 500)))[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    draws = rng.integers(0, 500, 500)
    counts = np.bincount(draws, minlength=500)[None, :]
    assert auc_weighted(y, p, counts)[0] == pytest.approx(roc_auc_score(y[draws], p[draws]), abs=1e-12)
    assert np.isnan(auc_weighted(np.ones(4), np.arange(4.0), np.ones((1, 4))))[0]  # one class: undefined


def test_weighted_rmse_is_the_rmse_of_the_resampled_rows() -> None:
    rng = np.random.default_rng(2)
    y, p = rng.normal(size=300), rng.normal(size=300)
    draws = rng.integers(0, 300, 300)
    counts = np.bincount(draws, minlength=300)[None, :]
    assert rmse_weighted(y, p, counts)[0] == pytest.approx(np.sqrt(np.mean((p[draws] - y[draws]) ** 2)))


def test_equal_models_hold_nothing_and_intervals_surround_the_estimates() -> None:
    _, batch, (y, new, champion) = _rows()
    report = sliced("auc", True, _kept(batch, y, new), champion, SETTINGS)
    overall = report["overall"]
    assert overall["rows"] == 3000 and overall["new"] == pytest.approx(roc_auc_score(y, new), abs=1e-6)
    assert overall["new_interval"][0] < overall["new"] < overall["new_interval"][1]
    assert overall["gain_interval"][0] < overall["gain"] < overall["gain_interval"][1]
    names = {(s["slice"], s["value"]) for s in report["slices"]}
    assert {("origin", "EWR"), ("carrier", "OO"), ("sched_hour", "20-04")} <= names
    assert holding(report) == [] and not any(s["holds"] for s in report["slices"])


def test_a_slice_made_worse_holds_the_run_and_is_named_with_its_numbers() -> None:
    _, batch, (y, new, champion) = _rows()
    worse = new.copy()
    ewr = np.asarray(batch.column("origin")) == "EWR"
    worse[ewr] = 1 - worse[ewr]  # the ranking inverted at one airport only
    report = sliced("auc", True, _kept(batch, y, worse), champion, SETTINGS)
    held = holding(report)  # the carriers and hours hold too: a third of their rows are EWR's
    ewr_line = next(line for line in held if line.startswith("origin=EWR"))
    assert ewr_line.startswith(f"origin=EWR ({int(ewr.sum())} rows): auc 0.") and "> max_slice_drop 5.0%" in ewr_line
    assert not any(line.startswith(("origin=JFK", "origin=LGA")) for line in held)
    ewr_row = next(s for s in report["slices"] if (s["slice"], s["value"]) == ("origin", "EWR"))
    assert ewr_row["drop"] > 0.3 and ewr_row["gain_interval"][1] < 0  # the whole interval below zero
    lines = slice_lines(report)
    assert "largest drop origin=EWR" in lines[1] and "holds the run" in lines[1]


def test_small_slices_and_one_class_slices_are_reported_never_gated() -> None:
    _, batch, (y, new, champion) = _rows()
    oo = np.asarray(batch.column("carrier")) == "OO"
    worse = new.copy()
    worse[oo] = 1 - worse[oo]  # 50 rows: far worse, but too few to hold a model on
    report = sliced("auc", True, _kept(batch, y, worse), champion, SETTINGS)
    oo_row = next(s for s in report["slices"] if s["value"] == "OO")
    assert oo_row["rows"] == 50 and oo_row["drop"] > 0.3 and not oo_row["gated"] and not oo_row["holds"]
    y_one = y.copy()
    y_one[oo] = 1.0  # then OO has one class: no AUC at all, and still no error
    big = GateSettings(min_rows=10, max_drop=0.05, resamples=20, seed=1)
    report = sliced("auc", True, _kept(batch, y_one, new), champion, big)
    oo_row = next(s for s in report["slices"] if s["value"] == "OO")
    assert oo_row["positives"] == 50 and oo_row["new"] is None and not oo_row["gated"]


def test_the_drop_is_relative_and_follows_the_metrics_direction() -> None:
    """RMSE: lower is better; 40 -> 42 minutes on a slice is a 5 % drop, held above 4 %, not above 6 %."""
    rng = np.random.default_rng(3)
    n = 2000
    y = rng.normal(0, 50, n)
    noise = rng.normal(0, 1, n)
    champion = y + 40 * noise
    new = y + 42 * noise
    batch = pa.record_batch({"origin": np.full(n, "JFK"), "carrier": np.full(n, "AA"),
                             "sched_dep_hour": np.full(n, 8)})  # fmt: skip
    for max_drop, holds in ((0.04, True), (0.06, False)):
        settings = GateSettings(min_rows=100, max_drop=max_drop, resamples=20, seed=1)
        report = sliced("rmse", False, _kept(batch, y, new), champion, settings)
        jfk = next(s for s in report["slices"] if s["value"] == "JFK")
        assert jfk["gain"] < 0 and jfk["drop"] == pytest.approx(0.05, abs=1e-3)
        assert jfk["holds"] is holds


def test_hour_buckets_cover_the_day_once_and_wrap_past_midnight() -> None:
    hours = [h for _, members in HOUR_BUCKETS for h in members]
    assert sorted(hours) == list(range(24))
    spec = SliceSpec("sched_hour", "sched_dep_hour", groups=HOUR_BUCKETS)
    assert list(spec.labels(np.array([23, 0, 4, 5, 19]))) == ["20-04", "20-04", "20-04", "05-09", "15-19"]


def test_slices_cut_by_model_features_only() -> None:
    """Evaluation reads the model's features and label: a slice column outside them would be missing."""
    from retrainer.workloads import get_workload, workload_names

    for name in workload_names():
        workload = get_workload(name)
        features = {c.name for c in workload.contract.features}
        assert workload.slices and {s.column for s in workload.slices} <= features, name
