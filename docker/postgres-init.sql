-- Airflow's metadata database is created by the image (POSTGRES_DB); MLflow gets its own.
CREATE DATABASE mlflow OWNER airflow;
-- MLflow's basic-auth users and grants.
CREATE DATABASE mlflow_auth OWNER airflow;
