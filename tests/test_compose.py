"""docker-compose.yaml cannot run here (no Docker engine): check what it declares instead."""

from __future__ import annotations

import yaml

from conftest import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_services_of_the_stack() -> None:
    services = _compose()["services"]
    airflow = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
    assert {"postgres", "mlflow", "airflow-init"} | airflow <= set(services)
    for name in airflow:
        svc = services[name]
        env = svc["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert svc["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert "./dags:/opt/airflow/dags" in svc["volumes"]


def test_ports_bind_to_loopback_and_mlflow_uses_postgres() -> None:
    services = _compose()["services"]
    for svc in services.values():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
    assert (
        "--backend-store-uri=postgresql+psycopg2://airflow:airflow@postgres:5432/mlflow"
        in services["mlflow"]["command"]
    )
    assert "CREATE DATABASE mlflow" in (ROOT / "docker" / "postgres-init.sql").read_text()
