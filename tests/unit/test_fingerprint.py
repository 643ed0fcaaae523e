"""The training-set fingerprint names the rows, not the bytes of one particular write of them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrainer.core.fingerprint import folder_fingerprint


def _write(folder: Path, table: pa.Table, footer_note: str) -> Path:
    folder.mkdir()
    # Only the footer differs between writes with different notes, as with parquet-mr's encodings
    # lists, whose order changes from one JVM to the next.
    pq.write_table(table.replace_schema_metadata({"note": footer_note}), folder / "part-00000-x.parquet")
    return folder


def test_same_rows_with_different_footers_have_one_fingerprint(tmp_path: Path) -> None:
    table = pa.table({"carrier": ["AA", "B6", None], "dep_delay": [1.5, None, -3.0]})
    a = _write(tmp_path / "a", table, "written by one JVM")
    b = _write(tmp_path / "b", table, "written by another")
    assert (a / "part-00000-x.parquet").read_bytes() != (b / "part-00000-x.parquet").read_bytes()
    assert folder_fingerprint(a) == folder_fingerprint(b)

    changed = _write(tmp_path / "c", table.set_column(1, "dep_delay", pa.array([1.5, None, -4.0])), "x")
    assert folder_fingerprint(changed) != folder_fingerprint(a)


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    (tmp_path / "part-00000-x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="not a Parquet file"):
        folder_fingerprint(tmp_path)
