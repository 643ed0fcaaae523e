"""Drift histograms summed in Arrow batches: bins, nulls, categories as Spark casts them, and the reference's
bins reused, on a small Parquet folder (no Spark: the deciles are the only part that needs it)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrainer.data import drift
from retrainer.spec.contract import Column, Contract, DType, Role, TableRules


def _contract() -> Contract:
    return Contract(
        name="t",
        columns=(
            Column("d", DType.DATE, Role.KEY),
            Column("x", DType.FLOAT64, Role.NUMERIC, nullable=True),
            Column("hour", DType.INT64, Role.CATEGORICAL, nullable=True),
            Column("y", DType.INT64, Role.LABEL),
        ),
        table=TableRules("d", 1, 10, 0.0, 1.0, 0.0, 1.0),
    )


@pytest.fixture
def split(tmp_path: Path) -> Path:
    """Two part files (so batches are summed): x = 0..9 and a null, hour = 5, 5, 7, null, ..."""
    folder = tmp_path / "train"
    folder.mkdir()
    x = [float(i) for i in range(10)] + [None]
    hour = [5, 5, 7, None, 5, 6, 6, 5, 7, 9, 5]
    for i, part in enumerate((slice(0, 6), slice(6, 11))):
        table = pa.table({"x": pa.array(x[part], pa.float64()), "hour": pa.array(hour[part], pa.int64()),
                          "y": pa.array([0] * len(x[part]), pa.int64())})  # fmt: skip
        pq.write_table(table, folder / f"part-{i}.parquet")
    return folder


def test_values_fall_in_the_bin_above_an_equal_edge_and_nulls_apart(split: Path) -> None:
    prof = drift.profile(split, _contract(), edges={"x": [2.0, 5.0]})
    x = prof["numeric"]["x"]
    assert prof["rows"] == 11
    # below 2: 0, 1; [2, 5): 2, 3, 4; 5 and above: 5..9; one null
    assert [round(f * 11) for f in x["fractions"]] == [2, 3, 5] and round(x["null"] * 11) == 1
    assert sum(x["fractions"]) + x["null"] == pytest.approx(1.0)


def test_integer_categories_are_counted_as_spark_casts_them_to_text(split: Path) -> None:
    hours = drift.profile(split, _contract(), edges={"x": []})["categorical"]["hour"]
    assert list(hours)[:2] == ["5", "6"]  # by frequency, then value; "5" not "5.0" although the column has nulls
    assert round(hours["5"] * 11) == 5 and round(hours[drift.NULL_BIN] * 11) == 1 and hours[drift.OTHER_BIN] == 0


def test_a_reference_fixes_the_bins_and_the_categories(split: Path) -> None:
    reference = {"numeric": {"x": {"edges": [4.5]}}, "categorical": {"hour": {"5": 0.5, "9": 0.1}}}
    prof = drift.profile(split, _contract(), reference=reference)
    assert prof["numeric"]["x"]["edges"] == [4.5]
    assert [round(f * 11) for f in prof["numeric"]["x"]["fractions"]] == [5, 5]
    hours = prof["categorical"]["hour"]
    assert set(hours) == {"5", "9", drift.OTHER_BIN, drift.NULL_BIN}
    assert round(hours[drift.OTHER_BIN] * 11) == 4  # 6, 6, 7, 7
    assert drift.drift(reference | {"numeric": {"x": prof["numeric"]["x"]}}, prof)["x"] == 0.0


def test_without_edges_or_a_reference_it_refuses(split: Path) -> None:
    with pytest.raises(ValueError, match="bin edges"):
        drift.profile(split, _contract())
