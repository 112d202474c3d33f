"""A run: its id, its keys in the store, its frozen config, and the dataset it trains on.

Claimed once at the start of `fmnist run` (the config is written to runs/<id>/config.json then, if absent),
and handed to every stage, so no stage opens the store again or spells runs/<id>/… itself.
No Prefect here: the Ray trials use RunPaths too.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from tasks.config import (CONFIG_MODELS, PROTOCOL_FIELDS, SEARCH_PROTOCOL_FIELDS, PipelineConfig, RunKind,
                          SearchConfig, build_config, build_search_config, config_field, config_record, kind_of,
                          stored_kind)
from tasks.errors import ConfigError, PipelineError
from tasks.records import JsonProblem, parse_object, validate
from tasks.runs.lease import RunLease
from tasks.data.shards import PrepareResult, load_manifest
from tasks.data.store import Store, open_store
from tasks.keys import RunPaths
from tasks.model.recipes import best_recipes
from tasks.runs.hints import RECORD_KEYS, resume_command

@dataclass(frozen=True)
class Run:
    """One run's context: created when the id is claimed, completed with the dataset once it is prepared."""

    config: PipelineConfig
    store: Store
    paths: RunPaths
    resumed: bool
    started: float
    dataset: PrepareResult | None = None
    lease: RunLease | None = field(default=None, compare=False, repr=False)

    @property
    def run_id(self) -> str:
        return self.paths.run_id

    @property
    def dataset_version(self) -> str:
        return self.prepared().version

    @property
    def manifest(self) -> dict:
        return self.prepared().manifest

    def prepared(self) -> PrepareResult:
        if self.dataset is None:
            raise RuntimeError(f"run {self.run_id}: the dataset is not prepared yet")  # a bug in the flow, not input
        return self.dataset

    def with_dataset(self, dataset: PrepareResult) -> "Run":
        return replace(self, dataset=dataset)

    @classmethod
    def unclaimed(cls, config: PipelineConfig, store: Store, run_id: str,
                  dataset: PrepareResult | None = None) -> "Run":
        """A run that holds no lease and stored no config: for benchmarks and tests that call a stage directly
        (the flows always claim theirs)."""
        return cls(config, store, RunPaths(run_id), resumed=False, started=time.time(), dataset=dataset)

    @classmethod
    def on_published_dataset(cls, config: PipelineConfig, store: Store, run_id: str, version: str) -> "Run":
        """An unclaimed run on a dataset version already published in `store` (its manifest read once here)."""
        return cls.unclaimed(config, store, run_id, PrepareResult(version, False, load_manifest(store, version)))

    def release(self) -> None:
        """Give up the run's lease: another process may resume it from now on. Clean-up, so a store that does not
        answer is a note, never the run's last line: that belongs to why the run ended (often that same store)."""
        if self.lease is None:
            return
        try:
            self.lease.release()
        except PipelineError as exc:
            print(f"note: the run's lease was not given up ({exc}); it lapses by itself once this process is gone",
                  file=sys.stderr, flush=True)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def utc_iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def claim_record(config: PipelineConfig, started: float, origin: dict[str, Any] | None = None) -> bytes:
    """runs/<id>/config.json: the config and its kind (tasks.config.config_record), and when the run was claimed
    (`started_at`, UTC: what `fmnist runs` orders by, whatever a copy of the folder does to its write time); with
    `origin`, the Prefect flow run that claimed it (`prefect`: its id, name, deployment, link)."""
    values = json.loads(config_record(config))
    record = {"kind": values["kind"], "started_at": utc_iso(started), **({"prefect": origin} if origin else {})}
    return json.dumps({**record, **values}, indent=2).encode()


def stored_origin(store: Store, run_id: str) -> dict[str, Any] | None:
    """The Prefect flow run that claimed the run (config.json's `prefect`), or None (a run of the CLI, or none)."""
    data, _ = store.read_versioned(RunPaths(run_id).config)
    try:
        origin = json.loads(data).get("prefect") if data is not None else None
    except (ValueError, AttributeError):
        return None
    return origin if isinstance(origin, dict) else None


def read_stored_config(store: Store, run_id: str, claimant: RunKind = "run") -> PipelineConfig | None:
    """The config a run of `fmnist run` (claimant 'run') or a search (claimant 'search') stored when it began, or
    None when the id has none (not claimed yet). The id of the other kind: ConfigError saying which kind it is and
    the command that finishes it."""
    key = RunPaths(run_id).config
    data, _ = store.read_versioned(key)
    if data is None:
        return None
    try:
        values = parse_object(data)
        kind = stored_kind(values)
        if kind is not None and kind != claimant:
            raise ConfigError(_another_kinds_id(store, run_id, claimant, kind))
        return validate(CONFIG_MODELS[claimant],
                        {k: v for k, v in values.items() if v is not None and k not in RECORD_KEYS}, name=config_field)
    except JsonProblem as exc:
        raise ConfigError(f"{store.url_for(key)}: not a valid {claimant} config ({exc}); "
                          f"restore it from a backup or start a new {claimant}") from None


def _another_kinds_id(store: Store, run_id: str, claimant: RunKind, kind: RunKind) -> str:
    """Why the id of a search cannot be claimed by a run, or that of a run by a search."""
    command = {"run": "fmnist run", "search": "fmnist search"}
    finish = resume_command(run_id, store.uri, getattr(store, "endpoint", None), kind)
    return (f"run id {run_id!r} in {store.uri} is a {kind}'s (`{command[kind]}`), not a {claimant}'s: "
            f"`{command[claimant]}` neither resumes nor reuses it; for a new {claimant} choose another --run-id or "
            f"leave it empty; that {kind} is finished by `{finish}`")


def protocol_fields(config: PipelineConfig) -> tuple[str, ...]:
    """What a resume keeps: the protocol, and a search's own fields that decide what it tries."""
    return PROTOCOL_FIELDS + (SEARCH_PROTOCOL_FIELDS if isinstance(config, SearchConfig) else ())


def changed_protocol(stored: PipelineConfig, requested: PipelineConfig) -> dict[str, tuple[Any, Any]]:
    """The fields that decide data and training (and a search's trials) whose requested values differ from the
    run's own."""
    return {name: (getattr(stored, name), getattr(requested, name))
            for name in protocol_fields(stored) if getattr(stored, name) != getattr(requested, name)}


def refuse_changed_protocol(run_id: str, stored: PipelineConfig, requested: PipelineConfig) -> None:
    changed = changed_protocol(stored, requested)
    if changed:
        kind = kind_of(stored)
        listed = "; ".join(f"{name}: the {kind} has {old!r}, given {new!r}" for name, (old, new) in changed.items())
        raise ConfigError(f"{kind} {run_id}: a resumed {kind} keeps the data and training it began with, and these "
                          f"options differ: {listed}. Resume without them "
                          f"(`{resume_command(run_id, requested.store, requested.s3_endpoint, kind)}`), or leave the "
                          f"run id empty for a new {kind}")


def resume_config(stored: PipelineConfig, given: dict[str, Any]) -> PipelineConfig:
    """The stored config with the options given on the command line; refused if they change the protocol."""
    build = build_search_config if isinstance(stored, SearchConfig) else build_config
    requested = build(**{**stored.model_dump(), **given})
    refuse_changed_protocol(stored.run_id or "?", stored, requested)
    return requested


def finished_by(store: Store, run_id: str, flow_run_id: str) -> bool:
    """The run finished (its run.json is there) in this very flow run: a Retry of a Completed flow run, which has
    nothing left to do (any other claimant of a finished run is refused, `refuse_finished`)."""
    if not store.exists(RunPaths(run_id).record):
        return False
    began = stored_origin(store, run_id)
    return bool(began) and began.get("flow_run_id") == flow_run_id


def finished_summary(store: Store, run_id: str) -> dict[str, Any]:
    """What a finished run's flow returned (run id, store, Table 1, summary), read back from its summary files."""
    paths = RunPaths(run_id)
    summary = json.loads(store.get_bytes(paths.summary_json)) if store.exists(paths.summary_json) else {}
    markdown = store.get_bytes(paths.summary_md).decode() if store.exists(paths.summary_md) else ""
    return {"run_id": run_id, "already_finished": True, "store": store.uri, "table1": summary.get("table1", []),
            "markdown": markdown}


def refuse_finished(store: Store, run_id: str) -> None:
    if store.exists(RunPaths(run_id).record):
        raise ConfigError(f"run id {run_id!r}: that run already finished in {store.uri} and runs are never "
                          "overwritten; leave --run-id empty for a new run")


def claim_run(config: PipelineConfig, store: Store | None = None, origin: dict[str, Any] | None = None) -> Run:
    """A new run (its config written first), or the unfinished run `config.run_id` names (resumed as it began).
    `origin`: the Prefect flow run that claims it, recorded in a new run's config.json."""
    store = store or open_store(config.store, config.s3_endpoint)
    run_id = config.run_id or new_run_id()
    paths = RunPaths(run_id)
    refuse_finished(store, run_id)
    read_stored_config(store, run_id, kind_of(config))  # a search's id: said so before its lease is touched
    lease = RunLease(store, paths.lease, run_id, kind=kind_of(config)).acquire()  # before anything is written: a second claimant stops here
    try:
        config = config.model_copy(update={"run_id": run_id})
        started = time.time()
        if store.put_if_absent(paths.config, claim_record(config, started, origin)):
            return Run(config, store, paths, resumed=False, started=started, lease=lease)
        stored = read_stored_config(store, run_id, kind_of(config))
        if stored is not None:  # None only if it was deleted just now: nothing to compare with
            refuse_changed_protocol(run_id, stored, config)
        return Run(config, store, paths, resumed=True, started=time.time(), lease=lease)
    except BaseException:
        lease.release()
        raise


def resolve_recipes(config: PipelineConfig, store: Store) -> PipelineConfig:
    """A run with recipe 'best' gets the stored recipes written into its config when it begins (so config.json,
    and a resume, keep the ones it trained with); a resumed one (its config.json there: from the UI, a deployment,
    `--run-id`) takes the recipes it began with, never newer ones a search stored since; any other run is returned
    as it is."""
    if config.recipe != "best" or config.recipes:
        return config
    stored = read_stored_config(store, config.run_id, kind_of(config)) if config.run_id else None
    if stored is not None:
        return config.model_copy(update={"recipes": stored.recipes})
    return config.model_copy(update={"recipes": best_recipes(store, config.preset, list(config.architectures))})
