"""Server-mode fixture helpers: fresh PostgreSQL databases for Airflow and MLflow, the stack
(:mod:`retrainer.stack`, the same settings docker-compose gives the containers) and a REST v2 client."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

POSTGRES_URL = os.environ.get("RETRAINER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("RETRAINER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_postgres() -> None:
    """Skip (with the reason) only outside CI: in CI a missing PostgreSQL is a failure."""
    import psycopg2

    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise AssertionError(f"CI is set but PostgreSQL at {POSTGRES_URL} is not reachable: {exc}") from exc
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (set RETRAINER_TEST_POSTGRES_URL): {exc}")


@contextmanager
def fresh_databases(*purposes: str) -> Generator[dict[str, str], None, None]:
    """One new database per purpose, dropped afterwards: {purpose: SQLAlchemy URL (psycopg2)}."""
    import psycopg2

    suffix = uuid.uuid4().hex[:8]
    names = {p: f"retrainer_{p}_{suffix}" for p in purposes}
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'CREATE DATABASE "{name}"')
        yield {p: f"{base}/{n}" for p, n in names.items()}
    finally:
        with admin.cursor() as cur:
            for name in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class Api:
    """Airflow's REST API v2 with a token for the generated admin password."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        resp = requests.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        resp.raise_for_status()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.call(method, path, **kwargs)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text[:2000]}"
        return resp.json() if resp.content else None

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.ok("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, diagnose: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnose()}")
