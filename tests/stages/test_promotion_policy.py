"""The promotion policy's trust rules, each against the real MLflow registry and real trained models:
the champion only moves forward in time; an unreadable registry fails instead of reading as "no
champion"; promotions are serialised (two register processes racing); a reused version gets back the
tags a crash left out."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest

from retrainer import registry
from retrainer.core.layout import RunLayout
from retrainer.core.results import EvaluationResult, RegistrationResult, ValidationResult
from retrainer.registry import promotion
from support import prefork, small_config

MODEL = "flight_delay"
OLD, MID, NEW = dt.date(2013, 2, 4), dt.date(2013, 2, 5), dt.date(2013, 2, 6)
ALWAYS = -1000.0  # a min_gain every model meets: only the policy can hold a promotion


@pytest.fixture(scope="module", autouse=True)
def _a_deployment_that_allows_any_min_gain():
    """These tests isolate the date rule: their deployment lets a run lower the bar to ALWAYS (the
    default floor, 0, is tested on its own below) and turns the slice gate off (one-epoch models on two
    evaluation days differ by more than 5 % on an airport by chance; the gate has tests of its own in
    test_evaluate_export_register.py). Set in the environment: the CLI children inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETRAINER_MIN_GAIN_FLOOR", str(ALWAYS))
        mp.setenv("RETRAINER_MAX_SLICE_DROP", "1")
        yield


@pytest.fixture(scope="module")
def root(tmp_path_factory, landed: Path) -> Path:
    base = tmp_path_factory.mktemp("promotion")
    (base / "raw").symlink_to(landed / "raw")
    return base


@pytest.fixture(scope="module")
def trained(spark, root: Path) -> dict:
    """Features, a tiny model, its evaluation inputs and its export for each of the three dates."""
    from retrainer.stages.check_raw import check_raw_days
    from retrainer.stages.export import export_model
    from retrainer.stages.features import build_features
    from retrainer.stages.train import train_model
    from retrainer.stages.validate import validate_features

    out = {}
    for day in (OLD, MID, NEW):
        cfg = small_config(root, _tracking(root), date=day, min_gain=ALWAYS)  # validate reads it (no champion)
        validated = validate_features(build_features(check_raw_days(cfg), cfg), cfg)
        training = train_model(validated, cfg)
        out[day] = (validated, training, export_model(validated, training, cfg))
    return out


def _register(trained: dict, day: dt.date, cfg) -> tuple[EvaluationResult, RegistrationResult]:
    from retrainer.stages.evaluate import evaluate_models
    from retrainer.stages.register import register_model

    validated, training, exported = trained[day]
    evaluation = evaluate_models(validated, training, cfg)
    return evaluation, register_model(validated, training, evaluation, exported, cfg)


def _tracking(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_backfill_registers_but_never_moves_the_champion_back(trained, root, tmp_path) -> None:
    tracking = _tracking(tmp_path)
    _, newest = _register(trained, NEW, small_config(root, tracking, date=NEW, min_gain=ALWAYS))
    assert newest.promoted

    evaluation, older = _register(trained, OLD, small_config(root, tracking, date=OLD, min_gain=ALWAYS))
    assert evaluation.champion_version == newest.version and evaluation.champion_run_date == NEW
    assert evaluation.promote is False  # held, and says why
    assert f"held: this run's date {OLD} is before champion v{newest.version}'s {NEW}" in evaluation.reason
    # the backfill's evaluation days are among those the newer champion trained on: not compared, and said so
    assert evaluation.champion is None and evaluation.gain is None
    assert f"not compared: champion v{newest.version} trained on [2013-01-30, 2013-02-04)" in evaluation.reason
    assert not older.promoted and older.version != newest.version
    assert older.aliases == {"champion": newest.version, "challenger": newest.version}
    tags = registry.version_tags(tracking, MODEL, older.version)
    assert tags["run_date"] == str(OLD) and tags["eval_range"] == "[2013-02-02, 2013-02-04)"


def test_the_trigger_form_can_raise_the_bar_but_never_lower_it(trained, root, tmp_path, monkeypatch) -> None:
    """min_gain and the evaluation days are the deployment's policy: a run's form value below the
    deployment's floor is replaced by the floor (and the decision says so); too few evaluation days hold."""
    from retrainer.stages.evaluate import evaluate_models

    tracking = _tracking(tmp_path)
    _register(trained, OLD, small_config(root, tracking, date=OLD, min_gain=ALWAYS))
    monkeypatch.setenv("RETRAINER_MIN_GAIN_FLOOR", "0.001")
    validated, training, _ = trained[MID]
    asks_less = evaluate_models(validated, training, small_config(root, tracking, date=MID, min_gain=ALWAYS))
    assert asks_less.min_gain == 0.001 and asks_less.champion is not None
    assert "min_gain 0.001 (the deployment's floor; the run asked for -1000.0)" in asks_less.reason
    assert asks_less.promote == (asks_less.gain >= 0.001)
    asks_more = evaluate_models(validated, training, small_config(root, tracking, date=MID, min_gain=0.5))
    assert asks_more.min_gain == 0.5 and not asks_more.promote and "< min_gain 0.5" in asks_more.reason
    monkeypatch.setenv("RETRAINER_MIN_GAIN_FLOOR", str(ALWAYS))
    monkeypatch.setenv("RETRAINER_MIN_EVAL_DAYS", "3")  # the runs here evaluate on 2 days
    short = evaluate_models(validated, training, small_config(root, tracking, date=MID, min_gain=ALWAYS))
    assert not short.promote and "held: evaluated on 2 day(s); this deployment promotes only on at least 3" in (
        short.reason
    )


def test_deleting_the_champion_alias_or_version_keeps_the_floor_until_an_operator_resets_it(
    trained, root, tmp_path, capsys
) -> None:
    """The forward-in-time floor is a high-water mark on the registered model, not the alias: deleting
    the alias (or the version) in the MLflow UI no longer lets an old backfill become champion."""
    from retrainer.runners.cli import main
    from retrainer.stages.evaluate import evaluate_models

    tracking = _tracking(tmp_path)
    cfgs = {day: small_config(root, tracking, date=day, min_gain=ALWAYS) for day in (OLD, NEW)}
    _, newest = _register(trained, NEW, cfgs[NEW])
    assert newest.promoted
    assert registry.model_tags(tracking, MODEL)[promotion.HIGH_WATER_TAG] == f"{NEW} v{newest.version}"
    client = registry.configure(tracking)
    client.delete_registered_model_alias(MODEL, "champion")  # as someone could in the MLflow UI
    evaluation, older = _register(trained, OLD, cfgs[OLD])
    assert evaluation.champion is None and evaluation.promote is False
    assert f"held: this run's date {OLD} is before the newest promotion's {NEW} (v{newest.version}" in evaluation.reason
    assert not older.promoted and "champion" not in older.aliases
    client.delete_model_version(MODEL, newest.version)  # the version itself gone: still held
    assert not evaluate_models(trained[OLD][0], trained[OLD][1], cfgs[OLD]).promote

    argv = ["reset-high-water", "--workload", MODEL, "--reason", "v1 withdrawn", "--tracking-uri", tracking,
            "--data-root", str(root)]  # fmt: skip
    assert main(argv) == 0  # the operator's explicit act, recorded on the model
    assert json.loads(capsys.readouterr().out)["high_water_before"] == f"{NEW} v{newest.version}"
    tags = registry.model_tags(tracking, MODEL)
    assert promotion.HIGH_WATER_TAG not in tags
    reset = json.loads(tags[promotion.HIGH_WATER_RESET_TAG])
    assert reset["reason"] == "v1 withdrawn" and reset["from"] == f"{NEW} v{newest.version}" and reset["by"]
    _, again = _register(trained, OLD, cfgs[OLD])
    assert again.promoted and again.version == older.version  # its own version, now champion
    assert registry.model_tags(tracking, MODEL)[promotion.HIGH_WATER_TAG] == f"{OLD} v{older.version}"

    client.set_registered_model_tag(MODEL, promotion.HIGH_WATER_TAG, "recently")  # unreadable: never "no floor"
    with pytest.raises(registry.RegistryUnavailable, match="not '<run date> v<version>'"):
        evaluate_models(trained[OLD][0], trained[OLD][1], cfgs[OLD])


def test_every_champion_move_is_recorded_and_a_rollback_is_an_operators_act_the_date_rule_respects(
    trained, root, tmp_path, capsys
) -> None:
    """History: who was champion when, with the run and the reason of each move. Rollback: back to an earlier
    champion, with a reason, recorded; the high-water mark stays, so a backfill is still held and the next
    newer run is compared with the rolled-back champion. A move made outside retrainer is named."""
    from retrainer.registry import champion_history as history
    from retrainer.runners.cli import main

    tracking = _tracking(tmp_path)
    cfgs = {day: small_config(root, tracking, date=day, min_gain=ALWAYS) for day in (OLD, MID, NEW)}
    _, first = _register(trained, OLD, cfgs[OLD])
    _, second = _register(trained, MID, cfgs[MID])
    assert first.promoted and second.promoted
    moves = history.history(tracking, MODEL)
    assert [(m.seq, m.version, m.before, m.action, m.run_date) for m in moves] == [
        (1, first.version, None, "promote", str(OLD)),
        (2, second.version, first.version, "promote", str(MID)),
    ]
    assert moves[1].run_id == cfgs[MID].run.run_id and moves[1].reason == second.decision[: history.REASON_CHARS]
    assert history.champion_at(moves, moves[0].at - dt.timedelta(seconds=1)) is None
    assert history.champion_at(moves, moves[1].at).version == second.version
    assert history.unrecorded_change(tracking, MODEL) is None
    serving = root / "serving" / MODEL  # TensorFlow Serving's layout: the champion's version only
    assert [p.name for p in serving.iterdir()] == [second.version]
    assert (serving / second.version / "saved_model.pb").is_file()

    def cli(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--workload", MODEL, "--tracking-uri", tracking])
        out = capsys.readouterr()
        return code, out.out, out.err

    refused = [(second.version, "is the champion already"), ("99", "was never champion")]
    for version, why in refused:
        code, _, err = cli("champion", "rollback", "--to-version", version, "--reason", "r", "--data-root", str(root))
        assert code == 2 and why in err
    code, _, err = cli("champion", "rollback", "--to-version", first.version, "--reason", " ", "--data-root", str(root))
    assert code == 2 and "needs a reason" in err
    assert registry.alias_version(tracking, MODEL, "champion") == second.version  # nothing moved

    code, out, _ = cli("champion", "rollback", "--to-version", first.version, "--reason", "v2 mislabelled week",
                       "--data-root", str(root))  # fmt: skip
    assert code == 0 and json.loads(out)["move"]["action"] == "rollback"
    assert registry.alias_version(tracking, MODEL, "champion") == first.version
    back = history.history(tracking, MODEL)[-1]
    assert (back.seq, back.version, back.before, back.action, back.reason) == (
        3, first.version, second.version, "rollback", "v2 mislabelled week")  # fmt: skip
    assert back.by and back.run_id is None
    from retrainer.core.fingerprint import tree_digest
    from retrainer.registry.artefacts import SAVED_MODEL_DIGEST_TAG

    assert [p.name for p in serving.iterdir()] == [first.version]  # TF Serving would serve the highest present
    assert tree_digest(serving / first.version) == registry.version_tags(tracking, MODEL, first.version)[
        SAVED_MODEL_DIGEST_TAG]  # fmt: skip

    # The date rule afterwards: the mark still names the newest promotion, so a backfill stays held ...
    assert promotion.high_water(tracking, MODEL) == promotion.Holder(second.version, MID)
    champion = promotion.holder(tracking, MODEL, "champion")
    assert "before the newest promotion's" in promotion.forward_only(tracking, MODEL, OLD, champion)
    # ... and the next newer run is compared with the rolled-back champion and may replace it
    evaluation, third = _register(trained, NEW, cfgs[NEW])
    assert evaluation.champion_version == first.version and third.promoted
    assert [p.name for p in serving.iterdir()] == [third.version]
    assert history.history(tracking, MODEL)[-1].before == first.version

    registry.configure(tracking).set_registered_model_alias(MODEL, "champion", second.version)  # the MLflow UI
    code, out, err = cli("champion", "history")
    assert code == 0 and "changed outside retrainer" in json.loads(out)["unrecorded_change"]
    assert [m["seq"] for m in json.loads(out)["moves"]] == [1, 2, 3, 4] and "WARNING" in err
    code, out, _ = cli("champion", "history", "--at", back.at.isoformat())
    assert [m["version"] for m in json.loads(out)["moves"]] == [first.version]  # the champion at that moment


def test_with_approval_required_only_an_approve_answer_moves_the_champion(trained, root, tmp_path, monkeypatch):
    """RETRAINER_REQUIRE_APPROVAL=yes: register holds a promotion the gate allowed unless the approval task's
    answer is Approve: no answer (``retrainer run``, which cannot ask) and Reject leave the champion; Approve
    moves it, and the decision and the history say who approved."""
    from retrainer.registry import champion_history
    from retrainer.stages.evaluate import evaluate_models
    from retrainer.stages.register import register_model

    monkeypatch.setenv("RETRAINER_REQUIRE_APPROVAL", "yes")
    tracking = _tracking(tmp_path)
    cfg = small_config(root, tracking, date=NEW, min_gain=ALWAYS)
    validated, training, exported = trained[NEW]
    evaluation = evaluate_models(validated, training, cfg)
    assert evaluation.promote  # the gate allows it: only the approval can hold it
    from retrainer.core.results import ApprovalResult

    ops = {"id": "7", "name": "ops"}
    answers = {
        "none": None,
        "reject": ApprovalResult.from_answer({"chosen_options": ["Reject"], "responded_by_user": ops}),
    }
    for kind, answer in answers.items():
        reg = register_model(validated, training, evaluation, exported, cfg, approval=answer)
        assert not reg.promoted and "RETRAINER_REQUIRE_APPROVAL=yes" in reg.decision, kind
        assert registry.alias_version(tracking, MODEL, "champion") is None, kind
    assert "the answer was ['Reject']" in reg.decision
    approve = ApprovalResult.from_answer(
        {"chosen_options": ["Approve"], "responded_by_user": ops, "responded_at": "2026-12-07T10:00:00+00:00"}
    )
    reg = register_model(validated, training, evaluation, exported, cfg, approval=approve)
    assert reg.promoted and reg.decision.endswith("approved by ops at 2026-12-07T10:00:00+00:00")
    assert registry.alias_version(tracking, MODEL, "champion") == reg.version
    assert champion_history.history(tracking, MODEL)[-1].reason.endswith("approved by ops at 2026-12-07T10:00:00+00:00")


def test_a_failure_before_the_alias_moves_nothing_and_one_after_it_is_reported_not_raised(
    trained, root, tmp_path, monkeypatch
) -> None:
    """The alias move is register's commit point. A serving copy that cannot be written (the serving root is a
    file) fails the task with the champion, the high-water mark and the layout unchanged: a failed run never moves
    the champion. A champion-history write refused after the move is reported in the decision and shown by the
    history as a move it did not record, and the task succeeds (raising would make a failed run that moved it)."""
    from retrainer.registry import champion_history
    from retrainer.stages import register

    tracking = _tracking(tmp_path)
    cfgs = {day: small_config(root, tracking, date=day, min_gain=ALWAYS) for day in (MID, NEW)}
    _, first = _register(trained, MID, cfgs[MID])
    assert first.promoted
    blocked = tmp_path / "serving-is-a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("RETRAINER_SERVING_ROOT", str(blocked))
    with pytest.raises(OSError):
        _register(trained, NEW, cfgs[NEW])
    assert registry.alias_version(tracking, MODEL, "champion") == first.version
    assert promotion.high_water(tracking, MODEL) == promotion.Holder(first.version, MID)
    assert [m.version for m in champion_history.history(tracking, MODEL)] == [first.version]

    monkeypatch.delenv("RETRAINER_SERVING_ROOT")

    def refused(*args, **kwargs):
        raise registry.RegistryUnavailable("tag write refused")

    monkeypatch.setattr(register, "record_move", refused)
    _, second = _register(trained, NEW, cfgs[NEW])
    assert second.promoted and registry.alias_version(tracking, MODEL, "champion") == second.version
    assert "champion, but not recorded in the champion history (RegistryUnavailable: tag write refused)" in (
        second.decision)  # fmt: skip
    assert promotion.high_water(tracking, MODEL) == promotion.Holder(second.version, NEW)
    assert "no move is recorded" not in (champion_history.unrecorded_change(tracking, MODEL) or "")
    assert f"is v{second.version} but the last recorded move named v{first.version}" in (
        champion_history.unrecorded_change(tracking, MODEL))  # fmt: skip
    assert [p.name for p in (root / "serving" / MODEL).iterdir()] == [second.version]


def test_the_champion_is_compared_only_on_days_it_did_not_train_on(trained, root, tmp_path) -> None:
    """A champion scored on days it trained on looks better than it is: ``evaluate`` reads its version's
    ``train_range`` and compares on the evaluation days left, or holds the run and says why (a missing
    range is never read as "trained on nothing")."""
    from retrainer.stages.evaluate import evaluate_models

    tracking = _tracking(tmp_path)
    _, mid = _register(trained, MID, small_config(root, tracking, date=MID, min_gain=ALWAYS))
    assert mid.promoted
    client = registry.configure(tracking)
    written = registry.version_tags(tracking, MODEL, mid.version)[promotion.TRAIN_RANGE_TAG]
    validated, training, _ = trained[NEW]
    cfg = small_config(root, tracking, date=NEW, min_gain=ALWAYS)
    start, end = validated.features.eval_range  # two days
    assert written == "[2013-01-29, 2013-02-03)" and start == "2013-02-04"  # as trained: every day compared
    whole = evaluate_models(validated, training, cfg)
    assert whole.compared_range is None and whole.champion["rows"] == whole.new["rows"] and whole.promote

    second = (dt.date.fromisoformat(start) + dt.timedelta(days=1)).isoformat()
    client.set_model_version_tag(MODEL, mid.version, promotion.TRAIN_RANGE_TAG, f"[2013-01-29, {second})")
    part = evaluate_models(validated, training, cfg)  # as if it had trained on the first evaluation day
    assert part.compared_range == (second, end) and part.promote
    assert 0 < part.champion["rows"] == part.new_compared["rows"] < part.new["rows"] == whole.new["rows"]
    assert part.champion["auc"] != whole.champion["auc"]
    assert f"compared on [{second}, {end}) only: champion v{mid.version} trained on [2013-01-29, {second})" in (
        part.reason
    )

    client.set_model_version_tag(MODEL, mid.version, promotion.TRAIN_RANGE_TAG, f"[2013-01-29, {end})")
    every = evaluate_models(validated, training, cfg)
    assert not every.promote and every.champion is None
    assert f"held: champion v{mid.version} trained on [2013-01-29, {end}), which leaves 0 of" in every.reason

    client.delete_model_version_tag(MODEL, mid.version, promotion.TRAIN_RANGE_TAG)
    unknown = evaluate_models(validated, training, cfg)
    assert not unknown.promote and "the days it trained on are unknown" in unknown.reason


def test_a_rerun_of_the_champions_own_date_may_replace_it(trained, root, tmp_path) -> None:
    tracking = _tracking(tmp_path)
    _, first = _register(trained, MID, small_config(root, tracking, date=MID, min_gain=ALWAYS))
    from retrainer.stages.check_raw import check_raw_days
    from retrainer.stages.evaluate import evaluate_models
    from retrainer.stages.export import export_model
    from retrainer.stages.features import build_features
    from retrainer.stages.register import register_model
    from retrainer.stages.train import train_model
    from retrainer.stages.validate import validate_features

    # another DAG run of the same date with another model: a folder of its own (the store's days reused)
    cfg = small_config(root, tracking, date=MID, min_gain=ALWAYS, seed=7, run_id="manual__rerun")
    validated = validate_features(build_features(check_raw_days(cfg), cfg), cfg)
    assert RunLayout.of(cfg).root != RunLayout(Path(trained[MID][0].features_dir).parent).root
    rerun = train_model(validated, cfg)
    assert rerun.run_key != trained[MID][1].run_key and rerun.checkpoint_dir != trained[MID][1].checkpoint_dir
    evaluation = evaluate_models(validated, rerun, cfg)
    assert evaluation.promote and "held" not in evaluation.reason
    reg = register_model(validated, rerun, evaluation, export_model(validated, rerun, cfg), cfg)
    assert reg.promoted and reg.version != first.version and reg.aliases["champion"] == reg.version


class _Forbidden(http.server.BaseHTTPRequestHandler):
    """An MLflow behind a proxy that refuses us: every call answers 403, as MLflow 3.17 does for an
    unknown Host header."""

    def _deny(self) -> None:
        body = json.dumps({"error_code": "PERMISSION_DENIED", "message": "Invalid Host header"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _deny

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def forbidding_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_unreadable_registry_is_an_error_never_no_champion(trained, root, forbidding_server, monkeypatch) -> None:
    from retrainer.stages.evaluate import evaluate_models

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    validated, training, _ = trained[MID]
    for uri in (forbidding_server, "http://127.0.0.1:9"):  # a 403, and nothing listening at all
        cfg = small_config(root, uri, date=MID)
        with pytest.raises(registry.RegistryUnavailable, match="could not read the champion alias"):
            evaluate_models(validated, training, cfg)
        with pytest.raises(registry.RegistryUnavailable):
            registry.aliases(uri, MODEL)
        with pytest.raises(registry.RegistryUnavailable):  # the drift gate's reference: never "no champion"
            registry.champion_profile(uri, MODEL)
    assert registry.alias_version(f"sqlite:///{root / 'empty.db'}", MODEL, "champion") is None  # absent is absent


# A register attempt SIGKILLed right after one of its steps returns: the child patches that step to kill its own
# process (no handler, no cleanup runs), then runs the CLI as a worker would (forked from a preloaded process:
# support.prefork).
CLI = "retrainer.runners.cli"
KILLED_REGISTER = """
import os, signal, sys
from retrainer.core import atomic
from retrainer.registry import promotion
from retrainer.stages import register
point = sys.argv[1]

def killing(fn, when=lambda *a, **k: True):
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        if when(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapper

if point == "registered":  # the version exists, its tags are not complete, no alias
    register.log_and_register = killing(register.log_and_register)
elif point == "tagged":  # tags complete, no alias
    register._complete_tags = killing(register._complete_tags)
elif point == "intent":  # the promotion intent recorded, the alias not moved
    atomic.write_json = killing(atomic.write_json, lambda path, payload: str(path).endswith("promotion_intent.json"))
elif point == "marked":  # the high-water mark raised, the alias not moved
    promotion.raise_high_water = killing(promotion.raise_high_water)
elif point == "moved":  # the alias moved: killed as the champion history is about to record it
    record = register.record_move
    register.record_move = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL) or record(*a, **k)
from retrainer.runners.cli import main
sys.exit(main(["register", *sys.argv[2:]]))
"""


@pytest.mark.parametrize("point", ["registered", "tagged", "intent", "marked", "moved"])
def test_register_killed_at_each_step_then_retried_registers_once_and_announces_once(
    trained, root, tmp_path, point: str
) -> None:
    """A real SIGKILL of ``retrainer register`` after each of its steps, then its retry: one version for the run,
    the champion on it, the high-water mark on its date, and the change announced exactly once (the retry
    reports it until it is published; a later rerun reports none)."""
    from retrainer.registry.promotion import mark_published
    from retrainer.stages.evaluate import evaluate_models
    from retrainer.stages.register import RUN_KEY_TAG

    tracking = _tracking(tmp_path)
    cfg = small_config(root, tracking, date=MID, min_gain=ALWAYS)
    layout = RunLayout.of(cfg)
    for leftover in (layout.promotion_intent, layout.path_of(RegistrationResult)):  # another case's registry's
        leftover.unlink(missing_ok=True)
    validated, training, _ = trained[MID]
    evaluate_models(validated, training, cfg)  # against this case's empty registry: promote
    env = os.environ | cfg.secret_env()
    killed = prefork.run("-c", KILLED_REGISTER, [point, *cfg.to_argv()], env, tmp_path / "killed.log", timeout=300)
    assert killed.returncode == -9, killed.output[-3000:]
    assert layout.load_optional(RegistrationResult) is None  # the attempt recorded nothing as done

    retry = prefork.run("-m", CLI, ["register", *cfg.to_argv()], env, tmp_path / "retry.log", timeout=300)
    assert retry.returncode == 0, retry.output[-3000:]
    reg = layout.load(RegistrationResult)
    client = registry.configure(tracking)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == [reg.version]  # registered once, whichever step the kill followed
    assert versions[0].tags[RUN_KEY_TAG] == training.run_key
    assert registry.alias_version(tracking, MODEL, registry.CHAMPION) == reg.version
    assert promotion.high_water(tracking, MODEL) == promotion.Holder(reg.version, MID)
    assert reg.promoted and reg.champion_changed and reg.champion_before is None  # announced by the retry
    mark_published(layout.promotion_intent, reg.version)  # publish_champion's last step
    again = prefork.run("-m", CLI, ["register", *cfg.to_argv()], env, tmp_path / "again.log", timeout=300)
    assert again.returncode == 0, again.output[-3000:]
    assert not layout.load(RegistrationResult).champion_changed  # not announced twice


@pytest.mark.parametrize("stage", ["validate", "evaluate", "register"])
def test_an_mlflow_outage_in_each_stage_that_reads_it_fails_the_stage_and_nothing_passes(
    trained, root, tmp_path, monkeypatch, stage: str
) -> None:
    """MLflow down (nothing listening) while a stage that needs it runs: the stage raises RegistryUnavailable
    (Airflow retries it) and leaves no result behind: no drift gate passed as "not measured", no evaluation
    read as "no champion", no promotion intent. The stages that do not read MLflow (check_raw, features, train,
    export) are the ones the fixture ran."""
    from retrainer.stages.check_raw import check_raw_days
    from retrainer.stages.evaluate import evaluate_models
    from retrainer.stages.features import build_features
    from retrainer.stages.register import register_model
    from retrainer.stages.validate import validate_features

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracking = _tracking(tmp_path)
    _register(trained, MID, small_config(root, tracking, date=MID, min_gain=ALWAYS))  # a champion, while up
    down = "http://127.0.0.1:9"
    validated, training, exported = trained[NEW]
    if stage == "validate":
        cfg = small_config(root, down, date=NEW, run_id="mlflow-down")
        features = build_features(check_raw_days(cfg), cfg)
        with pytest.raises(registry.RegistryUnavailable, match="could not read the champion alias"):
            validate_features(features, cfg)
        assert RunLayout.of(cfg).load_optional(ValidationResult) is None
        assert Path(features.folder).is_dir() and not RunLayout.of(cfg).features.exists()  # not promoted
    elif stage == "evaluate":
        cfg = small_config(root, down, date=NEW, run_id="mlflow-down")
        with pytest.raises(registry.RegistryUnavailable, match="could not read the champion alias"):
            evaluate_models(validated, training, cfg)
        assert RunLayout.of(cfg).load_optional(EvaluationResult) is None
    else:
        evaluation = evaluate_models(validated, training, small_config(root, tracking, date=NEW, min_gain=ALWAYS))
        cfg = small_config(root, down, date=NEW, min_gain=ALWAYS)  # the same run, its registry gone
        intent = RunLayout.of(cfg).promotion_intent
        before = intent.read_text() if intent.exists() else None
        with pytest.raises(registry.RegistryUnavailable, match="could not read the experiment"):
            register_model(validated, training, evaluation, exported, cfg)
        assert (intent.read_text() if intent.exists() else None) == before
    assert registry.alias_version(tracking, MODEL, registry.CHAMPION) is not None  # the live registry: untouched


def test_registry_outage_is_retried_by_airflow_not_failed_as_bad_data() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from retrainer_plugins.failures import no_retry_on_bad_data

    with pytest.raises(registry.RegistryUnavailable), no_retry_on_bad_data():  # not AirflowFailException
        raise registry.RegistryUnavailable("server down")
    assert not issubclass(registry.RegistryUnavailable, AirflowFailException)


def test_a_reused_version_gets_back_the_tags_a_crash_left_out(trained, root, tmp_path) -> None:
    from retrainer.stages.register import register_model

    tracking = _tracking(tmp_path)
    cfg = small_config(root, tracking, date=MID, min_gain=ALWAYS)
    evaluation, first = _register(trained, MID, cfg)
    client = registry.configure(tracking)
    for tag in ("run_date", "train_range", "new_auc"):
        client.delete_model_version_tag(MODEL, first.version, tag)
    validated, training, exported = trained[MID]
    again = register_model(validated, training, evaluation, exported, cfg)
    assert again.reused_existing_version and again.version == first.version
    tags = registry.version_tags(tracking, MODEL, first.version)
    assert tags["run_date"] == str(MID) and tags["train_range"] == "[2013-01-29, 2013-02-03)"
    assert float(tags["new_auc"]) == pytest.approx(evaluation.new["auc"], abs=1e-6)


def _register_process(cfg, log: Path) -> prefork.Attempt:
    argv = ["--log-level", "INFO", "register", *cfg.to_argv()]
    return prefork.start("-m", CLI, argv, os.environ | cfg.secret_env(), log)


def test_two_promotions_racing_from_two_processes_are_serialised(trained, root, tmp_path) -> None:
    """Both runs were evaluated against the same champion; the lock makes the second one see the
    first one's promotion and re-evaluate (or hold), so the newest-dated model ends up champion."""
    from retrainer.stages.evaluate import evaluate_models

    tracking = _tracking(tmp_path)
    _, base = _register(trained, OLD, small_config(root, tracking, date=OLD, min_gain=ALWAYS))
    cfgs = {day: small_config(root, tracking, date=day, min_gain=ALWAYS) for day in (MID, NEW)}
    for day, cfg in cfgs.items():
        validated, training, _ = trained[day]
        evaluation = evaluate_models(validated, training, cfg)  # saved in the run's folder for the CLI
        assert evaluation.promote and evaluation.champion_version == base.version

    logs = {day: tmp_path / f"register-{day}.log" for day in cfgs}
    with promotion.promotion_lock(str(root), MODEL):  # hold it so that both processes queue up on it
        procs = {day: _register_process(cfg, logs[day]) for day, cfg in cfgs.items()}
        deadline = time.monotonic() + 240
        while not all("waiting for the promotion lock" in logs[d].read_text() for d in cfgs):
            assert all(p.process.is_alive() for p in procs.values()), {d: logs[d].read_text()[-2000:] for d in cfgs}
            assert time.monotonic() < deadline, "the register processes never reached the lock"
            time.sleep(0.5)
        assert registry.alias_version(tracking, MODEL, "champion") == base.version  # nobody moved it yet
    for day, proc in procs.items():
        assert proc.wait(timeout=300) == 0, logs[day].read_text()[-3000:]

    results = {day: RunLayout.of(cfg).load(RegistrationResult) for day, cfg in cfgs.items()}
    newest = results[NEW]
    assert registry.alias_version(tracking, MODEL, "champion") == newest.version
    moved = [day for day, r in results.items() if "champion moved from" in r.decision]
    assert len(moved) == 1, {d: r.decision for d, r in results.items()}  # exactly one saw the other's move
    second, first = moved[0], ({MID, NEW} - {moved[0]}).pop()
    assert f"champion moved from v{base.version} to v{results[first].version}" in results[second].decision
    if second == MID:  # the newer run won the lock: the older one re-evaluated and was held by date
        assert not results[MID].promoted and "held: this run's date 2013-02-05 is before" in results[MID].decision
    else:  # the older one promoted first; the newer one re-evaluated against it and replaced it
        assert results[MID].promoted and results[NEW].promoted
    reevaluated = RunLayout.of(cfgs[second]).load(EvaluationResult)
    assert reevaluated.champion_version == results[first].version  # the saved evaluation is the re-evaluation


def _scores(baselines: dict) -> dict:
    return {name: {k: v for k, v in m.items() if k != "fit_seconds"} for name, m in baselines.items()}


def test_a_repeated_evaluation_of_a_run_reuses_its_baselines_and_refits_when_their_key_changes(
    trained, root, tmp_path, caplog
) -> None:
    """register re-evaluates under the promotion lock when the champion moved, and a retried evaluate runs again:
    the scikit-learn baselines do not depend on the champion, so the run keeps them; a changed key refits."""
    from retrainer.core import atomic
    from retrainer.stages.evaluate import evaluate_models

    cfg = small_config(root, _tracking(tmp_path), date=MID, min_gain=ALWAYS)
    layout = RunLayout.of(cfg)
    layout.baselines.unlink(missing_ok=True)
    validated, training, _ = trained[MID]
    first = evaluate_models(validated, training, cfg)
    assert set(first.baselines) == {"hist_gradient_boosting", "hist_gradient_boosting_ordered", "logistic_regression"}
    with caplog.at_level("INFO", logger="retrainer.stages.evaluate"):
        again = evaluate_models(validated, training, cfg)
    assert again.baselines == first.baselines and "baselines: reusing this run's" in caplog.text
    kept = atomic.read_json(layout.baselines)
    atomic.write_json(layout.baselines, {**kept, "metrics": {"logistic_regression": {"auc": 0.0}}, "key": "other"})
    caplog.clear()
    with caplog.at_level("INFO", logger="retrainer.stages.evaluate"):
        refit = evaluate_models(validated, training, cfg)
    assert "reusing" not in caplog.text
    assert _scores(refit.baselines) == _scores(first.baselines)  # refitted: the same models, the same scores
    assert atomic.read_json(layout.baselines)["key"] == kept["key"]


# Randomized interleavings of three runs' last steps: a backfill of OLD, a run of MID triggered from the UI and the
# scheduled run of NEW, each evaluate -> register -> publish_champion (the steps that read or move the champion;
# the earlier ones write only the run's own folder: test_run_isolation.py), in a seeded random order, with
# crashes injected at random points and the step retried as Airflow would. The step is the unit: a crash is an
# exception raised right after a sub-step returns (its locks and files as a SIGKILL there would leave them; the
# SIGKILL itself is test_register_killed_at_each_step_then_retried_registers_once_and_announces_once).
INTERLEAVINGS = 50
RUNS = {"backfill": OLD, "ui": MID, "scheduled": NEW}


class Crash(BaseException):
    """An attempt that died after a sub-step; its retry runs the whole step again. A BaseException, like the
    death it stands for: register's after-the-move steps report an Exception instead of raising it."""


def _crash_points(monkeypatch, arm: dict) -> None:
    """Patch each crash point to raise :class:`Crash` right after it returns, once, when ``arm['point']``
    names it."""
    from retrainer.core import atomic
    from retrainer.stages import register

    def crashing(point: str, fn, when=lambda *a, **k: True, before: bool = False):
        def wrapper(*args, **kwargs):
            out = None if before else fn(*args, **kwargs)
            if arm.get("point") == point and when(*args, **kwargs):
                arm["point"] = None
                raise Crash(point)
            return fn(*args, **kwargs) if before else out

        return wrapper

    def saved(stage: type):
        return lambda layout_self, result, *a, **k: isinstance(result, stage)

    monkeypatch.setattr(register, "log_and_register", crashing("registered", register.log_and_register))
    monkeypatch.setattr(register, "_complete_tags", crashing("tagged", register._complete_tags))
    monkeypatch.setattr(promotion, "raise_high_water", crashing("marked", promotion.raise_high_water))
    monkeypatch.setattr(register, "record_move", crashing("moved", register.record_move, before=True))
    write_json = atomic.write_json
    intent = crashing("intent", write_json, lambda path, payload: str(path).endswith("promotion_intent.json"))
    monkeypatch.setattr(atomic, "write_json", intent)
    monkeypatch.setattr(promotion, "mark_published", crashing("published", promotion.mark_published))
    # evaluate_models' last sub-step: its result saved in the run's folder
    monkeypatch.setattr(RunLayout, "save", crashing("evaluated", RunLayout.save, saved(EvaluationResult)))


POINTS = {
    "evaluate": ["evaluated"],
    "register": ["registered", "tagged", "intent", "marked", "moved"],
    "publish": ["published"],
}


def _publish(layout: RunLayout, events: list[dict]) -> None:
    """publish_champion as the DAG runs it: an event only when the registration changed the champion, the
    announcement marked published after the event is attached (a crash before the task ends emits nothing)."""
    registration = layout.load(RegistrationResult)
    if not registration.champion_changed:
        return
    pending = {"version": registration.version}
    promotion.mark_published(layout.promotion_intent, registration.version)
    events.append(pending)  # the task succeeded: Airflow emits the Asset event now


def _run_step(step: str, trained_day: tuple, cfg, layout: RunLayout, events: list[dict]) -> None:
    from retrainer.stages.evaluate import evaluate_models
    from retrainer.stages.register import register_model

    validated, training, exported = trained_day
    if step == "evaluate":
        evaluate_models(validated, training, cfg)
    elif step == "register":
        register_model(validated, training, layout.load(EvaluationResult), exported, cfg)
    else:
        _publish(layout, events)


def test_randomized_interleavings_of_backfill_ui_and_scheduled_runs_keep_every_trust_rule(
    trained, root, tmp_path, monkeypatch
) -> None:
    """50 seeded schedules: in each, the champion never moves back in time (checked after every step), every
    run registers exactly one version and ends promoted or held with a reason, every version that was ever
    champion is announced exactly once and no other, the newest run ends champion with the high-water mark on
    its date, and the champion's registered SavedModel is the one its run exported and evaluated."""
    import random

    from retrainer.core.fingerprint import tree_digest
    from retrainer.registry.artefacts import SAVED_MODEL_DIGEST_TAG, download_saved_model
    from retrainer.stages.register import RUN_KEY_TAG

    arm: dict = {}
    _crash_points(monkeypatch, arm)
    tracking = _tracking(tmp_path)
    client = registry.configure(tracking)
    crashes = 0
    for seed in range(INTERLEAVINGS):
        rng = random.Random(seed)
        if client.search_registered_models(f"name = '{MODEL}'"):  # the last schedule's versions, aliases and marks
            client.delete_registered_model(MODEL)
        cfgs = {kind: small_config(root, tracking, date=day, min_gain=ALWAYS) for kind, day in RUNS.items()}
        layouts = {kind: RunLayout.of(cfg) for kind, cfg in cfgs.items()}
        for layout in layouts.values():  # the previous schedule's (each schedule is a fresh deployment)
            for leftover in (
                layout.promotion_intent,
                layout.path_of(RegistrationResult),
                layout.path_of(EvaluationResult),
            ):
                leftover.unlink(missing_ok=True)
        pending = [kind for kind in RUNS for _ in range(3)]
        rng.shuffle(pending)  # the k-th occurrence of a run is its k-th step: every interleaving of the three
        done = {kind: 0 for kind in RUNS}
        events: list[dict] = []
        champions: list[dt.date] = []
        for kind in pending:
            step = ("evaluate", "register", "publish")[done[kind]]
            done[kind] += 1
            args = (step, trained[RUNS[kind]], cfgs[kind], layouts[kind], events)
            if rng.random() < 0.3:
                arm["point"] = rng.choice(POINTS[step])
                try:
                    _run_step(*args)
                except Crash:
                    crashes += 1
                arm["point"] = None
            _run_step(*args)  # the attempt (or Airflow's retry of the crashed one)
            holder = promotion.holder(tracking, MODEL, registry.CHAMPION)
            if holder is not None:
                assert not champions or holder.run_date >= champions[-1], (seed, pending, champions, holder)
                if not champions or champions[-1] != holder.run_date:
                    champions.append(holder.run_date)

        versions = client.search_model_versions(f"name = '{MODEL}'")
        keys = sorted(v.tags[RUN_KEY_TAG] for v in versions)
        assert keys == sorted(trained[d][1].run_key for d in RUNS.values()), (seed, pending)  # one version per run
        results = {kind: layout.load(RegistrationResult) for kind, layout in layouts.items()}
        for kind, result in results.items():
            assert result.decision and (result.promoted or "held" in result.decision or "not promoted" in
                                        result.decision), (seed, kind, result.decision)  # fmt: skip
        announced = [e["version"] for e in events]
        ever_champion = {results[kind].version for kind in RUNS if RUNS[kind] in champions}
        assert sorted(announced) == sorted(ever_champion) and len(set(announced)) == len(announced), (
            seed, pending, announced, champions)  # fmt: skip
        newest = results["scheduled"]
        assert registry.alias_version(tracking, MODEL, registry.CHAMPION) == newest.version, (seed, pending)
        assert promotion.high_water(tracking, MODEL) == promotion.Holder(newest.version, NEW)
        exported = trained[NEW][2]
        assert registry.version_tags(tracking, MODEL, newest.version)[SAVED_MODEL_DIGEST_TAG] == (
            exported.saved_model_digest)  # fmt: skip
        assert layouts["scheduled"].load(EvaluationResult).run_key == trained[NEW][1].run_key
        serving = root / "serving" / MODEL  # TF Serving's layout: the champion only, no attempt's leftovers
        assert sorted(p.name for p in serving.iterdir()) == [newest.version], (seed, pending)
        if seed % 10 == 0:  # the bytes themselves, on a sample (a download per schedule costs more than the rest)
            folder = download_saved_model(tracking, MODEL, newest.version, tmp_path / f"dl{seed}")
            assert tree_digest(folder) == exported.saved_model_digest
    assert crashes >= INTERLEAVINGS // 2  # the injection really ran (about 0.3 x 9 steps per schedule)
