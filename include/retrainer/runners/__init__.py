"""What runs the stages: the CLI, the local pipeline, the run summary, alerts, the Airflow adapter (the package's
only Airflow import) and the Spark job entry point.
"""
