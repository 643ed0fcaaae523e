"""Stage 4, evaluate: the new model and the current champion on the same evaluation rows.

Both are scored batch by batch from the Parquet files (bounded memory), with the workload
objective's metrics. The gate, like TFX's Evaluator blessing: promote when there is no champion, or
when the new model beats the champion on the objective's headline metric by at
least ``min_gain`` in that metric's direction, and the run is not older than the champion
(:mod:`retrainer.registry.promotion`). The two are compared only on evaluation days the champion did not
train on (its version's ``train_range`` tag); if that leaves too few days, or the tag is missing, the run
is held and the decision says why. scikit-learn baselines (:mod:`retrainer.training.baselines`) trained on the
whole training split are scored on the same rows and reported beside it; they never gate. The
decision records which champion version it was compared with, so registration can tell whether
the champion moved in between.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from retrainer import registry
from retrainer.core import atomic
from retrainer.core.config import RunConfig
from retrainer.core.fingerprint import dict_fingerprint, parquet_parts, tree_digest
from retrainer.core.results import EvaluationResult, TrainingResult, ValidationResult
from retrainer.evaluation.slices import GateSettings, KeptRows, holding, sliced
from retrainer.registry import promotion
from retrainer.stages import costed
from retrainer.training import baselines
from retrainer.training.dataset import arrow_to_inputs, iter_record_batches, labels
from retrainer.workloads import RunContext

log = logging.getLogger(__name__)


@costed("evaluate")
def evaluate_models(
    validated: ValidationResult, training: TrainingResult, run: RunContext | RunConfig
) -> EvaluationResult:
    run = RunContext.of(run)
    cfg = run.config
    workload = run.workload
    objective = workload.objective
    from retrainer.training.loop import load_trained_model

    model = load_trained_model(validated, training, workload)

    holder = promotion.holder(cfg.engines.tracking_uri, workload.registered_model, registry.CHAMPION)
    champion_version = holder.version if holder else None
    eval_range = validated.features.eval_range
    # The days both models are scored on (only days the champion did not train on) and the decision's note
    # on them; None: they cannot be compared fairly, and the note says why (the run is held).
    compared, note = (eval_range, "") if holder is None else promotion.compared_days(eval_range, holder)
    eval_files = parquet_parts(validated.files.eval)
    kept_new = KeptRows(workload.slices)  # the rows the slices are cut from: the compared rows, below
    new = _score(model, None, eval_files, run, None, keep=kept_new)
    new_compared, champ, kept_champion = new, None, None
    with tempfile.TemporaryDirectory(prefix="champion-") as scratch:  # its SavedModel, downloaded and checked
        champion = None
        if holder is not None and compared is not None:
            champion, why = _champion_scorer(cfg.engines.tracking_uri, workload.registered_model, holder.version,
                                             Path(scratch))  # fmt: skip
            compared, note = (compared, note) if champion is not None else (None, why)
        if champion is not None:  # then compared is a range too
            days = None if compared == eval_range else compared
            if days is not None:
                kept_new = KeptRows(workload.slices)
                new_compared = _score(model, None, eval_files, run, days, keep=kept_new)
            kept_champion = KeptRows(())
            champ = _score(None, champion, eval_files, run, days, f"v{champion_version}", keep=kept_champion)
    if new["rows"] == 0:
        raise ValueError(f"evaluation set {validated.files.eval} is empty")
    references = _baselines(validated, training, run)
    slice_report = _sliced(run, kept_new, kept_champion)
    held_by = holding(slice_report) if champ is not None else []
    plot_key = dict_fingerprint({"run_key": training.run_key, "champion": champion_version, "compared": compared,
                                 "slices": slice_report})  # fmt: skip
    plots = _plots(run, kept_new, kept_champion, slice_report, champion_version, plot_key)
    metric, gain = objective.headline, None
    min_gain, bar = promotion.bar(cfg.tuning.min_gain)
    too_old = promotion.forward_only(cfg.engines.tracking_uri, workload.registered_model, cfg.run.date, holder)
    held = too_old or promotion.too_few_eval_days(cfg.tuning.eval_days) or (note if compared is None else None)
    if champ is None:
        promote, reason = held is None, "no champion yet" if held is None else f"held: {held}"
        if compared is None and note != held:  # held for another reason, and not comparable either
            reason += f"; not compared: {note}"
    else:
        gain = objective.gain(new_compared, champ)
        better = gain >= min_gain
        reason = (
            f"{metric} {new_compared[metric]:.4f} vs champion v{champion_version} {champ[metric]:.4f} "
            f"({'higher' if objective.higher_is_better else 'lower'} is better): gain {gain:+.4f} "
            f"{'>=' if better else '<'} {bar}"
        )
        if note:
            reason += f" ({note})"
        if held_by:
            reason += f"; held by {len(held_by)} slice(s): " + "; ".join(held_by)
        promote = better and held is None and not held_by
        if held is not None:
            reason = f"held: {held}; compared only: {reason}"
    narrowed = champ is not None and compared != eval_range  # compared on fewer days than evaluated
    result = EvaluationResult(
        headline=metric,
        higher_is_better=objective.higher_is_better,
        new=new,
        champion=champ,
        champion_version=champion_version,
        champion_run_date=holder.run_date if holder else None,
        gain=gain,
        min_gain=min_gain,
        promote=promote,
        reason=reason,
        eval_range=eval_range,
        baselines=references,
        run_key=training.run_key,
        compared_range=compared if narrowed else None,
        new_compared=new_compared if narrowed else None,
        slices=slice_report,
        held_by_slices=held_by,
        plots=plots,
    )
    run.layout.save(result)
    log.info("evaluation: promote=%s (%s)", promote, reason)
    return result


def _sliced(run: RunContext, kept_new: KeptRows, kept_champion: KeptRows | None) -> dict[str, Any]:
    """The headline by slice on the compared rows (the new model's and, with a champion, the champion's
    predictions on the same rows in the same order) and the slice gate's verdict on each."""
    from retrainer.core.deployment import deployment

    if not run.workload.slices or len(kept_new.y) == 0:
        return {}
    settings = deployment()
    gate = GateSettings(min_rows=settings.slice_min_rows, max_drop=settings.max_slice_drop,
                        resamples=settings.bootstrap_resamples, seed=run.config.tuning.seed)  # fmt: skip
    objective = run.workload.objective
    champion_p = None
    if kept_champion is not None:
        if not np.array_equal(kept_champion.y, kept_new.y):
            raise RuntimeError("the champion and the new model were scored on different rows: slices not comparable")
        champion_p = kept_champion.p
    return sliced(objective.headline, objective.higher_is_better, kept_new, champion_p, gate)


def _plots(
    run: RunContext, kept_new: KeptRows, kept_champion: KeptRows | None, report: dict[str, Any], version: str | None,
    key: str,
) -> list[str]:  # fmt: skip
    """The objective's plots of the compared rows into the run's ``plots/`` folder, replaced as a whole; kept when
    ``key`` (the trained model, the champion, the days and the slice figures) is the one they were drawn for: a
    retried evaluation, or register's re-evaluation against the same champion, draws nothing again (0.6-1 s)."""
    from retrainer.evaluation.plots import write_plots

    folder, objective = run.layout.plots, run.workload.objective
    record = atomic.read_record(folder / PLOTS_KEY) if folder.is_dir() else None
    if isinstance(record, dict) and record.get("key") == key and all((folder / f).is_file() for f in record["files"]):
        return [str(folder / f) for f in record["files"]]
    with atomic.staged_dir(folder) as staging:
        written = write_plots(objective.name, getattr(objective, "unit", ""), kept_new,
                              None if kept_champion is None else kept_champion.p, report, Path(staging),
                              champion_label=f"champion v{version}")  # fmt: skip
        atomic.write_json(Path(staging) / PLOTS_KEY, {"key": key, "files": [f.name for f in written]})
    return [str(folder / f.name) for f in written]


PLOTS_KEY = "_key.json"  # in plots/: what the plots were drawn from


def _baselines(validated: ValidationResult, training: TrainingResult, run: RunContext) -> dict[str, dict[str, Any]]:
    """The baselines' metrics on this run's rows: fitted once per run (they do not depend on the champion, and
    a re-evaluation under the promotion lock should not hold it for seconds of scikit-learn), refitted when
    their key (the training run, the evaluation rows' bytes, the seed, the baselines' code) changes."""
    contract, objective, seed = run.workload.contract, run.workload.objective, run.config.tuning.seed
    stats = atomic.read_json(validated.files.stats)
    key = dict_fingerprint({
        "run_key": training.run_key, "eval": tree_digest(validated.files.eval), "stats": stats, "seed": seed,
        "workload": run.workload.name, "baselines": baselines.describe(objective),
    })  # fmt: skip
    cached = atomic.read_json(run.layout.baselines) if run.layout.baselines.exists() else {}
    if cached.get("key") == key:
        log.info("baselines: reusing this run's (%s)", ", ".join(cached["metrics"]))
        return cached["metrics"]
    train_files, eval_files = parquet_parts(validated.files.train), parquet_parts(validated.files.eval)
    metrics = baselines.fit_and_score(train_files, eval_files, contract, objective, stats, seed=seed)
    atomic.write_json(run.layout.baselines, {"key": key, "metrics": metrics})
    return metrics


def _champion_scorer(tracking_uri: str, model_name: str, version: str, scratch: Path) -> tuple[Any, str]:
    """(a scorer of the champion's checked SavedModel, "") or, when no digest was recorded on the version,
    (None, why it cannot be compared). Files that differ from the recorded digest raise: the store was changed.
    """
    from retrainer.registry.artefacts import NoRecordedDigest, download_saved_model
    from retrainer.serving.saved_model import SavedModelScorer

    try:
        folder = download_saved_model(tracking_uri, model_name, version, scratch)
    except NoRecordedDigest as exc:
        return None, str(exc)
    digest = tree_digest(folder)  # the bytes just checked against the version's recorded digest
    if digest not in _CHAMPIONS:
        while len(_CHAMPIONS) >= KEEP_CHAMPIONS:
            _CHAMPIONS.pop(next(iter(_CHAMPIONS)))
        _CHAMPIONS[digest] = SavedModelScorer(folder)
    return _CHAMPIONS[digest], ""


# Loaded champions by the digest of their SavedModel's files: a champion is downloaded and checked on every
# evaluation, but loading it again (a second of TensorFlow) when register re-evaluates is not needed; any other
# bytes are another key. The scorer holds the loaded graph, not the (temporary) folder.
KEEP_CHAMPIONS = 4
_CHAMPIONS: dict[str, Any] = {}


def _score(
    model: Any, champion: Any, files: list[Any], run: RunContext, days: tuple[str, str] | None, name: str = "",
    keep: KeptRows | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The objective's metrics of the run's ``model`` (a Keras model) or of ``champion`` (the registered
    SavedModel, see :func:`_champion_scorer`) on the evaluation rows of ``files`` (in ``days``), streamed batch
    by batch; ``keep`` keeps each row's label, prediction and slice columns (the evaluation days only)."""
    contract, objective = run.workload.contract, run.workload.objective
    metrics = objective.eval_metrics()
    for batch in iter_record_batches(files, contract, days=days):
        y = labels(batch, contract)
        if champion is None:
            p = model(arrow_to_inputs(batch, contract), training=False).numpy()
            metrics.update(y, p)
        else:
            try:
                p = champion.predict(batch.to_pandas())
                metrics.update(y, p)
            except Exception as exc:
                raise RuntimeError(
                    f"champion {run.workload.registered_model} {name} cannot score this run's evaluation rows "
                    f"({exc}); its input signature may predate the current contract"
                ) from exc
        if keep is not None:
            keep.add(batch, y, p)
    return metrics.result()
