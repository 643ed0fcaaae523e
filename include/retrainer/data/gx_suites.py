"""Running contract-derived suites with Great Expectations 1.x and reporting what failed, plainly.

Both gates (the raw gate and the feature validation) describe their checks as GX-free spec dicts
(``contract.py``) over a frame: a Spark DataFrame for the feature table, a small pandas frame of
per-day or per-feature statistics otherwise. This module turns them into suites, runs them through
checkpoints that also build Data Docs, and writes one :class:`GateReport`: failed critical
expectations fail the gate, failed warnings are recorded, checks that hold by construction are
counted apart. A failed expectation on a per-day frame names each offending day and its value.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from retrainer.core import atomic
from retrainer.core.layout import ValidationFiles
from retrainer.core.results import GateReport

RESULT_FORMAT = "BASIC"  # what each expectation's result holds (GX's result_format)


@dataclasses.dataclass
class Suite:
    name: str
    frame: Any  # pandas.DataFrame or pyspark DataFrame
    specs: list[dict[str, Any]]
    # For per-day pandas frames: readable names of the checked columns, and the frame's key column.
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    row_key: str = "date"
    # Extra words for one offending row: (row key, column) -> text (which columns were missing, an example row).
    notes: Mapping[tuple[str, str], str] = dataclasses.field(default_factory=dict)


def expectation(spec: dict[str, Any]) -> Any:
    import great_expectations as gx

    class_name = "".join(part.capitalize() for part in spec["type"].split("_"))
    return getattr(gx.expectations, class_name)(
        **spec["kwargs"], severity=spec.get("severity", "critical"), meta=spec.get("meta", {})
    )


def run_suites(suites: list[Suite], prefix: str, staged: ValidationFiles, published: ValidationFiles) -> GateReport:
    """Run every suite; write GX's results, Data Docs and the report under ``staged`` (which becomes
    ``published``: the report's links point there). Never raises on failed expectations."""
    import great_expectations as gx
    import pandas as pd

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False}
    ctx.add_data_docs_site(
        site_name="retrainer",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(staged.data_docs)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    sources: dict[bool, Any] = {}

    def source_for(frame: Any) -> Any:
        is_pandas = isinstance(frame, pd.DataFrame)
        if is_pandas not in sources:
            # persist=False: GX would otherwise cache the frame, and Spark would serve that stale cache to
            # the next validation of the same path (a rebuilt date) because the plans compare equal.
            sources[is_pandas] = (
                ctx.data_sources.add_pandas(name="statistics")
                if is_pandas
                else ctx.data_sources.add_spark(name="tables", persist=False)
            )
        return sources[is_pandas]

    results: dict[str, Any] = {}
    failed: list[str] = []
    warnings: list[str] = []
    by_construction = 0
    for suite_def in suites:
        if not suite_def.specs:
            continue
        name = suite_def.name
        batch = source_for(suite_def.frame).add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name)
        # The expectations go in before the suite is added: added one by one to a stored suite, each is saved
        # (serialised and deep-copied) on its own, 3.3 s of the raw gate's 78 (measured: docs/benchmarks.md).
        expectations = [expectation(spec) for spec in suite_def.specs]
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{prefix}.{name}", expectations=expectations))
        by_construction += sum(bool(spec.get("meta", {}).get("by_construction")) for spec in suite_def.specs)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        # No Data Docs action per checkpoint: each would rebuild the site over every result so far (about
        # 0.2-0.5 s a suite); the site is built once below, from the same stored results. BASIC results carry
        # what a failure's message and the Data Docs show (observed value, unexpected count and share, up to 20
        # unexpected values); SUMMARY's value counts and index lists are more metrics for every expectation,
        # passing or not: 40 % of the raw gate's CPU on a warm date (docs/benchmarks.md).
        checkpoint = ctx.checkpoints.add(
            gx.Checkpoint(name=f"{name}_checkpoint", validation_definitions=[vd], actions=[],
                          result_format={"result_format": RESULT_FORMAT})
        )  # fmt: skip
        run = checkpoint.run(batch_parameters={"dataframe": suite_def.frame})
        result = next(iter(run.run_results.values()))
        results[name] = result.to_json_dict()
        for r in result.results:
            if r.success:
                continue
            line = f"[{name}] {describe(r, suite_def)}"
            severity = str(getattr(r.expectation_config, "severity", "critical")).rsplit(".", 1)[-1].lower()
            (warnings if severity == "warning" else failed).append(line)

    ctx.build_data_docs(site_names=["retrainer"])
    atomic.write_json(staged.results, results)
    return GateReport(
        success=not failed,
        failed=failed,
        evaluated={name: len(r["results"]) for name, r in results.items()},
        results_uri=str(published.results),
        data_docs_uri=(published.data_docs / "index.html").as_uri(),
        warnings=warnings,
        by_construction=by_construction,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "null" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def describe(r: Any, suite: Suite) -> str:
    """One line per failed expectation: what was expected, where, and what was observed."""
    import pandas as pd

    config = r.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    column = kwargs.get("column")
    frame = suite.frame
    if (
        isinstance(frame, pd.DataFrame)
        and column in frame.columns
        and config.type == "expect_column_values_to_be_between"
        and suite.row_key in frame.columns
    ):
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        values = frame[column]
        bad = frame[
            values.notna()
            & (((values < low) if low is not None else False) | ((values > high) if high is not None else False))
        ]
        label = suite.labels.get(column, column)
        bounds = f"[{_fmt(low) if low is not None else '-inf'}, {_fmt(high) if high is not None else 'inf'}]"
        where = []
        for _, row in bad.iterrows():
            key = str(row[suite.row_key])
            note = suite.notes.get((key, column))
            where.append(f"{key}: {_fmt(row[column])}" + (f" ({note})" if note else ""))
        return f"{label} outside {bounds} on " + "; ".join(where)
    res = r.result or {}
    observed = []
    for key in ("observed_value", "unexpected_count", "unexpected_percent", "partial_unexpected_list"):
        value = res.get(key)
        if value is not None and not (hasattr(value, "__len__") and not isinstance(value, str) and len(value) == 0):
            if key == "unexpected_percent":
                value = f"{value:.3g}%"
            elif key == "partial_unexpected_list":
                value = value[:5]
            observed.append(f"{key}={value}")
    if r.exception_info and r.exception_info.get("raised_exception"):
        msg = re.sub(r"\s+", " ", str(r.exception_info.get("exception_message", "")))[:200]
        observed.append(f"error={msg}")
    where = f"column '{suite.labels.get(column, column)}'" if column else "table"
    shown = {k: v for k, v in kwargs.items() if k != "column" and (k != "mostly" or v != 1.0)}
    expected = ", ".join(f"{k}={v}" for k, v in shown.items())
    expected = f" ({expected})" if expected else ""
    return f"{config.type} on {where}{expected}: {'; '.join(observed) or 'failed'}"
