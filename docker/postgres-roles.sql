-- The team stack's database roles, run once by PostgreSQL's superuser (docker/postgres-init.sh on a new volume;
-- the server-mode tests run this same file against their PostgreSQL). Airflow and MLflow each own their
-- databases and can connect to no other: neither is a superuser, may create databases or roles, and nobody
-- else (PUBLIC) may connect, so a leaked Airflow login (every Celery worker holds one, for the metadata
-- database and Celery's results) reads nothing of the registry, and MLflow's reads nothing of Airflow.
-- psql variables: airflow_role, airflow_password, airflow_db, mlflow_role, mlflow_password, mlflow_db, mlflow_auth_db.
\set ON_ERROR_STOP on
CREATE ROLE :"airflow_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'airflow_password';
CREATE ROLE :"mlflow_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'mlflow_password';
CREATE DATABASE :"airflow_db" OWNER :"airflow_role";
CREATE DATABASE :"mlflow_db" OWNER :"mlflow_role";
-- MLflow's basic-auth users, password hashes and grants
CREATE DATABASE :"mlflow_auth_db" OWNER :"mlflow_role";
REVOKE ALL ON DATABASE :"airflow_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"mlflow_auth_db" FROM PUBLIC;
