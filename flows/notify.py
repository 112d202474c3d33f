"""Notifications with Prefect's own machinery: `fmnist deploy --notify URL` (or `--notify-block NAME`) gives the
deployment three automations, each sending a notification through a Prefect notification block:

- "run failed": a flow run of the deployment ends Failed, Crashed or TimedOut (Prefect's own state events);
- "champion promoted": the flow's event `fmnist.champion.promoted` (one per run, every slot it took);
- "regression": the flow's event `fmnist.champion.regression`: a full run of the report's protocol whose model is
  worse than its slot's last 3 models on the same test rows (tasks.runs.history; never the champion, lucky by
  selection, nor `overall`, nor a search).

Each message names the run (its run id), what happened, and the command that resumes or inspects it. The flow
writes the message of its own events (`payload.message`, built here with the commands of tasks/runs/hints.py); the
"run failed" message is a Jinja template the server renders from the flow run (a crashed run writes nothing).

The automations are named after the deployment (`fmnist fmnist-run/nightly: run failed`) and updated in place by
name, so deploying again never duplicates them; they match the deployment by its id and are not "owned" by it
(Prefect deletes a deployment's owned automations every time the deployment is registered again).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flows.flow_run import CREATED_FORMAT, RUN_ID_HEX
from tasks.errors import ConfigError
from tasks.runs.champion import Decision
from tasks.runs.hints import store_options
from tasks.runs.history import ALERT_ALPHA, Reference

if TYPE_CHECKING:
    from tasks.runs.run import Run

PROMOTED_EVENT = "fmnist.champion.promoted"
REGRESSION_EVENT = "fmnist.champion.regression"
ENDED_BADLY = ("Failed", "Crashed", "TimedOut")  # flow-run state names: Prefect emits prefect.flow-run.<name>

# The kinds of automation, and the words their names end with.
WHAT = {"failed": "run failed", "promoted": "champion promoted", "regression": "regression"}


# --- the flow's side: what it says, and the events ------------------------------------------------------------------

def newly_promoted(decisions: Sequence[Decision]) -> list[Decision]:
    """The slots this run took now: a slot it already held (a resumed run, a retried task) is not news."""
    return [d for d in decisions if d.promoted and (d.rule or d.champion_accuracy is None)]


def regressions(references: Mapping[str, Reference]) -> list[tuple[str, Reference]]:
    """The slots whose model tonight is worse than the slot's recent models beyond noise (tasks.runs.history: p below
    its ALERT_ALPHA), never a comparison with a champion, which is lucky by selection."""
    return [(slot, ref) for slot, ref in references.items() if ref.regressed]


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _promotion_line(d: Decision) -> str:
    if d.champion_accuracy is None:
        return f"- {d.slot}: {_percent(d.candidate_accuracy)}, the first champion of its slot"
    if d.rule == "mcnemar":
        return (f"- {d.slot}: {_percent(d.candidate_accuracy)} over {_percent(d.champion_accuracy)}; b = {d.b:,} rows "
                f"only the champion got right, c = {d.c:,} only this model; McNemar exact one-sided p = "
                f"{d.p_value:.3g}")
    return f"- {d.slot}: {_percent(d.candidate_accuracy)} over {_percent(d.champion_accuracy)} ({d.rule} rule)"


def _inspect(run_id: str, store: str, s3_endpoint: str | None) -> str:
    return f"fmnist runs show {run_id}{store_options(store, s3_endpoint)}"


def promoted_message(run_id: str, promoted: Sequence[Decision], store: str, s3_endpoint: str | None = None,
                     where: str = "") -> tuple[str, str]:
    """(subject, body) of "champion promoted": the run, each slot it took with its figures, the commands."""
    slots = ", ".join(d.slot for d in promoted)
    subject = f"fmnist: run {run_id} promoted {len(promoted)} champion{'s' if len(promoted) != 1 else ''} ({slots})"
    plural = "s" if len(promoted) != 1 else ""
    lines = [f"Run {run_id}{where} is the new champion of {len(promoted)} slot{plural}:",
             *(_promotion_line(d) for d in promoted), "",
             f"Champions: `fmnist champion{store_options(store, s3_endpoint)}`",
             f"The run: `{_inspect(run_id, store, s3_endpoint)}`"]
    return subject, "\n".join(lines)


def regression_message(run_id: str, worse: Sequence[tuple[str, Reference]], store: str,
                       s3_endpoint: str | None = None, where: str = "") -> tuple[str, str]:
    """(subject, body) of "regression": each slot whose model is worse than the slot's recent models beyond noise."""
    slots = ", ".join(slot for slot, _ in worse)
    subject = f"fmnist: run {run_id} is worse than its slots' recent models beyond noise ({slots})"
    lines = [(f"Run {run_id}{where}: these models are worse than the last models of their slot on the same test rows "
              f"(paired test on each row, one-sided p < {ALERT_ALPHA:g}); the champions are kept:")]
    lines += [f"- {slot}: {100 * ref.delta:+.2f} points against the mean of runs {', '.join(ref.runs)}; "
              f"p (worse) = {ref.p_worse:.3g}" for slot, ref in worse]
    lines += ["", f"The run: `{_inspect(run_id, store, s3_endpoint)}`",
              f"Champions: `fmnist champion{store_options(store, s3_endpoint)}`"]
    return subject, "\n".join(lines)


def _figures(d: Decision) -> dict[str, Any]:
    return {"slot": d.slot, "accuracy": d.candidate_accuracy, "champion_accuracy": d.champion_accuracy,
            "rule": d.rule or "first", "b": d.b, "c": d.c, "p": d.p_value}


def _regression_figures(slot: str, ref: Reference) -> dict[str, Any]:
    return {"slot": slot, "delta": ref.delta, "recent_runs": list(ref.runs), "p_worse": ref.p_worse}


def _emit(event: str, run: "Run", subject: str, body: str, slots: list[dict[str, Any]]) -> None:
    """One event about the run, related to the flow run's deployment (the automations match it by its id)."""
    from prefect.events import emit_event
    from prefect.runtime import deployment, flow_run

    related = []
    if deployment.get_id():
        related.append({"prefect.resource.id": f"prefect.deployment.{deployment.get_id()}",
                        "prefect.resource.role": "deployment"})
    emit_event(event, resource={"prefect.resource.id": f"fmnist.run.{run.run_id}", "prefect.resource.name": run.run_id},
               related=related,
               payload={"run_id": run.run_id, "store": run.store.uri, "flow_run_id": flow_run.get_id(),
                        "subject": subject, "message": body, "slots": slots})


def announce_decisions(run: "Run", decisions: Sequence[Decision], log=None,
                       references: Mapping[str, Reference] | None = None) -> list[str]:
    """Emit "champion promoted" when the run took a slot, and "regression" when a full run of the report's protocol
    is worse than its slots' recent models beyond noise (`references`, tasks.runs.history). Never fails the run: a
    notice that could not be sent is logged. Returns the events emitted."""
    config = run.config
    where = f" ({config.protocol()})"
    emitted = []
    try:
        promoted = newly_promoted(decisions)
        if promoted:
            subject, body = promoted_message(run.run_id, promoted, run.store.uri, config.s3_endpoint, where)
            _emit(PROMOTED_EVENT, run, subject, body, [_figures(d) for d in promoted])
            emitted.append(PROMOTED_EVENT)
        worse = regressions(references or {}) if config.preset == "full" and config.comparable else []
        if worse:
            subject, body = regression_message(run.run_id, worse, run.store.uri, config.s3_endpoint, where)
            _emit(REGRESSION_EVENT, run, subject, body, [_regression_figures(slot, ref) for slot, ref in worse])
            emitted.append(REGRESSION_EVENT)
    except Exception as exc:  # a notice is never worth a failed run
        if log:
            log(f"could not emit the champion events ({type(exc).__name__}: {exc})")
    return emitted


# --- the deployment's side: the block and the automations -----------------------------------------------------------

class NotifyError(ConfigError):
    """--notify or --notify-block cannot be used."""


def automation_name(flow_name: str, deployment_name: str, what: str) -> str:
    """`fmnist fmnist-run/nightly: run failed`: one automation of each kind per deployment, found again by name."""
    return f"fmnist {flow_name}/{deployment_name}: {WHAT[what]}"


def webhook_block_name(url: str) -> str:
    """The block `--notify URL` creates (or reuses): named after a digest of the URL, which is a secret."""
    return f"fmnist-notify-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotifyError(f"--notify {url!r}: expected an http(s):// URL that takes a POST (a Slack incoming webhook, "
                          "a generic webhook); for e-mail or another service create a Prefect notification block and "
                          "give --notify-block NAME")
    return url


def is_slack(url: str) -> bool:
    return urlsplit(url).hostname == "hooks.slack.com"


def _notification_blocks(client) -> list[Any]:
    return [doc for doc in client.read_block_documents(include_secrets=False)
            if not doc.is_anonymous and "notify" in (doc.block_schema.capabilities if doc.block_schema else [])]


def find_notify_block(name: str) -> Any:
    """The block document of an existing notification block, named `NAME` or `TYPE/NAME` (as the UI's block page
    says it: `slack-webhook/ops`); NotifyError in one line when there is none, or the name is ambiguous."""
    from prefect import get_client

    kind, _, bare = name.rpartition("/")
    with get_client(sync_client=True) as client:
        blocks = _notification_blocks(client)
    found = [doc for doc in blocks if doc.name == bare and (not kind or doc.block_type.slug == kind)]
    if len(found) == 1:
        return found[0]
    known = ", ".join(sorted(f"{doc.block_type.slug}/{doc.name}" for doc in blocks)) or "none"
    if not found:
        raise NotifyError(f"--notify-block {name!r}: no notification block of that name on the Prefect server "
                          f"(notification blocks there: {known}); create one in the UI (Blocks) or give --notify URL")
    raise NotifyError(f"--notify-block {name!r}: several notification blocks have that name; say which one as "
                      f"TYPE/NAME: {', '.join(f'{doc.block_type.slug}/{doc.name}' for doc in found)}")


def ensure_webhook_block(url: str) -> Any:
    """The block that POSTs to `url` (created, or the same one again): Prefect's SlackWebhook for a Slack incoming
    webhook, else a Custom Webhook whose JSON is {"text": subject and body, "subject", "body"} (what Slack-like
    receivers read). The URL is kept as the block's secret, not shown in the UI."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    name = webhook_block_name(check_url(url))
    if is_slack(url):
        block = SlackWebhook(url=url)
    else:
        block = CustomWebhookNotificationBlock(
            name=name, url="{{webhook_url}}", secrets={"webhook_url": url},
            json_data={"text": "{{subject}}\n\n{{body}}", "subject": "{{subject}}", "body": "{{body}}"})
    return block.save(name, overwrite=True)  # the block document's id


@dataclass(frozen=True)
class Targets:
    """Where the notifications go: the block documents' ids, and how they are named to the user."""

    block_ids: tuple[Any, ...]
    names: tuple[str, ...]


def notify_targets(url: str | None, block: str | None) -> Targets | None:
    """The blocks `--notify URL` and `--notify-block NAME` name, checked before anything is registered
    (a missing block is a NotifyError); None when neither was given."""
    ids, names = [], []
    if url:
        check_url(url)  # before the block is looked up or anything is written
    if block:
        doc = find_notify_block(block)
        ids.append(doc.id)
        names.append(f"block {doc.block_type.slug}/{doc.name}")
    if url:
        ids.append(ensure_webhook_block(url))
        names.append(f"webhook block {webhook_block_name(url)}")
    return Targets(tuple(ids), tuple(names)) if ids else None


def _run_id_template() -> str:
    """Jinja: the run id of the flow run that ended, as flows.flow_run.run_id_of_flow_run derives it (the config's
    run_id when one was given)."""
    derived = (f"(flow_run.created or flow_run.expected_start_time).strftime('{CREATED_FORMAT}') ~ '-' ~ "
               f"(flow_run.id|string|replace('-', ''))[-{RUN_ID_HEX}:]")
    return ("{%- set config = flow_run.parameters.config or {} -%}"
            f"{{%- set run_id = config.run_id or ({derived}) -%}}")


def failed_templates(flow_name: str, deployment_name: str, flow: str = "run") -> tuple[str, str]:
    """(subject, body) Jinja templates of "run failed", rendered by the server with the flow run that ended:
    `flow` is the command of the deployment's flow (`run`, `search`), whose --resume finishes it."""
    head = _run_id_template()
    store = "{{ config.store }}{% if config.s3_endpoint %} --s3-endpoint {{ config.s3_endpoint }}{% endif %}"
    subject = head + f"fmnist: {flow_name}/{deployment_name} run {{{{ run_id }}}} ended {{{{ flow_run.state.name }}}}"
    body = head + "\n".join([
        (f"Flow run '{{{{ flow_run.name }}}}' ({{{{ flow_run.id }}}}) of deployment {flow_name}/{deployment_name} "
         f"ended {{{{ flow_run.state.name }}}}: {{{{ flow_run.state.message or 'no message' }}}}"),
        "Run: {{ run_id }}",
        (f"If it began, resume it (nothing finished is redone): `fmnist {flow} --resume {{{{ run_id }}}} "
         f"--store {store}`, or the UI's Retry on the flow run"),
        f"Inspect it: `fmnist runs show {{{{ run_id }}}} --store {store}` (listed once the run began)",
        "{% if flow_run|ui_url %}Prefect: {{ flow_run|ui_url }}{% endif %}",
    ])
    return subject, body


EVENT_SUBJECT = "{{ event.payload.subject }}"
EVENT_BODY = "{{ event.payload.message }}"


def automations(flow_name: str, deployment_name: str, deployment_id: Any, targets: Targets,
                flow: str = "run") -> list[Any]:
    """The three automations of the deployment, not yet created."""
    from prefect.automations import AutomationCore, EventTrigger, Posture, SendNotification

    related = {"prefect.resource.id": f"prefect.deployment.{deployment_id}"}

    def notify(subject: str, body: str) -> list[SendNotification]:
        return [SendNotification(block_document_id=block, subject=subject, body=body) for block in targets.block_ids]

    def trigger(events: set[str], match: dict[str, str]) -> EventTrigger:
        return EventTrigger(expect=events, match=match, match_related=related, posture=Posture.Reactive,
                            threshold=1, within=0)

    failed_subject, failed_body = failed_templates(flow_name, deployment_name, flow)
    kinds = {
        "failed": (trigger({f"prefect.flow-run.{state}" for state in ENDED_BADLY},
                           {"prefect.resource.id": "prefect.flow-run.*"}), notify(failed_subject, failed_body)),
        "promoted": (trigger({PROMOTED_EVENT}, {"prefect.resource.id": "fmnist.run.*"}),
                     notify(EVENT_SUBJECT, EVENT_BODY)),
        "regression": (trigger({REGRESSION_EVENT}, {"prefect.resource.id": "fmnist.run.*"}),
                       notify(EVENT_SUBJECT, EVENT_BODY)),
    }
    return [AutomationCore(name=automation_name(flow_name, deployment_name, kind), trigger=trigger_, actions=actions,
                       description=f"fmnist deploy --notify: {WHAT[kind]} ({', '.join(targets.names)})")
            for kind, (trigger_, actions) in kinds.items()]


def ensure_automations(flow_name: str, deployment_name: str, deployment_id: Any, targets: Targets,
                       flow: str = "run") -> list[str]:
    """Create the deployment's automations, or update those of the same names in place (extra copies of a name are
    deleted): deploying again never duplicates them. Returns their names."""
    from prefect import get_client

    wanted = automations(flow_name, deployment_name, deployment_id, targets, flow)
    with get_client(sync_client=True) as client:
        for automation in wanted:
            existing = client.read_automations_by_name(automation.name)
            if not existing:
                client.create_automation(automation)
                continue
            keep, *extra = sorted(existing, key=lambda a: str(a.id))
            client.update_automation(keep.id, automation)
            for copy in extra:
                client.delete_automation(copy.id)
    return [automation.name for automation in wanted]

