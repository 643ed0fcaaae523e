"""
### Housekeeping (Airflow DAG `retrainer_housekeeping`)

Once a day, for every workload: the retention policy. Kept: the run folder of every version registered in
MLflow (the champion's among them), the newest `RETRAINER_KEEP_RUNS` run folders (default 10) and anything
changed in the last `RETRAINER_PRUNE_MIN_AGE_HOURS` (default 24: a run in flight). Removed: run folders that
registered nothing, leftovers of interrupted writes, feature stores of other code. When MLflow cannot be
read, nothing is removed and the task fails. The same as `retrainer prune --workload W` (`--dry-run` to see).
"""

from retrain_dag_factory import housekeeping_dag
from retrainer.workloads import workload_names

dag = housekeeping_dag(workload_names(), doc_md=__doc__)
