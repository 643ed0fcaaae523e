"""TensorFlowTrainOperator on two local worker processes: a real SIGKILL of the chief mid-training, then
the task's retry resumes at the next epoch, and no worker is left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from retrainer.core.config import RunConfig
from retrainer.core.layout import RunLayout
from retrainer.core.receipts import Receipt
from retrainer.core.results import TrainingResult, ValidationResult
from retrainer.workloads.flight_delay import WORKLOAD
from support import ROOT, RUN_DATE

EPOCHS = 4
CONF = {"window_days": 7, "eval_days": 2, "validation_days": 0, "epochs": EPOCHS, "batch_size": 16,
        "hidden_units": 8, "part_files": 2, "members": "adagrad_wide,joint"}  # fmt: skip
# Two members, trained together: both resume at the epoch after the phase's last checkpoint.
MEMBERS = WORKLOAD.model.select(CONF["members"]).members

# The Airflow task: the operator as the DAG builds it, executed with a task context for RUN_DATE.
TASK = """
import json, sys, types
import pendulum
from retrainer_plugins.training_operator import TensorFlowTrainOperator
op = TensorFlowTrainOperator(task_id="train", workload="flight_delay", validated=json.loads(sys.argv[1]),
                             launcher="local_processes", num_workers=2)
context = {"logical_date": pendulum.parse(sys.argv[2]), "params": json.loads(sys.argv[3]), "run_id": "kill-test",
           "dag": types.SimpleNamespace(dag_id="flight_delay_retrain"), "ti": types.SimpleNamespace(try_number=1)}
print("RESULT " + json.dumps(op.execute(context)), flush=True)
"""


def _process_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _training_workers() -> list[int]:
    """Every process on this machine running the training entry point."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"retrainer.training.worker" in cmdline and _process_alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def test_a_killed_chief_is_resumed_by_the_retry_at_the_next_epoch(
    validated: ValidationResult, chain_root: Path, tmp_path: Path
) -> None:
    # A data root of its own (the shared one's checkpoints belong to other tests), with this run's results.
    root = tmp_path / "data"
    source = RunLayout(Path(validated.features_dir).parent)
    # the folder the operator's run (run id, params) writes to
    layout = RunLayout.of(RunConfig.build(RUN_DATE, "flight_delay", run_id="kill-test", data_root=str(root), **CONF))
    layout.root.mkdir(parents=True)
    for result in source.root.glob("*.json"):
        shutil.copy(result, layout.root / result.name)
    env = {
        **os.environ,
        "RETRAINER_DATA_ROOT": str(root),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
    }
    receipt = Receipt.issue(layout.load(ValidationResult), layout.path_of(ValidationResult))  # what validate hands on
    argv = [sys.executable, "-c", TASK, json.dumps(receipt.to_dict()), str(RUN_DATE), json.dumps(CONF)]

    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (states := list(layout.checkpoints.glob("*/final/checkpoint"))):  # an epoch of the phase saved
        assert first.poll() is None, f"the task ended before a checkpoint:\n{first.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    state = states[0]
    group = json.loads((layout.worker_logs / "workers.json").read_text())["pids"]
    os.kill(group[0], signal.SIGKILL)  # worker 0 is the chief
    output = first.communicate(timeout=300)[0]
    assert first.returncode != 0, "the task succeeded although its chief was killed"
    assert "WorkersFailed" in output and "workers failed or timed out" in output, output[-3000:]
    saved = sorted(int(p.stem.split("-")[1]) for p in state.parent.glob("ckpt-*.index"))
    assert 1 <= saved[-1] < EPOCHS, f"killed too late to test resuming: checkpoints {saved}"
    assert not any(_process_alive(pid) for pid in group), "a worker of the killed group is still running"

    retry = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    handed_on = Receipt.from_dict(json.loads(retry.stdout.split("RESULT ", 1)[1]))
    result = handed_on.redeem(TrainingResult)  # the task's XCom is the receipt of the run folder's training.json
    assert handed_on.path == str(layout.path_of(TrainingResult))
    assert result.resumed_from_epoch == saved[-1]  # the next epoch after the last checkpoint, not epoch 1
    for member in MEMBERS:  # every member goes on from there: none starts over, none skips an epoch
        trained = [h["epoch"] for h in result.history if h["member"] == member.name]
        assert trained == list(range(saved[-1] + 1, EPOCHS + 1)), (member.name, trained)
    assert result.epochs_trained == EPOCHS * len(MEMBERS) and result.num_workers == 2
    assert result.member_epochs == {m.name: EPOCHS for m in MEMBERS}
    assert result.checkpoint == str(state.parent.parent / "ensemble" / "ckpt-1")
    assert not _training_workers(), "training workers left running after the retry"
    assert not list(state.parent.parent.glob("_worker-*")), "worker 1's own checkpoints were left"
