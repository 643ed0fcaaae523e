#!/bin/bash
# Run by the postgres image's entrypoint on a new data volume (/docker-entrypoint-initdb.d), as its superuser:
# the roles and databases of docker/postgres-roles.sql, with the passwords from the secrets file.
set -euo pipefail
psql --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
  -v airflow_role=airflow -v airflow_password="$AIRFLOW_DB_PASSWORD" -v airflow_db=airflow \
  -v mlflow_role=mlflow -v mlflow_password="$MLFLOW_DB_PASSWORD" -v mlflow_db=mlflow -v mlflow_auth_db=mlflow_auth \
  -f /opt/retrainer/postgres-roles.sql
