"""Stage 6, register: log the run to MLflow, register the SavedModel, move the aliases.

The SavedModel is registered as itself (a pyfunc "model from code" that serves the folder), with an
MLflow signature (:mod:`retrainer.registry.mlflow_run`) from the contract's features and the
objective's output. First it checks that the evaluation and the SavedModel are this run's own (same
training run key, the SavedModel in the run's folder with the digest export recorded): otherwise nothing
is registered. A version is registered once per run (training run key and run folder): a retry reuses
it, and completes any version tag a crash left out. The aliases move under the promotion lock
(:mod:`retrainer.registry.promotion`): ``challenger`` follows the newest-dated version; ``champion`` moves
only when the evaluation said promote against the champion of the moment, re-evaluating first if the
champion moved since; neither ever moves back in time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from retrainer import registry
from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.costs import read_costs
from retrainer.core.fingerprint import tree_digest
from retrainer.core.layout import RunLayout
from retrainer.core.results import (
    ApprovalResult,
    EvaluationResult,
    ExportResult,
    RegistrationResult,
    TrainingResult,
    ValidationResult,
)
from retrainer.registry import promotion
from retrainer.registry.artefacts import SAVED_MODEL_DIGEST_TAG
from retrainer.registry.champion_history import record_move
from retrainer.registry.mlflow_run import log_and_register, range_text, version_description
from retrainer.registry.serving_layout import Staged
from retrainer.stages import costed
from retrainer.stages.evaluate import evaluate_models
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)
RUN_KEY_TAG = "retrainer.run_key"
COST_TAG = "retrainer.cost"  # JSON: wall and CPU seconds and peak MiB of each stage before register
RUN_FOLDER_TAG = "retrainer.run_folder"  # the run's folder under the data root: where its evidence lives


class ForeignArtefact(ValueError):
    """Register was handed an evaluation or a SavedModel that is not this run's (another run of the date,
    or files changed since export): nothing is registered and no alias moves."""


def check_own_artefacts(
    layout: RunLayout, training: TrainingResult, evaluation: EvaluationResult, exported: ExportResult
) -> None:
    """The promoted artefact is the evaluated one: the evaluation and the export name this run's training
    run, the SavedModel lies in this run's folder, and its files are the bytes export checked."""
    problems = []
    if evaluation.run_key != training.run_key:
        problems.append(f"the evaluation scored training run {evaluation.run_key[:12] or '(none recorded)'}")
    if exported.run_key != training.run_key:
        problems.append(f"the export is of training run {exported.run_key[:12] or '(none recorded)'}")
    saved = Path(exported.saved_model_uri)
    if not saved.resolve().is_relative_to(layout.root.resolve()):
        problems.append(f"the SavedModel {saved} is outside the run folder {layout.root}")
    elif not exported.saved_model_digest or tree_digest(saved) != exported.saved_model_digest:
        problems.append(f"the SavedModel {saved} is not the one export checked (its files changed since)")
    if problems:
        raise ForeignArtefact(
            f"refusing to register training run {training.run_key[:12]}: " + "; ".join(problems)
            + ": rerun evaluate and export for this run"
        )  # fmt: skip


@costed("register")
def register_model(
    validated: ValidationResult,
    training: TrainingResult,
    evaluation: EvaluationResult,
    exported: ExportResult,
    run: RunContext | RunConfig,
    approval: ApprovalResult | None = None,
) -> RegistrationResult:
    """Register the run's version and move the aliases as the gate decided; ``approval``: the answer of the DAG's
    approval task, which a deployment with ``RETRAINER_REQUIRE_APPROVAL=yes`` needs before the champion moves."""
    run = RunContext.of(run)
    cfg = run.config
    name = run.workload.registered_model
    tracking_uri = cfg.engines.tracking_uri
    layout = run.layout
    check_own_artefacts(layout, training, evaluation, exported)
    client = registry.configure(tracking_uri)
    run_key = training.run_key

    exp_id = registry.experiment_id(tracking_uri, f"retrainer/{cfg.run.workload}")
    tags = _version_tags(cfg, layout, training, evaluation, exported)
    # A retry of this run reuses its version; another run of the date (same data and parameters, its own
    # folder) registers its own: the version's files must be the ones this run evaluated.
    own = {RUN_KEY_TAG: run_key, RUN_FOLDER_TAG: tags[RUN_FOLDER_TAG]}
    version = registry.find_version_of_run(tracking_uri, name, exp_id, own)
    reused = version is not None
    if version is None:
        version, mlflow_run_id = log_and_register(validated, training, evaluation, exported, cfg, exp_id, tags,
                                                  tuple(own))  # fmt: skip
    else:
        mlflow_run_id = client.get_model_version(name, version).run_id
        log.info("training run %s already registered as %s v%s: reusing it", run_key[:12], name, version)
    _complete_tags(tracking_uri, name, version, tags)

    with promotion.promotion_lock(cfg.engines.data_root, name):
        promoted, note, before = _move_aliases(validated, training, evaluation, version, run, approval)
    description = version_description(cfg, validated, evaluation, run.workload.objective, note, promoted)
    client.update_model_version(name, version, description=description)
    result = RegistrationResult(
        registered_model=name,
        version=version,
        reused_existing_version=reused,
        mlflow_run_id=mlflow_run_id,
        promoted=promoted,
        decision=note,
        champion_before=before,
        aliases=registry.aliases(tracking_uri, name),
        tracking_uri=tracking_uri,
    )
    layout.save(result)
    _report(run, result, exp_id)
    log.info("registered %s v%s, aliases %s (%s)", name, version, result.aliases, note)
    return result


def _report(run: RunContext, registration: RegistrationResult, experiment_id: str) -> None:
    """The run's evidence report (:mod:`retrainer.evaluation.report`) into the run folder and onto the MLflow run
    (replaced by a retry: the artefact path is the same)."""
    from retrainer.evaluation.report import mlflow_run_url, render, write_report

    cfg = run.config
    url = mlflow_run_url(cfg.engines.tracking_uri, experiment_id, registration.mlflow_run_id)
    html = render(run.layout, cfg.run.workload, cfg.run.date.isoformat(), cfg.run.run_id,
                  run.workload.registered_model, registration=registration, mlflow_url=url)  # fmt: skip
    path = write_report(run.layout, html)
    registry.configure(cfg.engines.tracking_uri).log_artifact(registration.mlflow_run_id, str(path), "report")


def _version_tags(
    cfg: RunConfig, layout: RunLayout, training: TrainingResult, evaluation: EvaluationResult, exported: ExportResult
) -> dict[str, str]:
    """What a version says about itself: its run key, the run date the promotion policy compares, its data, and
    the digest of the SavedModel it uploads (what a later evaluation checks before scoring it as champion)."""
    window, headline = cfg.window, evaluation.headline
    costs = {
        stage: {"wall_s": c.wall_s, "cpu_s": c.cpu_s, "peak_rss_mib": c.peak_rss_mib}
        for stage, c in read_costs(layout.costs).items()
        if stage != "register"  # its own cost is not known until it returns
    }
    return {
        RUN_KEY_TAG: training.run_key,
        promotion.RUN_DATE_TAG: cfg.run.date.isoformat(),
        promotion.TRAIN_RANGE_TAG: range_text(window.train_start, window.eval_start),
        "eval_range": range_text(window.eval_start, window.end),
        f"new_{headline}": f"{evaluation.new[headline]:.6f}",
        COST_TAG: json.dumps(costs, sort_keys=True),
        RUN_FOLDER_TAG: layout.root.relative_to(Path(cfg.engines.data_root)).as_posix(),
        SAVED_MODEL_DIGEST_TAG: exported.saved_model_digest,
    }


def _complete_tags(tracking_uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    """Set the tags the version lacks (a retry after a crash between registering and tagging)."""
    client = registry.configure(tracking_uri)
    have = registry.version_tags(tracking_uri, name, version)
    for key, value in tags.items():
        if key not in have:
            client.set_model_version_tag(name, version, key, value)


def _move_aliases(
    validated: ValidationResult, training: TrainingResult, evaluation: EvaluationResult, version: str, run: RunContext,
    approval: ApprovalResult | None = None,
) -> tuple[bool, str, str | None]:  # fmt: skip
    """Under the promotion lock: (is this version champion now, why, the champion it found). Re-reads both
    aliases first."""
    cfg = run.config
    name, uri = run.workload.registered_model, cfg.engines.tracking_uri
    client = registry.configure(uri)
    challenger = promotion.holder(uri, name, registry.CHALLENGER)
    if promotion.older_than(cfg.run.date, challenger, registry.CHALLENGER) is None:
        client.set_registered_model_alias(name, registry.CHALLENGER, version)
    current = promotion.holder(uri, name, registry.CHAMPION)
    now = current.version if current else None
    if now == version:
        intent = promotion.read_intent(run.layout.promotion_intent)
        if intent.get("version") == version and not intent.get("published"):  # moved by an attempt that died
            missing = _after_move(run, version, intent["champion_before"], intent["decision"], None)
            note = f"{intent['decision']} (the alias was moved by an earlier attempt){missing}"
            return True, note, intent["champion_before"]
        return True, f"already champion; {evaluation.reason}", now
    if not evaluation.promote:
        return False, evaluation.reason, now
    needs_approval, approved = promotion.approval_hold(approval)
    if needs_approval is not None:
        return False, f"{needs_approval}; the gate said: {evaluation.reason}", now
    note = evaluation.reason + (f"; {approved}" if approved else "")
    if now == evaluation.champion_version:  # the champion did not move, but the mark may have risen since
        too_old = promotion.forward_only(uri, name, cfg.run.date, current)
        if too_old is not None:
            return False, f"held: {too_old}", now
    else:
        moved = (
            f"champion moved from {_v(evaluation.champion_version)} to {_v(now)} after this run was evaluated; "
            f"re-evaluated against {_v(now)}"
        )
        log.warning("%s", moved)
        evaluation = evaluate_models(validated, training, run)  # the lock is held: the champion cannot move again
        if not evaluation.promote:
            return False, f"not promoted: {moved}: {evaluation.reason}", now
        note = f"{moved}: {evaluation.reason}" + (f"; {approved}" if approved else "")
    return True, _promote(run, version, now, note), now


def _promote(run: RunContext, version: str, now: str | None, note: str) -> str:
    """Move the champion to ``version``; returns the decision text. The alias move is the commit point: what can
    fail and must hold for the rules comes before it (the serving copy, staged and checked; the high-water mark,
    which only ever makes the policy stricter), so a failure there leaves the champion where it was and the task
    fails (and is retried). After it come only the record in the champion history and the rename of the serving
    copy: a failure of either is reported in the decision and the log, not raised, because raising then would
    make a failed run that has moved the champion."""
    cfg = run.config
    name, uri = run.workload.registered_model, cfg.engines.tracking_uri
    staged = _stage_serving(run, version)
    mark = promotion.high_water(uri, name)
    try:
        promotion.raise_high_water(uri, name, version, cfg.run.date)
        # the intent before the alias: a retry that finds the alias already moved still announces the change
        atomic.write_json(run.layout.promotion_intent, {"version": version, "champion_before": now, "decision": note})
        registry.configure(uri).set_registered_model_alias(name, registry.CHAMPION, version)
    except BaseException:
        staged.discard()
        promotion.restore_high_water_if_unmoved(uri, name, version, mark)
        raise
    return note + _after_move(run, version, now, note, staged)


def _stage_serving(run: RunContext, version: str) -> Staged:
    """The new champion's SavedModel for TensorFlow Serving's layout: the run's own checked export (the bytes whose
    digest the version carries), copied beside its place."""
    from retrainer.core.results import ExportResult
    from retrainer.registry.serving_layout import serving_root, stage

    exported = run.layout.load(ExportResult)
    return stage(serving_root(run.config.engines.data_root), run.workload.registered_model, version,
                 Path(exported.saved_model_uri), exported.saved_model_digest)  # fmt: skip


def _after_move(run: RunContext, version: str, before: str | None, note: str, staged: Staged | None) -> str:
    """The champion history's record and the serving copy's rename, after the alias moved; "" when both were done,
    else what is missing (for the decision; also logged as an error). Nothing raises: see :func:`_promote`.
    ``staged`` None: a retry finding the alias moved by an attempt that died, which also raises the high-water
    mark (that attempt may have died at the alias call after the registry had moved it) and stages the copy."""
    cfg = run.config
    name, uri = run.workload.registered_model, cfg.engines.tracking_uri
    missing = []
    if staged is None:
        try:
            promotion.raise_high_water(uri, name, version, cfg.run.date)
        except Exception as exc:  # noqa: BLE001 - reported, see the docstring
            missing.append(f"its high-water mark was not raised ({type(exc).__name__}: {exc})")
        try:
            staged = _stage_serving(run, version)
        except Exception as exc:  # noqa: BLE001 - reported, see the docstring
            missing.append(f"not written to the TensorFlow Serving layout ({type(exc).__name__}: {exc})")
    try:
        record_move(uri, name, version, before, "promote", note, run_id=cfg.run.run_id, run_date=cfg.run.date)
    except Exception as exc:  # noqa: BLE001 - reported, see the docstring
        missing.append(f"not recorded in the champion history ({type(exc).__name__}: {exc})")
    try:
        if staged is not None:
            staged.activate()
    except Exception as exc:  # noqa: BLE001 - reported, see the docstring
        staged.discard()
        missing.append(f"not written to the TensorFlow Serving layout ({type(exc).__name__}: {exc})")
    for problem in missing:
        log.error("%s v%s is champion but %s", name, version, problem)
    return "".join(f"; champion, but {problem}" for problem in missing)


def _v(version: str | None) -> str:
    return f"v{version}" if version else "no champion"
