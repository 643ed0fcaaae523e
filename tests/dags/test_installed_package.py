"""retrainer as a package in an existing Airflow: the wheel declares what it needs (requirements.txt, and the
development tools as its ``dev`` extra), and the DAG files import with retrainer installed from that wheel
rather than from the source tree. The Airflow environment is this project's own virtualenv, seen through a new
virtualenv (cheap: nothing is installed twice but the wheel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support import ROOT


def _requirements(path: Path) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {str(Requirement(line)) for line in lines if line}


def _build(tmp_path: Path) -> Path:
    out = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
             str(ROOT)]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = out.glob("retrainer-*.whl")
    return wheel


def test_the_wheel_declares_the_requirements_and_the_dags_import_from_it(tmp_path: Path) -> None:
    wheel = _build(tmp_path)
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        lines = whl.read(metadata).decode().splitlines()
    declared = [Requirement(line.split(": ", 1)[1]) for line in lines if line.startswith("Requires-Dist: ")]
    runtime = {str(r) for r in declared if r.marker is None}
    dev = {str(Requirement(f"{r.name}{r.extras and '[' + ','.join(sorted(r.extras)) + ']' or ''}{r.specifier}"))
           for r in declared if r.marker is not None and r.marker.evaluate({"extra": "dev"})}  # fmt: skip
    assert runtime == _requirements(ROOT / "requirements.txt")
    assert dev == _requirements(ROOT / "requirements-dev.txt")
    assert not {canonicalize_name(Requirement(r).name) for r in runtime} & {"pytest", "ruff", "playwright", "honcho"}
    # every declared dependency is pinned by the constraints file a user installs with
    pinned = {canonicalize_name(line.split("==")[0]) for line in (ROOT / "constraints.txt").read_text().splitlines()
              if "==" in line}  # fmt: skip
    assert {canonicalize_name(Requirement(r).name) for r in runtime | dev} <= pinned
    # the Spark provider is installed apart (--no-deps: its pyspark-client would overwrite pyspark's files)
    assert "apache-airflow-providers-apache-spark" not in {canonicalize_name(r.name) for r in declared}
    assert any(n.startswith("retrainer/") and n.endswith("py.typed") for n in names)
    assert not any(n.startswith(("tests/", "dags/", "plugins/", "bench/")) for n in names)

    # A new environment that sees this project's Airflow and libraries (their folder added as a site directory),
    # with retrainer installed from the wheel, first on the path.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site_dir = Path(subprocess.check_output([str(python), "-c", where], text=True).strip())
    ours = sysconfig.get_path("purelib")  # this project's virtualenv: Airflow and every library
    (site_dir / "project-libraries.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    probe = (  # as the dag-processor parses a bundle: its folder on the path, so the shared factory imports
        "import json, sys, retrainer; from pathlib import Path; "
        "from airflow.dag_processing.dagbag import BundleDagBag; "
        "bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1])); "
        "print(json.dumps({'file': retrainer.__file__, 'errors': {str(k): v for k, v in bag.import_errors.items()},"
        " 'dags': sorted(bag.dag_ids)}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    }
    done = subprocess.run([str(python), "-c", probe, str(ROOT / "dags")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(site_dir), found["file"]  # the wheel's copy, not include/
    assert found["errors"] == {}, "\n".join(v[-1500:] for v in found["errors"].values())
    assert "flight_delay_retrain" in found["dags"] and "arrival_delay_minutes_retrain" in found["dags"]
    # its console script runs from the wheel too
    cli = subprocess.run([str(venv / "bin" / "retrainer"), "--help"], capture_output=True, text=True, env=env)
    assert cli.returncode == 0 and "retrainer" in cli.stdout
