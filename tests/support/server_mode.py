"""Server-tier helpers: PostgreSQL roles and databases as docker/postgres-roles.sql makes them (the compose test
runs the file against the machine's PostgreSQL), Airflow's REST v2 client, the trigger form in a real browser."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

POSTGRES_URL = os.environ.get("RETRAINER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def require_postgres() -> None:
    """Skip (with the reason) only outside CI: in CI a missing PostgreSQL is a failure."""
    import psycopg2

    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise AssertionError(f"CI is set but PostgreSQL at {POSTGRES_URL} is not reachable: {exc}") from exc
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (set RETRAINER_TEST_POSTGRES_URL): {exc}")


ROLES_SQL = Path(__file__).resolve().parents[2] / "docker" / "postgres-roles.sql"


OWNERS = {"airflow": "airflow", "mlflow": "mlflow", "mlflow_auth": "mlflow"}  # database -> the role owning it


@dataclasses.dataclass(frozen=True)
class TeamDatabases:
    """Airflow's and MLflow's roles and databases as docker/postgres-roles.sql creates them."""

    host: str  # host:port
    roles: dict[str, str]  # airflow, mlflow -> role name
    passwords: dict[str, str]  # role -> password
    names: dict[str, str]  # airflow, mlflow, mlflow_auth -> database name

    def url(self, database: str, role: str | None = None, driver: str = "+psycopg2") -> str:
        """SQLAlchemy URL of ``database`` with ``role``'s login (default: its owner's); ``driver=""``: libpq's."""
        role = role or OWNERS[database]
        login = f"{self.roles[role]}:{self.passwords[role]}"
        return f"postgresql{driver}://{login}@{self.host}/{self.names[database]}"

    @property
    def urls(self) -> dict[str, str]:
        return {database: self.url(database) for database in OWNERS}


@contextmanager
def team_databases() -> Generator[TeamDatabases, None, None]:
    """The compose stack's roles and databases, created by the same SQL file (under names of this test's
    own), dropped afterwards: each role owns its databases and can connect to no other."""
    import psycopg2

    suffix = uuid.uuid4().hex[:8]
    dbs = TeamDatabases(
        host=POSTGRES_URL.split("@", 1)[1].rsplit("/", 1)[0],
        roles={"airflow": f"retrainer_airflow_{suffix}", "mlflow": f"retrainer_mlflow_{suffix}"},
        passwords={"airflow": uuid.uuid4().hex, "mlflow": uuid.uuid4().hex},
        names={db: f"retrainer_{db}_{suffix}" for db in OWNERS},
    )
    args = ["psql", "--no-psqlrc", "--quiet", POSTGRES_URL, "-f", str(ROLES_SQL)]
    for role in dbs.roles:
        args += ["-v", f"{role}_role={dbs.roles[role]}", "-v", f"{role}_password={dbs.passwords[role]}"]
    for db, name in dbs.names.items():
        args += ["-v", f"{db}_db={name}"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{ROLES_SQL.name}: {out.stderr}"
        yield dbs
    finally:
        admin = psycopg2.connect(POSTGRES_URL)
        admin.autocommit = True
        with admin.cursor() as cur:
            for name in dbs.names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            for name in dbs.roles.values():
                cur.execute(f'DROP ROLE IF EXISTS "{name}"')
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


def write_timeline(api: Api, dag_id: str, path: Path) -> None:
    """Every task instance of the DAG's runs with its queue, state, try, start and seconds (of its last try), as
    a TSV: where the server-mode suite spends its time (the suite's budget is the whole `make test`); a try
    number above 1 is a retry or a clear, whose earlier tries are in the kept task logs."""
    rows = ["run_id\ttask_id\tqueue\tstate\ttry\tstart\tseconds"]
    columns = ("dag_run_id", "task_id", "queue", "state", "try_number", "start_date", "duration")
    for run in api.runs(dag_id):
        for ti in api.task_instances(dag_id, run["dag_run_id"]):
            rows.append("\t".join(str(ti.get(k)) for k in columns))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


CHROMIUM = "/usr/bin/chromium"  # Debian's package (make test-tools); Playwright drives it, downloads nothing
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def trigger_from_the_ui(
    base: str,
    password: str,
    dag_id: str,
    *,
    logical_date: dt.date,
    run_id: str,
    fields: dict[str, Any],
    screenshot: Path,
) -> str:
    """Log in, open the DAG, fill the trigger form (logical date, run id, params by their labels) and
    submit it, as a person would; returns the page's URL after submitting (the new run's page)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{base}/auth/login")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
            page.goto(f"{base}/dags/{dag_id}")
            page.wait_for_load_state("networkidle")
            page.click('[data-testid="trigger-dag-button"]', timeout=60_000)
            dialog = page.locator('[role="dialog"][data-state="open"]').filter(has_text="Trigger Dag")
            dialog.wait_for(timeout=30_000)
            picker = dialog.locator('[data-testid="datetime-input"]')  # logical date: a popover with two fields
            picker.click()
            popover = page.locator('[data-scope="popover"][data-part="content"][data-state="open"]')
            popover.get_by_placeholder("YYYY/MM/DD").fill(f"{logical_date:%Y/%m/%d}")
            popover.get_by_placeholder("HH:mm").fill("00:00")
            popover.get_by_placeholder("HH:mm").press("Tab")
            dialog.get_by_text(f"Trigger Dag - {dag_id}").click()  # a click outside closes the popover
            shown = picker.inner_text()
            assert f"{logical_date:%b %d, %Y} 00:00" == shown.strip(), f"the form shows logical date {shown!r}"
            for label, value in fields.items():
                box = dialog.get_by_label(re.compile(rf"^{re.escape(label)}\b"))  # required fields add " *"
                box.fill(str(value))
                box.press("Tab")  # the form takes a number on blur
            dialog.get_by_label(re.compile(r"^Epochs\b")).scroll_into_view_if_needed()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
            dialog.get_by_text("Advanced Options").click()  # (folds the parameters away)
            dialog.locator("input[name=dagRunId]").fill(run_id)
            dialog.locator('[data-testid="trigger-dag-submit"]').click()
            page.wait_for_url(f"**/dags/{dag_id}/runs/**", timeout=60_000)
            return page.url
        finally:
            browser.close()
