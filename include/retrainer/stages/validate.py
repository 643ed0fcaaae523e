"""Stage 2, validate (Great Expectations 1.x): the run's features against the workload's contract.

Three suites, all derived from the contract: the raw partitions had every column the workload
reads; the feature table's columns, types, nulls, ranges, categories and label rate; and the rows
per day. A failure raises :class:`ValidationFailed` listing every failed expectation with what was
observed, after the JSON results and the Data Docs site are written, so nothing downstream runs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from retrainer import atomic
from retrainer.config import RunConfig
from retrainer.contract import Contract
from retrainer.errors import BadData
from retrainer.layout import FeatureFiles, RunLayout, ValidationFiles
from retrainer.results import FeaturesResult, ValidationReport, ValidationResult
from retrainer.spark_session import get_spark
from retrainer.workloads import get_workload

log = logging.getLogger(__name__)


class ValidationFailed(BadData):
    """The features broke the contract; the message lists each failed expectation."""


def _expectation(spec: dict[str, Any]) -> Any:
    import great_expectations as gx

    class_name = "".join(part.capitalize() for part in spec["type"].split("_"))
    return getattr(gx.expectations, class_name)(**spec["kwargs"])


def validate_features(features: FeaturesResult, cfg: RunConfig) -> ValidationResult:
    """Validate features built by :func:`retrainer.stages.features.build_features`.

    On success the pending features become the run's ``features`` folder and the result points there:
    it is what training consumes. On failure they move to ``features.rejected``; a previously validated
    ``features`` folder is untouched, and the report (``validation/summary.json``) says what failed.
    """
    contract = get_workload(cfg.run.workload).contract
    layout = RunLayout.of(cfg)
    pending = Path(features.folder)
    if not pending.is_dir():
        raise FileNotFoundError(f"features {pending} not found: run the features stage for {cfg.run.date} first")
    layout.discard(ValidationResult)
    spark = get_spark(cfg.engines.spark_master)
    with atomic.staged_dir(layout.validation) as staging:
        days = [d.isoformat() for d in cfg.window.days()]
        report = _run_suites(FeatureFiles(pending), contract, days, spark, staging, layout.validation)
    if not report.success:
        if pending != layout.features:
            atomic.replace_dir(pending, layout.features_rejected)
        raise ValidationFailed(
            f"{len(report.failed)} expectation(s) failed for run {cfg.run.date} "
            f"(results: {report.results_uri}, Data Docs: {report.data_docs_uri}):\n  " + "\n  ".join(report.failed)
        )
    log.info("validation passed: %s expectations; Data Docs at %s", report.evaluated, report.data_docs_uri)
    if pending != layout.features:
        atomic.replace_dir(pending, layout.features)
    result = ValidationResult(features=features, features_dir=str(layout.features), report=report)
    layout.save(result)
    return result


def _run_suites(
    files: FeatureFiles, contract: Contract, days: list[str], spark: Any, staging: Path, final: Path
) -> ValidationReport:
    """Run the three suites; ``days`` are the calendar days the run's window must cover."""
    import great_expectations as gx
    import pandas as pd

    staged, published = ValidationFiles(staging), ValidationFiles(final)

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
    # persist=False: GX would otherwise cache the frame, and Spark would serve that stale cache to the
    # next validation of the same path (a rebuilt date) because the plans compare equal.
    spark_source = ctx.data_sources.add_spark(name="features", persist=False)
    pandas_source = ctx.data_sources.add_pandas(name="run_metadata")

    manifest = pd.DataFrame(_manifest_rows(atomic.read_json(files.raw_manifest)))
    daily = pd.DataFrame(atomic.read_json(files.daily_counts))
    table = spark.read.parquet(str(files.train)).unionByName(spark.read.parquet(str(files.eval)))

    raw_columns = [c for c in manifest.columns if c not in ("source", "date")]
    suites = {
        "raw_partitions": (
            pandas_source,
            manifest,
            [
                {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": c, "value_set": [True]}}
                for c in raw_columns
            ],
        ),
        "feature_table": (spark_source, table, contract.expectations()),
        "rows_per_day": (pandas_source, daily, contract.daily_expectations(days)),
    }
    results: dict[str, Any] = {}
    failures: list[str] = []
    for name, (source, frame, specs) in suites.items():
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name)
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{contract.name}.{name}"))
        for spec in specs:
            suite.add_expectation(_expectation(spec))
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        checkpoint = ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"{name}_checkpoint",
                validation_definitions=[vd],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["retrainer"])],
                result_format={"result_format": "SUMMARY"},
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": frame})
        result = next(iter(run.run_results.values()))
        results[name] = result.to_json_dict()
        failures += [f"[{name}] {_describe(r, name, frame)}" for r in result.results if not r.success]

    atomic.write_json(staged.results, results)
    report = ValidationReport(
        success=not failures,
        failed=failures,
        evaluated={name: len(r["results"]) for name, r in results.items()},
        results_uri=str(published.results),
        data_docs_uri=(published.data_docs / "index.html").as_uri(),
    )
    atomic.write_json(staged.report, report.to_dict())
    return report


def _manifest_rows(manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per raw partition, one boolean column ``source.column`` per column the workload reads."""
    rows = []
    expected: dict[str, set[str]] = {}
    for entry in manifest:
        expected.setdefault(entry["source"], set()).update(entry.get("expected", []))
    for entry in manifest:
        row: dict[str, Any] = {"source": entry["source"], "date": entry["date"]}
        for col in sorted(expected[entry["source"]]):
            row[f"{entry['source']}.{col}"] = col not in entry["missing"]
        rows.append(row)
    return rows


def _describe(r: Any, suite: str, frame: Any) -> str:
    """One line per failed expectation: what was expected, on which column, what was observed.

    For the small per-partition and per-day frames the offending dates are named as well.
    """
    config = r.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    column = kwargs.pop("column", None)
    res = r.result or {}
    where = f"column '{column}'" if column else "table"
    if suite == "raw_partitions" and column:
        source, col = column.split(".", 1)
        dates = list(frame.loc[frame[column] == False, "date"])  # noqa: E712
        return f"raw {source} partitions lack column '{col}' on {', '.join(dates)} (expectation {config.type})"
    if suite == "rows_per_day" and column == "rows":
        low, high = kwargs["min_value"], kwargs["max_value"]
        bad = frame.loc[(frame["rows"] < low) | (frame["rows"] > high)]
        days = ", ".join(f"{d} ({n} rows)" for d, n in zip(bad["date"], bad["rows"], strict=True))
        return f"rows per day outside [{low:g}, {high:g}] on {days} (expectation {config.type})"
    observed = []
    for key in ("observed_value", "unexpected_count", "unexpected_percent", "partial_unexpected_list"):
        if key in res and res[key] not in (None, []):
            value = res[key]
            if key == "unexpected_percent":
                value = f"{value:.3g}%"
            elif key == "partial_unexpected_list":
                value = value[:5]
            observed.append(f"{key}={value}")
    if r.exception_info and r.exception_info.get("raised_exception"):
        msg = re.sub(r"\s+", " ", str(r.exception_info.get("exception_message", "")))[:200]
        observed.append(f"error={msg}")
    expected = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "mostly" or v != 1.0)
    expected = f" ({expected})" if expected else ""
    return f"{config.type} on {where}{expected}: {'; '.join(observed) or 'failed'}"
