"""Stage 2, validate (Great Expectations 1.x): the run's features against the workload's contract.

Three suites, all derived from the contract: the feature table (nulls, ranges, categories, patterns and
the label's rate over the window, from each day's row checks, run once per stored day and cached:
``data/day_checks.py``), the rows, label rate and null shares of each day on its own, and drift against
the champion's training data. None of it needs Spark: the day checks read the stored days' Parquet, the
per-day profile is the features stage's, the drift histograms are summed over the training split in
Arrow batches. A failure raises :class:`ValidationFailed` listing every failed expectation with what was
observed, after the JSON results and the Data Docs site are written, so nothing downstream runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any

from retrainer import registry
from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.errors import BadData
from retrainer.core.feature_files import FeatureFiles
from retrainer.core.fingerprint import folder_fingerprint
from retrainer.core.layout import ValidationFiles
from retrainer.core.results import FeaturesResult, GateReport, ValidationResult
from retrainer.data import day_checks, docs_history, drift
from retrainer.data.feature_store import day_folder
from retrainer.data.gx_suites import Suite, run_suites
from retrainer.spec.contract import NULL_FRACTION, PSI
from retrainer.stages import costed
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)


class ValidationFailed(BadData):
    """The features broke the contract; the message lists each failed expectation."""


class StoreChangedSinceFeatures(RuntimeError):
    """The feature store holds other rows for a window day than the run's features were built from (a
    concurrent run recomputed the day): the features must be built again before they can be validated."""


@costed("validate")
def validate_features(features: FeaturesResult, run: RunContext | RunConfig) -> ValidationResult:
    """Validate features built by :func:`retrainer.stages.features.build_features`.

    On success the pending features become the run's ``features`` folder and the result points there:
    it is what training consumes. On failure they move to ``features.rejected``; a previously validated
    ``features`` folder is untouched, and the report (``validation/summary.json``) says what failed.
    """
    run = RunContext.of(run)
    cfg = run.config
    layout = run.layout
    pending = Path(features.folder)
    moved = not pending.is_dir() and _moved_by_an_earlier_attempt(features, layout.features)
    if moved:  # a retry after this stage moved them and died before its result was saved: validate them there
        log.info("features %s were moved to %s by an earlier attempt: validating them there", pending, layout.features)
        features, pending = dataclasses.replace(features, folder=str(layout.features)), layout.features
    elif not pending.is_dir():
        raise FileNotFoundError(f"features {pending} not found: run the features stage for {cfg.run.date} first")
    layout.discard(ValidationResult)
    with atomic.staged_dir(layout.validation) as staging:
        days = [d.isoformat() for d in cfg.window.days()]
        report = _run_suites(features, run, days, staging, layout.validation)
        atomic.write_json(ValidationFiles(staging).report, report.to_dict())
    docs_history.update(cfg.engines.data_root, cfg.run.workload)  # passed or not: the gates' history page
    if not report.success:
        if pending != layout.features or moved:
            atomic.replace_dir(pending, layout.features_rejected)
        raise ValidationFailed(
            f"{len(report.failed)} expectation(s) failed for run {cfg.run.date} "
            f"(results: {report.results_uri}, Data Docs: {report.data_docs_uri}):\n  " + "\n  ".join(report.failed)
        )
    log.info(
        "validation passed: %d checks could have failed and did not (%d more hold by construction); %d warning(s)%s;"
        " Data Docs at %s",
        report.could_fail, report.by_construction, len(report.warnings),
        "".join(f"\n  {w}" for w in report.warnings), report.data_docs_uri,
    )  # fmt: skip
    if pending != layout.features:
        atomic.replace_dir(pending, layout.features)
    result = ValidationResult(features=features, features_dir=str(layout.features), report=report)
    layout.save(result)
    return result


def _moved_by_an_earlier_attempt(features: FeaturesResult, validated_dir: Path) -> bool:
    """Whether the run's ``features`` folder holds this very build (the training split's rows fingerprint
    ``features`` recorded), i.e. an earlier attempt of validate renamed it there."""
    train = FeatureFiles(validated_dir).train
    return train.is_dir() and folder_fingerprint(train) == features.train_fingerprint


def _run_suites(features: FeaturesResult, run: RunContext, days: list[str], staging: Path, final: Path) -> GateReport:
    """The feature table (from its days' cached row checks), the per-day profile and the drift against the
    champion, as three suites."""
    cfg, contract = run.config, run.workload.contract
    import pandas as pd

    files = FeatureFiles(Path(features.folder))

    per_day = pd.DataFrame(atomic.read_json(files.daily_profile))
    specs = contract.expectations()
    checks = _check_days(run, days, per_day, features, specs)
    table = day_checks.window_suite(checks, specs, f"[{cfg.window.train_start}, {cfg.window.end})")
    labels = {"rows": "labelled rows per day", "label_mean": f"mean of {contract.label.name} per day"}
    labels |= {f"{NULL_FRACTION}{c}": f"null share of {c} per day" for c in contract.nullable_checked_per_day()}
    suites = [
        Suite("feature_table", table.frame, table.specs, labels=table.labels, row_key=table.row_key, notes=table.notes),
        Suite("per_day", per_day, contract.per_day_expectations(days), labels=labels),
    ]
    scores, baseline = _drift(files, run)
    if scores is not None:
        frame = pd.DataFrame(
            [
                {"training split": "[{}, {})".format(*cfg.window.train_range)}
                | {f"{PSI}{c}": v for c, v in scores.items()}
            ]
        )
        psi_labels = {f"{PSI}{c}": f"PSI of {c} against {baseline}'s training data" for c in scores}
        expectations = contract.drift_expectations(only=scores)
        suites.append(Suite("drift", frame, expectations, labels=psi_labels, row_key="training split"))
    report = run_suites(suites, contract.name, ValidationFiles(staging), ValidationFiles(final))
    return dataclasses.replace(report, drift=scores, drift_baseline=baseline, days_checked=len(checks.checked),
                               days_reused=checks.reused)  # fmt: skip


def _check_days(
    run: RunContext, days: list[str], per_day: Any, features: FeaturesResult, specs: list[dict[str, Any]]
) -> day_checks.DayChecks:
    """The row-level checks of every window day, from the feature store's days these features were built
    from (each checked once, then cached): refuses if the store has other rows for a day now."""
    cfg, workload = run.config, run.workload
    if not features.store_digests:
        raise StoreChangedSinceFeatures(
            f"features of {cfg.run.date} do not say which feature-store rows they were "
            "built from (built by an older retrainer): run the features stage again"
        )
    folders = {d: day_folder(cfg.engines.data_root, workload, dt.date.fromisoformat(d)) for d in days}
    checks = day_checks.check_days(folders, workload.contract, specs)
    built_rows = dict(zip(per_day["date"], per_day["rows"], strict=True))
    changed = [
        d for d in days
        if checks.days[d].digest != features.store_digests.get(d) or checks.days[d].rows != built_rows.get(d)
    ]  # fmt: skip
    if changed:
        raise StoreChangedSinceFeatures(
            f"the feature store's rows of {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''} are not the "
            f"rows {cfg.run.date}'s features were built from (a concurrent run recomputed them): run the features "
            "stage again"
        )
    log.info("row checks: %d day(s) checked by Great Expectations now, %d reused from earlier runs",
             len(checks.checked), checks.reused)  # fmt: skip
    return checks


def _drift(files: FeatureFiles, run: RunContext) -> tuple[dict[str, float] | None, str]:
    """PSI per feature between this run's training split and the champion's, or None and why not."""
    cfg, workload = run.config, run.workload
    contract = workload.contract
    # An unreadable registry raises RegistryUnavailable: the task fails and Airflow retries it. The drift
    # gate is never skipped because the champion could not be read, only when there is no champion.
    reference = registry.champion_profile(cfg.engines.tracking_uri, workload.registered_model)
    if reference is None:
        return None, "not measured: no champion yet"
    version, ref = reference
    if ref is None:
        return None, f"not measured: champion v{version} was registered without a data profile"
    current = drift.profile(files.train, contract, reference=ref)
    atomic.write_json(files.folder / "drift_profile.json", current)
    new = drift.not_compared(ref, [c.name for c in contract.features])
    if new:
        log.warning("drift: champion v%s's profile has no histogram of %s (features added since): not compared",
                    version, ", ".join(new))  # fmt: skip
    return drift.drift(ref, current), f"champion v{version}"
