"""Benchmark: the network's evaluation metric over several seeds, beside the run's baselines.

One seed's margin over gradient boosting or logistic regression says little at this data size: on
2013-06-08 the network's AUC moves by 0.01 from one seed to another, more than any margin between the
models. This trains the run's model once per seed on the run's validated features (the run's own
parameters otherwise, checkpoints keyed by run key beside the run's own, the run's ``training.json``
left alone), scores each on the run's evaluation rows and prints each seed, the mean and the baselines
that the run's evaluate stage measured. Run the run first (``retrainer run --date D ...``), then:

    python bench/model_seeds.py --date 2013-06-08 --seeds 42 1 2
    python bench/model_seeds.py --date 2013-12-31 --window-days 350 --eval-days 28
"""

from __future__ import annotations

import argparse
import json
import statistics

from retrainer.core.config import add_config_arguments, config_from_namespace
from retrainer.core.fingerprint import parquet_parts
from retrainer.core.layout import RunLayout
from retrainer.core.results import EvaluationResult, ValidationResult
from retrainer.workloads import get_workload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    add_config_arguments(parser)
    args = parser.parse_args()
    seeds = args.seeds
    del args.seeds
    cfg = config_from_namespace(args)

    from retrainer.training import worker
    from retrainer.training.loop import load_trained_model, score

    workload = get_workload(cfg.run.workload)
    objective = workload.objective
    layout = RunLayout.of(cfg)
    validated = layout.load(ValidationResult)
    evaluation = layout.load_optional(EvaluationResult)
    eval_files = [str(p) for p in parquet_parts(validated.files.eval)]
    per_seed = {}
    for seed in seeds:
        seeded = cfg.replace(seed=seed)
        training = worker.run(seeded, save=False, layout=layout)
        model = load_trained_model(validated, training, workload)
        per_seed[seed] = round(score(model, eval_files, workload.contract, objective)[objective.headline], 4)
        print(json.dumps({"seed": seed, objective.headline: per_seed[seed], "best_epoch": training.best_epoch}))
    measured = evaluation.baselines if evaluation else {}
    baselines = {name: round(metrics[objective.headline], 4) for name, metrics in measured.items()}
    row = {
        "date": str(cfg.run.date),
        "window_days": cfg.tuning.window_days,
        "eval_days": cfg.tuning.eval_days,
        "metric": objective.headline,
        "seeds": per_seed,
        "mean": round(statistics.fmean(per_seed.values()), 4),
        "spread": round(max(per_seed.values()) - min(per_seed.values()), 4),
        "baselines": baselines,
    }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
