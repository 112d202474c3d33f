"""What a run knows of the Prefect flow run it runs in: its run id when none is given, and the record of that flow run
kept in config.json (so that a resume from the CLI says which flow run it continues).

A run id derived from the flow run is the same on every attempt of that flow run: the UI's Retry (the flow run set
to AwaitingRetry, then run again with the same id) and Prefect's own flow retries claim the same run (or search),
which resumes from its checkpoints instead of starting another.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

CREATED_FORMAT = "%Y%m%d-%H%M%S"  # a run id's stamp: when its flow run was created, UTC


def current_flow_run() -> dict[str, Any] | None:
    """The flow run this code runs in (id, name, deployment, attempt, UI link), or None outside one."""
    from prefect.context import FlowRunContext
    from prefect.runtime import deployment, flow_run

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    created = context.flow_run.created or context.flow_run.expected_start_time
    return {"flow_run_id": str(context.flow_run.id), "flow_run_name": context.flow_run.name,
            "flow_name": flow_run.get_flow_name(),
            "deployment": f"{flow_run.get_flow_name()}/{deployment.get_name()}" if deployment.get_id() else None,
            "attempt": flow_run.get_run_count(), "ui_url": flow_run.get_flow_run_ui_url(),
            "created": created.astimezone(timezone.utc).strftime(CREATED_FORMAT) if created else None}


RUN_ID_HEX = 8  # hex digits of the flow run's id in a run id: its last 32 random bits


def run_id_of_flow_run(origin: dict[str, Any] | None) -> str | None:
    """`<created, UTC>-<the flow run id's LAST 8 hex digits>`, the same on every attempt, or None outside a flow run.

    The last digits, not the first: Prefect 3.9's flow-run ids are UUIDv7, whose first 8 hex digits are the top of
    a millisecond clock (the same for every run created within 65.5 s: the scheduler inserts a cron's next nights in
    one statement), while the last 8 are random (a UUIDv4's are too). Two runs created in the same second collide
    once in 2^32."""
    if origin is None:
        return None
    stamp = origin["created"] or datetime.now(timezone.utc).strftime(CREATED_FORMAT)
    return f"{stamp}-{origin['flow_run_id'].replace('-', '')[-RUN_ID_HEX:]}"


def continues(stored: dict[str, Any] | None, origin: dict[str, Any] | None) -> str | None:
    """What a resumed run says of the flow run that began it: None when there is none, or this is that flow run."""
    if not stored or (origin and origin.get("flow_run_id") == stored.get("flow_run_id")):
        return None
    began = f"flow run {stored.get('flow_run_name')!r} ({stored.get('flow_run_id')})"
    if stored.get("deployment"):
        began += f" of deployment {stored['deployment']}"
    return f"continues {began}" + (f", {stored['ui_url']}" if stored.get("ui_url") else "")
