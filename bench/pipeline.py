"""Benchmark: the whole pipeline, cold and warm, beside the TFX 1.21 peer measured in the same sitting.

Cases (each through ``retrainer run``, one process, as a user or a notebook runs it):

- ``28d cold``: a 28-day window for 2013-06-08 on an empty data root (no raw-gate records, empty feature
  store, no champion);
- ``28d warm``: then 2013-06-09, the previous date already run (the daily scheduled case);
- ``year cold``: a 350-day window for 2013-12-31 on another empty data root;
- ``28d warm, dags test``: 2013-06-10 on the first data root (06-09 already run) through
  ``airflow dags test`` (every task of the DAG in one process, as ``make run`` does), on an Airflow
  database of its own migrated beforehand (not timed);
- ``28d warm, scheduler``: 2013-06-11 on the first data root, triggered over the REST API of
  ``make airflow``'s stack (the real scheduler, LocalExecutor on SQLite: each task its own process),
  compared with ``28d warm`` (issue 21: within 1.15x); then a backfill of the 30 days after it under the
  same scheduler (issue 21: at most 8 minutes; ``--backfill-days``, ``--no-scheduler``).

Every case talks to the one Spark Connect server (started first if none answers, as ``make run`` does;
its start is reported apart). Wall time, and the peak resident memory of the run's process tree plus the
Spark Connect server's JVM (sampled every 0.25 s) twice: RSS summed (as the TFX peer measures its own) and PSS
summed (shared library pages counted once: the memory the processes hold together); each stage's wall time
from the run's own cost records. With ``--tfx ROOT`` (an install of
``../shared/peers/tfx``, see its README) the peer's ``small`` (30 days) and ``full`` (the year) pipelines
run right after, one after the other, and the ratios are computed from this one sitting.

    make bench-pipeline [TFX=/tmp/tfxpeer]      # results: bench/PIPELINE.md and bench/pipeline.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from retrainer.core.costs import STAGES, read_costs
from retrainer.core.layout import RunLayout
from retrainer.devtools.secrets_file import ensure_secrets
from retrainer.devtools.spark_connect import SparkConnectServer

HERE = Path(__file__).resolve().parent
CASES = {  # name: (data root key, run date, window days)
    "28d cold": ("a", "2013-06-08", 28),
    "28d warm": ("a", "2013-06-09", 28),
    "year cold": ("b", "2013-12-31", 350),
}


def _tree(roots: list[psutil.Process]) -> list[psutil.Process]:
    procs = []
    for root in roots:
        try:
            procs += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return procs


def _summed(procs: list[psutil.Process], read: Callable[[psutil.Process], int]) -> int:
    total = 0
    for p in procs:
        try:
            total += read(p)
        except psutil.Error:
            pass
    return total


class Peak:
    """The highest resident memory of some process trees, in MiB, two ways. RSS summed counts a shared library
    once per process that maps it (TensorFlow's 750 MiB of pages in the run and again in the export check);
    PSS summed shares each page among its processes: the memory the trees hold together. PSS is read every
    ``PSS_EVERY``-th sample only: the kernel walks each page table for it (7 ms for the Spark server's JVM),
    which would otherwise slow what is measured."""

    PSS_EVERY = 4

    def __init__(self) -> None:
        self.rss = self.pss = self._samples = 0

    def see(self, roots: list[psutil.Process]) -> None:
        procs = _tree(roots)
        self.rss = max(self.rss, _summed(procs, lambda p: p.memory_info().rss))
        if self._samples % self.PSS_EVERY == 0:
            self.pss = max(self.pss, _summed(procs, lambda p: p.memory_full_info().pss))
        self._samples += 1

    def mib(self) -> dict[str, int]:
        return {"peak_mib": round(self.rss / 2**20), "peak_pss_mib": round(self.pss / 2**20)}


def measured(cmd: list[str], env: dict[str, str], also: list[psutil.Process], log: Path) -> dict[str, Any]:
    """Run ``cmd``; its wall seconds and the peak RSS and PSS (MiB) of its tree plus the ``also`` processes."""
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    with Sampler([psutil.Process(child.pid), *also]) as sampler:
        code = child.wait()
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}); log: {log}")
    return {"seconds": round(time.perf_counter() - started, 1), **sampler.mib()}


def spark_server_process(server: SparkConnectServer) -> list[psutil.Process]:
    """The server's JVM (by its pid file), so its memory counts with the pipeline's."""
    found = list((server.state / "pid").glob("*.pid"))
    return [psutil.Process(int(found[0].read_text().strip()))] if found else []


def run_retrainer(raw: Path, work: Path, url: str, server: SparkConnectServer) -> dict[str, Any]:
    results = {}
    for name, (root_key, date, window) in CASES.items():
        root = work / f"root-{root_key}"
        if not root.exists():
            root.mkdir(parents=True)
            # A copy, not a link: the raw gate keeps its per-file records beside the landed files, so a link
            # would let an earlier run's records make a cold case warm.
            shutil.copytree(raw, root / "raw", ignore=shutil.ignore_patterns("_gate.*"), symlinks=True)
        env = {
            **os.environ,
            "RETRAINER_DATA_ROOT": str(root),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "RETRAINER_SPARK_MASTER": url,
        }
        cmd = [
            sys.executable,
            "-m",
            "retrainer.runners.cli",
            "--log-level",
            "WARNING",
            "run",
            "--date",
            date,
            "--window-days",
            str(window),
        ]  # fmt: skip  (the default model and tuning)
        results[name] = measured(cmd, env, spark_server_process(server), work / f"{name.replace(' ', '-')}.log")
        costs = read_costs(RunLayout.latest(root, "flight_delay", dt.date.fromisoformat(date)).costs)
        results[name]["stages"] = {stage: c.wall_s for stage, c in costs.items()}  # the run's own records
        print(f"retrainer {name}: {results[name]}", flush=True)
    return results


def airflow_env(work: Path, root: Path, url: str) -> dict[str, str]:
    """The environment ``make run`` gives ``airflow dags test`` (Makefile exports, the checkout's secrets),
    with an Airflow home and database of the benchmark's own."""
    secrets = ensure_secrets(HERE.parent / ".env")
    host, port = url.removeprefix("sc://").rsplit(":", 1)
    return {
        **os.environ,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(HERE.parent / "dags"),  # as the Makefile sets them: run directly too
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(HERE.parent / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{work / 'airflow' / 'airflow.db'}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets["AIRFLOW_JWT_SECRET"],
        "AIRFLOW__CORE__FERNET_KEY": secrets["AIRFLOW_FERNET_KEY"],
        "AIRFLOW_CONN_RETRAINER_SPARK_CONNECT": json.dumps(
            {"conn_type": "spark_connect", "host": f"sc://{host}", "port": int(port)}
        ),
        "RETRAINER_DATA_ROOT": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RETRAINER_SPARK_MASTER": url,
    }


def run_dags_test(work: Path, url: str, server: SparkConnectServer) -> dict[str, Any]:
    """The warm daily run through ``airflow dags test`` (the DAG's tasks in one process)."""
    root, date = work / "root-a", "2013-06-10"
    env = airflow_env(work, root, url)
    airflow = str(Path(sys.executable).with_name("airflow"))
    (work / "airflow").mkdir(exist_ok=True)
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([airflow, "pools", "set", "retrainer_promotion", "1", "bench"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    cmd = [airflow, "dags", "test", "flight_delay_retrain", date]
    result = measured(cmd, env, spark_server_process(server), work / "28d-warm-dags-test.log")
    costs = read_costs(RunLayout.latest(root, "flight_delay", dt.date.fromisoformat(date)).costs)
    result["stages"] = {stage: c.wall_s for stage, c in costs.items()}
    print(f"retrainer 28d warm, dags test: {result}", flush=True)
    return {"28d warm, dags test": result}


class Sampler:
    """The peak RSS and PSS (MiB) of some process trees, sampled every 0.25 s while the block runs."""

    def __init__(self, roots: list[psutil.Process]) -> None:
        self.roots, self.peak, self._done = roots, Peak(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak.see(self.roots)
            time.sleep(0.25)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def mib(self) -> dict[str, int]:
        return self.peak.mib()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_scheduler_kept(work: Path, url: str, server: SparkConnectServer, backfill_days: int) -> dict[str, Any]:
    """:func:`run_scheduler`, whose failure costs only its own cases: what it measured stays, the failing case
    records the error, and the stack's logs are copied out of the benchmark's temporary folder (they would
    go with it) to a folder the error names."""
    results: dict[str, Any] = {}
    try:
        run_scheduler(work, url, server, backfill_days, results)
    except Exception as exc:  # noqa: BLE001 - reported in the results, the peer's cases still run
        kept = Path(tempfile.mkdtemp(prefix="bench-pipeline-scheduler-logs-"))
        shutil.copytree(work / "airflow-scheduler", kept / "airflow-scheduler", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.db", "*.db-*"))  # fmt: skip
        case = (
            "28d warm, scheduler"
            if "28d warm, scheduler" not in results
            else f"{backfill_days}-day backfill, scheduler"
        )
        results[case] = {"error": f"{type(exc).__name__}: {str(exc)[:300]} (the stack's logs: {kept})"}
        print(f"retrainer {case}: {results[case]}", flush=True)
    return results


def run_scheduler(
    work: Path, url: str, server: SparkConnectServer, backfill_days: int, results: dict[str, Any]
) -> None:
    """``make airflow``'s stack (LocalExecutor on SQLite, each task its own process, the same Spark Connect
    server): the warm daily run triggered over the REST API (2013-06-11, the day after the ``dags test``
    case on the same data root), then a backfill of ``backfill_days`` days after it, to completion; each
    case's figures go into ``results`` as soon as it is measured."""
    import requests

    from retrainer.devtools.local_stack import ADMIN

    root, home, date = work / "root-a", work / "airflow-scheduler", dt.date(2013, 6, 11)
    api_port, mlflow_port = _free_port(), _free_port()
    env = airflow_env(work, root, url) | {
        "AIRFLOW_HOME": str(home), "AIRFLOW_PORT": str(api_port), "MLFLOW_PORT": str(mlflow_port),
        "SPARK_CONNECT_PORT": str(server.port),  # make airflow reuses the benchmark's server
    }  # fmt: skip
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")  # make airflow's own: SQLite under its AIRFLOW_HOME
    home.mkdir()
    api_url, dag = f"http://127.0.0.1:{api_port}", "flight_delay_retrain"
    log = home / "make-airflow.log"
    with open(log, "w") as out:  # `make airflow`'s program, as a person starts it
        stack = subprocess.Popen([sys.executable, "-m", "retrainer.devtools.local_stack", "up"], env=env,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops everything" not in log.read_text():
            if stack.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"make airflow did not come up: {log.read_text()[-3000:]}")
            time.sleep(1)
        login = {"username": ADMIN, "password": ensure_secrets(HERE.parent / ".env")["AIRFLOW_ADMIN_PASSWORD"]}
        token = requests.post(f"{api_url}/auth/token", json=login, timeout=30)
        token.raise_for_status()
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

        def call(method: str, path: str, **kwargs: Any) -> Any:
            resp = api.request(method, f"{api_url}/api/v2{path}", timeout=60, **kwargs)
            if resp.status_code >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:2000]}")
            return resp.json() if resp.content else None

        # A daily run arrives at a scheduler that is already up: wait for its first heartbeat (it imports the
        # tasks' libraries before it starts, retrainer.runners.preload), or that start-up would be timed as the run's.
        deadline = time.monotonic() + 300
        while call("GET", "/monitor/health")["scheduler"]["status"] != "healthy":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the scheduler did not report healthy; logs under {home / 'logs'}")
            time.sleep(1)
        call("PATCH", f"/dags/{dag}", json={"is_paused": False})
        roots = [psutil.Process(stack.pid), *spark_server_process(server)]  # honcho and what it runs
        with Sampler(roots) as sampler:
            started = time.perf_counter()
            call("POST", f"/dags/{dag}/dagRuns", json={"dag_run_id": "bench-warm", "logical_date": f"{date}T00:00:00Z"})
            while (run := call("GET", f"/dags/{dag}/dagRuns/bench-warm"))["state"] not in ("success", "failed"):
                time.sleep(1)
            seconds = time.perf_counter() - started
        if run["state"] != "success":
            raise RuntimeError(f"the scheduler's warm run failed; logs under {home / 'logs'}")
        costs = read_costs(RunLayout.latest(root, "flight_delay", date).costs)
        results["28d warm, scheduler"] = {"seconds": round(seconds, 1), **sampler.mib(),
                                          "stages": {stage: c.wall_s for stage, c in costs.items()}}  # fmt: skip
        print(f"retrainer 28d warm, scheduler: {results['28d warm, scheduler']}", flush=True)
        if backfill_days:
            first, last = date + dt.timedelta(days=1), date + dt.timedelta(days=backfill_days)
            body = {"dag_id": dag, "from_date": f"{first}T00:00:00Z", "to_date": f"{last}T00:00:00Z",
                    "max_active_runs": 3, "reprocess_behavior": "none"}  # fmt: skip
            name = f"{backfill_days}-day backfill, scheduler"
            with Sampler(roots) as sampler:
                started = time.perf_counter()
                for _ in range(60):  # on SQLite Airflow refuses (503) while another writer holds the database
                    resp = api.post(f"{api_url}/api/v2/backfills", json=body, timeout=60)
                    if resp.status_code != 503:
                        break
                    time.sleep(2)
                if resp.status_code >= 300:
                    results[name] = {"error": f"POST /backfills: {resp.status_code} {resp.text[:300]}"}
                    print(f"retrainer {name}: {results[name]}", flush=True)
                    return
                backfill = resp.json()
                while not call("GET", f"/backfills/{backfill['id']}")["completed_at"]:
                    time.sleep(2)
                seconds = time.perf_counter() - started
            runs = call("GET", f"/dags/{dag}/dagRuns", params={"limit": 100})["dag_runs"]
            runs = [r for r in runs if r["run_type"] == "backfill"]
            states = [r["state"] for r in runs]
            results[name] = {"seconds": round(seconds, 1), **sampler.mib(),
                             "runs": len(runs), "succeeded": states.count("success")}  # fmt: skip
            print(f"retrainer {name}: {results[name]}", flush=True)
    finally:
        os.kill(stack.pid, signal.SIGINT)  # Ctrl-C
        stack.wait(timeout=120)


def run_tfx(tfx_root: Path, peer: Path) -> dict[str, Any]:
    results = {}
    for size, name in (("small", "30d cold"), ("full", "year cold")):
        env = {**os.environ, "ROOT": str(tfx_root)}
        tag = f"retrainer-bench-{size}"
        subprocess.run(["bash", str(peer / "bench_run.sh"), size, tag], env=env, check=True, capture_output=True)
        mem = json.loads((tfx_root / "logs" / f"{tag}.treemem.json").read_text())
        results[name] = {"seconds": mem["wall_s"], "peak_mib": round(mem["peak_tree_rss_mib"])}
        print(f"TFX {name}: {results[name]}", flush=True)
    return results


def report(ours: dict[str, Any], tfx: dict[str, Any], server_start: float, out: Path) -> str:
    def ratio(case: str, peer_case: str) -> str:
        if peer_case not in tfx:
            return "not run"
        return f"{ours[case]['seconds'] / tfx[peer_case]['seconds']:.2f}x"

    lines = [
        "# Whole pipeline beside the TFX peer (`make bench-pipeline`)",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; one sitting. Spark Connect server start "
        f"before the first case: {server_start:.1f} s (0 when one was already running).",
        "",
        "| case | retrainer s | peak MiB, RSS sum (tree + Spark server) | peak MiB, PSS sum | TFX peer s | "
        "TFX peak MiB, RSS sum | retrainer / TFX |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    pairs = {"28d cold": "30d cold", "28d warm": "30d cold", "year cold": "year cold",
             "28d warm, dags test": "30d cold", "28d warm, scheduler": "30d cold"}  # fmt: skip
    for case, peer_case in pairs.items():
        if "seconds" not in ours.get(case, {}):  # not run, or failed (its error is below the tables)
            continue
        peer = tfx.get(peer_case, {})
        lines.append(
            f"| {case} | {ours[case]['seconds']} | {ours[case]['peak_mib']} | {ours[case].get('peak_pss_mib', '-')} | "
            f"{peer.get('seconds', '-')} | "
            f"{peer.get('peak_mib', '-')} | {ratio(case, peer_case)} |"
        )
    lines += [
        "",
        "Wall seconds per stage, from each run's own cost records (`cost/<stage>.json`):",
        "",
        "| case | " + " | ".join(STAGES) + " |",
        "|---|" + "---:|" * len(STAGES),
    ]
    for case, r in ours.items():
        if "stages" in r:
            lines.append(f"| {case} | " + " | ".join(str(r["stages"].get(s, "-")) for s in STAGES) + " |")
    cli = ours["28d warm"]["seconds"]
    if "28d warm, dags test" in ours:
        dags = ours["28d warm, dags test"]["seconds"]
        lines += ["", f"`airflow dags test` against `retrainer run`, warm 28 days: {dags / cli:.2f}x."]
    if "seconds" in ours.get("28d warm, scheduler", {}):
        sched = ours["28d warm, scheduler"]["seconds"]
        lines += ["", f"The real scheduler (LocalExecutor, each task its own process) against `retrainer run`, warm "
                  f"28 days: {sched / cli:.2f}x (issue 21's target: at most 1.15x)."]  # fmt: skip
    for case, r in ours.items():
        if "error" in r:
            lines += ["", f"{case}: not measured: {r['error']}"]
        if "succeeded" in r:
            lines += ["", f"{case}: {r['succeeded']} of {r['runs']} runs succeeded in {r['seconds']} s "
                      f"({r['seconds'] / 60:.1f} min; issue 21's target for 30 days: at most 8 min), "
                      f"peak {r['peak_mib']} MiB RSS sum, {r.get('peak_pss_mib', '-')} MiB PSS sum."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"retrainer": ours, "tfx": tfx}, indent=2) + "\n")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=Path(os.environ.get("RETRAINER_DATA_ROOT", "data")) / "raw")
    parser.add_argument("--tfx", type=Path, help="an installed TFX peer root (../shared/peers/tfx/README.md)")
    parser.add_argument("--peer", type=Path, default=HERE.parent.parent / "shared" / "peers" / "tfx")
    parser.add_argument("--out", type=Path, default=HERE / "PIPELINE.md")
    parser.add_argument("--backfill-days", type=int, default=30, help="the backfill under the scheduler (0: none)")
    parser.add_argument("--no-scheduler", action="store_true", help="skip the cases under the real scheduler")
    args = parser.parse_args()

    server = SparkConnectServer(int(os.environ.get("SPARK_CONNECT_PORT", "15002")))
    started = time.perf_counter()
    server_start = time.perf_counter() - started if server.up() else 0.0
    url = server.url
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
        ours = run_retrainer(args.raw.resolve(), Path(work), url, server)
        ours |= run_dags_test(Path(work), url, server)
        if not args.no_scheduler:
            ours |= run_scheduler_kept(Path(work), url, server, args.backfill_days)
    tfx = run_tfx(args.tfx, args.peer.resolve()) if args.tfx else {}
    print(report(ours, tfx, server_start, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
