"""
### Flight delay: act on each new champion (Airflow DAG `flight_delay_on_new_champion`)

Scheduled on the Asset `flight_delay_champion`, which `flight_delay_retrain`'s `publish_champion`
task updates only when its run moved the MLflow `champion` alias. The event's metadata carries the
model URI (`models:/flight_delay/<version>`), the version it replaced, its evaluation metrics and
the run date. This DAG records it under `_champions/flight_delay/v<version>.json`; put batch
scoring or a deployment here.
"""

from retrain_dag_factory import on_new_champion_dag

dag = on_new_champion_dag("flight_delay", doc_md=__doc__)
