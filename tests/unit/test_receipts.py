"""Receipts: the one handoff between tasks. A result is read from the run folder only if it is still the one
the upstream task saved; anything else is refused with the file named."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from retrainer.core import atomic
from retrainer.core.layout import RunLayout
from retrainer.core.receipts import Receipt, ReceiptMismatch
from retrainer.core.results import ExportResult, RegistrationResult


def _saved(tmp_path) -> tuple[RunLayout, ExportResult, Receipt]:
    layout = RunLayout.for_run(tmp_path, "flight_delay", dt.date(2013, 6, 1))
    result = ExportResult(saved_model_uri="/m", verified_rows=3, max_abs_diff=1e-7, serving_inputs={"x": "float"})
    path = layout.save(result)
    return layout, result, Receipt.issue(result, path)


def test_a_receipt_is_small_and_redeems_the_saved_result(tmp_path) -> None:
    layout, result, receipt = _saved(tmp_path)
    over_xcom = json.loads(json.dumps(receipt.to_dict()))  # what XCom stores
    assert set(over_xcom) == {"type", "path", "digest"} and over_xcom["type"] == "ExportResult"
    assert Receipt.from_dict(over_xcom).redeem(ExportResult) == result
    assert layout.load(ExportResult) == result  # the run folder is the record


def test_a_result_rewritten_after_the_handoff_is_refused_by_name(tmp_path) -> None:
    layout, result, receipt = _saved(tmp_path)
    layout.save(ExportResult(**{**result.to_dict(), "saved_model_uri": "/another/runs/model"}))
    with pytest.raises(ReceiptMismatch, match=r"export\.json changed after the export stage handed it on"):
        receipt.redeem(ExportResult)


def test_formatting_does_not_count_but_a_missing_file_and_a_wrong_type_do(tmp_path) -> None:
    layout, result, receipt = _saved(tmp_path)
    path = layout.path_of(ExportResult)
    atomic.write_text(path, json.dumps(json.loads(path.read_text()), indent=7))  # same content, other layout
    assert receipt.redeem(ExportResult) == result
    with pytest.raises(ReceiptMismatch, match="where a RegistrationResult was expected"):
        receipt.redeem(RegistrationResult)
    path.unlink()
    with pytest.raises(ReceiptMismatch, match="is gone since the export stage saved it"):
        receipt.redeem(ExportResult)


def test_anything_but_a_receipt_from_xcom_is_refused() -> None:
    with pytest.raises(ReceiptMismatch, match="expected a receipt"):
        Receipt.from_dict({"saved_model_uri": "/m"})  # an old-style full result
