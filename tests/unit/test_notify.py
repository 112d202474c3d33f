"""`fmnist deploy --notify`: what the messages say, which decisions are news, the automations' names and triggers
(flows/notify.py), without a server. tests/cli/test_notify.py sends them through a real Prefect server."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from flows import notify
from flows.notify import (PROMOTED_EVENT, REGRESSION_EVENT, Targets, announce_decisions, automation_name, automations,
                          check_url, failed_templates, newly_promoted, promoted_message, regression_message,
                          regressions, webhook_block_name)
from tasks.config import PipelineConfig
from tasks.errors import ConfigError
from tasks.runs.champion import Decision
from tasks.runs.history import Reference

FIRST = Decision("cnn2/report", True, "no champion yet", 0.9123, None)
HELD = Decision("mlp1/report", True, "already champion (this run): 88.00%", 0.88, 0.88)
BETTER = Decision("overall", True, "better", 0.9123, 0.9080, "mcnemar", 40, 83, 0.0001)
MARGIN = Decision("cnn1_mlp/report", True, "beats it by the margin", 0.905, 0.90, "margin")
WORSE = Decision("baseline/report", False, "not shown better", 0.8310, 0.8420, "mcnemar", 250, 140, 0.99999)
NOISE = Decision("mlp3_dropout/report", False, "not shown better", 0.8790, 0.8800, "mcnemar", 60, 50, 0.83)
DROPPED = Reference(("n1", "n2", "n3"), -0.0104, 2e-9)  # a model a point below its slot's last three
STEADY = Reference(("n1", "n2", "n3"), -0.0011, 0.21)


def test_only_slots_taken_now_are_news():
    """A first champion, a McNemar or margin promotion are news; a slot the run already held (resumed, retried) and
    a kept champion are not."""
    assert newly_promoted([FIRST, HELD, BETTER, MARGIN, WORSE, NOISE]) == [FIRST, BETTER, MARGIN]


def test_a_regression_is_a_model_worse_than_its_slots_recent_models_never_one_worse_than_a_champion():
    """Issue 27 §3: a kept champion far better than the model (WORSE: b 250, c 140) is no alert by itself; only a
    model below its slot's recent models beyond the alert level is."""
    assert regressions({}) == []
    assert regressions({"baseline/report": DROPPED, "mlp1/report": STEADY}) == [("baseline/report", DROPPED)]


def test_the_promotion_message_names_the_run_the_figures_and_the_commands():
    subject, body = promoted_message("20261202-020000-abcd1234", [FIRST, BETTER], "s3://bucket/fmnist",
                                     "http://127.0.0.1:8333", " (preset 'full')")
    assert subject == "fmnist: run 20261202-020000-abcd1234 promoted 2 champions (cnn2/report, overall)"
    assert "Run 20261202-020000-abcd1234 (preset 'full') is the new champion of 2 slots:" in body
    assert "- cnn2/report: 91.23%, the first champion of its slot" in body
    assert ("- overall: 91.23% over 90.80%; b = 40 rows only the champion got right, c = 83 only this model; "
            "McNemar exact one-sided p = 0.0001") in body
    assert "`fmnist champion --store s3://bucket/fmnist --s3-endpoint http://127.0.0.1:8333`" in body
    assert "`fmnist runs show 20261202-020000-abcd1234 --store s3://bucket/fmnist --s3-endpoint" in body


def test_the_regression_message_gives_the_drop_the_recent_runs_and_p():
    subject, body = regression_message("r1", [("baseline/report", DROPPED)], "/data/store")
    assert subject == "fmnist: run r1 is worse than its slots' recent models beyond noise (baseline/report)"
    assert "(paired test on each row, one-sided p < 0.001); the champions are kept" in body
    assert "- baseline/report: -1.04 points against the mean of runs n1, n2, n3; p (worse) = 2e-09" in body
    assert "`fmnist runs show r1 --store /data/store`" in body


def _run(tmp_path, **config) -> SimpleNamespace:
    return SimpleNamespace(run_id="r1", store=SimpleNamespace(uri=str(tmp_path)),
                           config=PipelineConfig(store=str(tmp_path), **config))


@pytest.fixture
def emitted(monkeypatch) -> list[tuple]:
    sent: list[tuple] = []
    monkeypatch.setattr(notify, "_emit", lambda event, run, subject, body, slots: sent.append((event, subject, slots)))
    return sent


def test_a_full_run_announces_its_promotions_and_regressions_once_each(tmp_path, emitted):
    references = {"baseline/report": DROPPED, "mlp3_dropout/report": STEADY}
    assert announce_decisions(_run(tmp_path), [FIRST, HELD, BETTER, WORSE, NOISE], None, references) == [
        PROMOTED_EVENT, REGRESSION_EVENT]
    (_, _, promoted), (_, _, worse) = emitted
    assert [s["slot"] for s in promoted] == ["cnn2/report", "overall"]
    assert promoted[1] == {"slot": "overall", "accuracy": 0.9123, "champion_accuracy": 0.9080, "rule": "mcnemar",
                           "b": 40, "c": 83, "p": 0.0001}
    assert worse == [{"slot": "baseline/report", "delta": -0.0104, "recent_runs": ["n1", "n2", "n3"],
                      "p_worse": 2e-9}]


def test_a_kept_champion_better_than_the_model_alone_sends_nothing(tmp_path, emitted):
    """A searched model holding `overall`, or a champion lucky on these rows, is information, not a regression."""
    assert announce_decisions(_run(tmp_path), [WORSE, NOISE], None, {"mlp3_dropout/report": STEADY}) == []
    assert emitted == []


def test_a_custom_or_quick_run_is_no_regression_and_nothing_new_emits_nothing(tmp_path, emitted):
    """Fewer epochs than the preset's make worse models on purpose: not a regression of the nightly."""
    assert announce_decisions(_run(tmp_path, max_epochs=2), [WORSE], None, {"baseline/report": DROPPED}) == []
    assert announce_decisions(_run(tmp_path, preset="quick"), [WORSE], None, {"baseline/report": DROPPED}) == []
    assert announce_decisions(_run(tmp_path), [HELD, NOISE]) == []
    assert emitted == []


def test_a_notice_that_cannot_be_sent_never_fails_the_run(tmp_path, monkeypatch):
    said = []

    def broken(*args):
        raise RuntimeError("no events client")

    monkeypatch.setattr(notify, "_emit", broken)
    assert announce_decisions(_run(tmp_path), [FIRST], said.append) == []
    assert said == ["could not emit the champion events (RuntimeError: no events client)"]


def test_automations_are_named_after_the_deployment_and_match_it_by_id():
    """One of each kind per deployment, found again by name on the next deploy; each matches the deployment's id."""
    deployment_id, block = uuid.uuid4(), uuid.uuid4()
    made = automations("fmnist-run", "nightly", deployment_id, Targets((block,), ("webhook block x",)))
    assert [a.name for a in made] == [f"fmnist fmnist-run/nightly: {what}"
                                      for what in ("run failed", "champion promoted", "regression")]
    assert automation_name("fmnist-search", "weekly", "failed") == "fmnist fmnist-search/weekly: run failed"
    failed, promoted, regression = made
    assert failed.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
    assert promoted.trigger.expect == {PROMOTED_EVENT} and regression.trigger.expect == {REGRESSION_EVENT}
    for automation in made:
        related = automation.trigger.match_related.model_dump()
        assert related == {"prefect.resource.id": f"prefect.deployment.{deployment_id}"}
        assert automation.trigger.posture == "Reactive" and automation.trigger.threshold == 1
        (action,) = automation.actions
        assert action.type == "send-notification" and action.block_document_id == block
        assert automation.owner_resource is None  # not the deployment's: registering it again would delete them


def test_the_webhook_block_name_is_stable_and_hides_the_url():
    url = "https://hooks.example.com/services/T000/B000/secret"
    assert webhook_block_name(url) == webhook_block_name(url) != webhook_block_name(url + "x")
    assert "secret" not in webhook_block_name(url) and webhook_block_name(url).startswith("fmnist-notify-")


@pytest.mark.parametrize("url", ["hooks.slack.com/services/x", "ftp://host/x", "mailto:ops@example.com", "https://"])
def test_a_url_that_takes_no_post_is_refused_in_one_line(url):
    with pytest.raises(ConfigError, match=r"--notify .*expected an http\(s\):// URL"):
        check_url(url)


def _render(template: str, **context) -> str:
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.utilities.user_templates import register_user_template_filters, render_user_template_sync

    register_user_template_filters(all_filters)  # as the server's notification action does
    return render_user_template_sync(template, context)


def _flow_run(run_id: str | None = None, **config) -> SimpleNamespace:
    return SimpleNamespace(id=uuid.UUID("12345678-9abc-4def-8123-456789abcdef"), name="witty-cat",
                           created=datetime(2026, 12, 2, 1, 2, 3, tzinfo=timezone.utc), expected_start_time=None,
                           parameters={"config": {"store": "/data/store", "s3_endpoint": None, "run_id": run_id,
                                                  **config}},
                           state=SimpleNamespace(name="TimedOut", message="the time limit of 6h was reached"))


def test_the_failure_message_names_the_run_as_the_flow_derives_it_and_the_commands():
    """The server renders it from the flow run: the run id is `<created UTC>-<the flow run id's last 8 hex digits>`
    (flows.flow_run), or the config's run_id when one was given."""
    subject, body = failed_templates("fmnist-run", "nightly")
    flow_run = _flow_run()
    assert _render(subject, flow_run=flow_run) == ("fmnist: fmnist-run/nightly run 20261202-010203-89abcdef ended "
                                                   "TimedOut")
    text = _render(body, flow_run=flow_run)
    assert text.splitlines()[:2] == [
        ("Flow run 'witty-cat' (12345678-9abc-4def-8123-456789abcdef) of deployment fmnist-run/nightly ended "
         "TimedOut: the time limit of 6h was reached"), "Run: 20261202-010203-89abcdef"]
    assert "`fmnist run --resume 20261202-010203-89abcdef --store /data/store`" in text
    assert "`fmnist runs show 20261202-010203-89abcdef --store /data/store`" in text
    given = _render(body, flow_run=_flow_run("nightly-7", s3_endpoint="http://s3.local:8333", store="s3://b/p"))
    assert "`fmnist run --resume nightly-7 --store s3://b/p --s3-endpoint http://s3.local:8333`" in given
    search = _render(failed_templates("fmnist-search", "weekly", "search")[1], flow_run=flow_run)
    assert "`fmnist search --resume 20261202-010203-89abcdef --store /data/store`" in search
