-- Airflow's metadata database is created by the image (POSTGRES_DB); MLflow gets its own.
CREATE DATABASE mlflow OWNER airflow;
