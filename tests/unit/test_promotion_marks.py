"""The promotion module's pure parts: the high-water mark's text and the promotion intent file."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from retrainer.registry import promotion


def test_mark_text_is_the_form_high_water_parses() -> None:
    mark = promotion.Holder("12", dt.date(2013, 6, 8))
    text = promotion.mark_text(mark)
    assert text == "2013-06-08 v12"
    assert re.fullmatch(r"(\d{4}-\d{2}-\d{2}) v(\d+)", text)


def test_mark_text_refuses_a_mark_without_a_date() -> None:
    with pytest.raises(ValueError, match="needs a run date"):
        promotion.mark_text(promotion.Holder("3", None))


def test_intent_is_empty_until_recorded_and_marked_published_only_for_its_version(tmp_path: Path) -> None:
    from retrainer.core import atomic

    path = tmp_path / "promotion_intent.json"
    assert promotion.read_intent(path) == {}
    promotion.mark_published(path, "4")  # nothing recorded: nothing to mark, nothing created
    assert not path.exists()
    atomic.write_json(path, {"version": "4", "champion_before": "3", "decision": "PROMOTE"})
    promotion.mark_published(path, "5")  # another version's announcement does not mark this one
    assert promotion.read_intent(path).get("published") is None
    promotion.mark_published(path, "4")
    assert promotion.read_intent(path) == {
        "version": "4",
        "champion_before": "3",
        "decision": "PROMOTE",
        "published": True,
    }
