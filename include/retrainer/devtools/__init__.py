"""For developers and tests: the local Airflow and MLflow servers (make airflow), a standalone Spark cluster."""
