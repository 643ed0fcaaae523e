"""
### Arrival delay in minutes: scheduled retraining (Airflow DAG `arrival_delay_minutes_retrain`)

Retrains the `arrival_delay_minutes` model (how many minutes late will a flight from NYC arrive?
regression, gated on RMSE) on the same landed NYC 2013 flights data and the same features as
`flight_delay`, with the same stages:

`wait_for_raw_partitions` -> `check_raw` -> `features` -> `validate` -> `train` -> `evaluate` (vs. this
model's own MLflow `champion`) -> `export` -> `register` (registered model `arrival_delay_minutes`) ->
`publish_champion`.

A run dated **D** trains on `[D - window_days, D - eval_days)` and evaluates on `[D - eval_days, D)`;
outputs live under `runs/arrival_delay_minutes/date=D/run=<run id>-<digest>/`, one folder per DAG run.
The DAG's shape is in `retrain_dag_factory.py`.
"""

from retrain_dag_factory import retrain_dag

dag = retrain_dag("arrival_delay_minutes", doc_md=__doc__, tags=("regression",))
