"""
### Flight delay: scheduled retraining (Airflow DAG `flight_delay_retrain`)

Retrains the `flight_delay` model (will a flight from NYC arrive more than 15 minutes late? binary
classification, gated on AUC) on the NYC 2013 flights data every day:

`wait_for_raw_partitions` -> `check_raw` (the raw gate: Spark + Great Expectations on every landed
file) -> `features` (Spark) -> `validate` (Great Expectations, drift against the champion) ->
`train` (TensorFlow, tf.distribute) -> `evaluate` (vs. the MLflow `champion`) -> `export`
(SavedModel, checked in a fresh process) -> `register` (MLflow version, `challenger` alias,
`champion` only when the gate says promote) -> `publish_champion` (the champion Asset event, only when
the champion moved).

A run dated **D** (its logical date) trains on `[D - window_days, D - eval_days)` and evaluates on
`[D - eval_days, D)`. Outputs live under `runs/flight_delay/date=D/run=<run id>-<digest>/`, one folder
per DAG run (a scheduled and a UI run of one date never share a file); clearing a run replaces its own.
Trigger with parameters from the UI form; backfill with `airflow backfill create`.
All logic is in the `retrainer` package; the DAG's shape is in `retrain_dag_factory.py`.
"""

from retrain_dag_factory import retrain_dag

dag = retrain_dag("flight_delay", doc_md=__doc__, tags=("classification",))
