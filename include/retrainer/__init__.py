"""retrainer: scheduled TensorFlow retraining as plain stage functions.

The stage functions in :mod:`retrainer.stages` are the pipeline. The Airflow DAG, the
``retrainer`` CLI (``retrainer run``) and the tests are runners over the same functions.
Nothing in this package imports Airflow except :mod:`retrainer.runners.airflow_adapter`.
"""

__version__ = "0.1.0"
