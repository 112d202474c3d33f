"""The commands that start Prefect: `fmnist prepare`, `run`, `search` and `deploy`.

What can be checked in a second is checked before Prefect's temporary server starts (which takes many): the config,
the store, the dataset source, the stored 'best' recipes, that a Ray address answers. Then the flow runs; a Ctrl-C
in a run stops it within seconds and says how to resume it (flows.cli.interrupts).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os

from flows.cli.options import config_class, given_options
from tasks.config import PipelineConfig, SearchConfig, build_config, build_search_config
from tasks.errors import ConfigError, PipelineError


@functools.lru_cache(maxsize=4)
def _open_store(uri: str, s3_endpoint: str | None):
    """The store, opened (and on S3 checked) once however many checks before Prefect look at it."""
    from tasks.data.store import open_store

    return open_store(uri, s3_endpoint)


def config_from(args: argparse.Namespace) -> PipelineConfig:
    """The config the options describe; for a run id that exists in the store (--resume, or --run-id of an
    unfinished run or search), the config it stored when it began, with the options given that don't change it."""
    from tasks.config import kind_of
    from tasks.keys import RunPaths
    from tasks.runs.run import read_stored_config, refuse_finished, resume_config

    given = given_options(args)
    if getattr(args, "resume", None):
        given["run_id"] = args.resume
    build = build_search_config if config_class(args) is SearchConfig else build_config
    config = build(**given)
    if args.command not in ("run", "search") or not config.run_id:
        return config
    if getattr(args, "resume", None):
        _refuse_missing_store(config)
    store = _open_store(config.store, config.s3_endpoint)
    refuse_finished(store, config.run_id)
    stored = read_stored_config(store, config.run_id, kind_of(config))  # the other kind's id: said now
    if stored is not None:
        return resume_config(stored, {**given, "store": config.store})  # the store it was found in, wherever it moved
    if getattr(args, "resume", None) and not store.list_keys(f"{RunPaths(config.run_id).root}/"):
        raise ConfigError(f"--resume {config.run_id}: no such {args.command} in {store.uri}; check the run id and "
                          "--store (runs and searches are listed under runs/ in the store)")
    return config


def _refuse_missing_store(config: PipelineConfig) -> None:
    """--resume looks a run up: a store folder that is not there holds no run, and is not created by looking."""
    from tasks.runs.runlist import refuse_missing_folder

    try:
        refuse_missing_folder(config.store)
    except ConfigError as exc:
        raise ConfigError(f"--resume {config.run_id}: no such run: {exc}") from None


def _check_before_prefect(config: PipelineConfig) -> None:
    """What can be checked in a second is checked before Prefect's server starts (which takes many): the store
    answers, the dataset source is there and verifies (a local source is read again by the flow: ~0.3 s), the
    version it publishes is not damaged in the store, and the store can be written."""
    from tasks.data.dataset import fetch_dataset

    store = _open_store(config.store, config.s3_endpoint)
    if config.recipe == "best" and not config.recipes:
        from tasks.model.recipes import best_recipes

        best_recipes(store, config.preset, list(config.architectures))  # none stored: say so now, not in the flow
    raw = fetch_dataset(config.source, s3_endpoint=config.s3_endpoint)
    _check_published_manifest(store, raw, config.rows_per_shard)
    _check_store_writable(store)


def _check_published_manifest(store, raw, rows_per_shard: int) -> None:
    """The version this source publishes, if it is in the store already, has a manifest the flow can read: a
    damaged one is refused here in one line (naming the file and the repair), not after Prefect started."""
    from tasks.data.shards import dataset_version, load_manifest
    from tasks.keys import version_prefix

    version = dataset_version(raw.source_sha256, rows_per_shard)
    if store.exists(f"{version_prefix(version)}/manifest.json"):
        load_manifest(store, version)


def _check_store_writable(store) -> None:
    """Every command that starts Prefect writes to the store (shards, the run's lease, its models): a read-only
    folder or bucket is refused here in one line, not after Prefect started, from deep inside the lease's first
    write. One empty object, written and removed."""
    import uuid

    from tasks.errors import StoreError

    key = f".fmnist-write-check-{uuid.uuid4().hex}"
    try:
        store.put_bytes(key, b"")
    except StoreError as exc:
        what = str(exc).split("; ")[0]  # the failed write, without its own advice: one piece of advice below
        raise StoreError(f"the store {store.uri} cannot be written ({what}); choose a writable --store") from None
    store.delete(key)


def _check_prefect_server() -> None:
    """A deployment needs a lasting Prefect server; the temporary one would vanish with this process."""
    if not os.environ.get("PREFECT_API_URL"):
        raise ConfigError("fmnist deploy needs a Prefect server: start one with `prefect server start` and set "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api (see README, 'Nightly retraining')")


def _interrupted(config: PipelineConfig) -> str:
    """What an interrupted run (or search) leaves, and the command that finishes it."""
    from tasks.config import kind_of
    from tasks.keys import RunPaths
    from tasks.runs.hints import resume_command

    try:
        claimed = _open_store(config.store, config.s3_endpoint).exists(RunPaths(config.run_id or "-").config)
    except PipelineError:
        claimed = True  # the store did not answer: say how to resume, it may well be there
    if not claimed:
        return "interrupted before the run began; nothing to resume"
    command = resume_command(config.run_id or "-", config.store, config.s3_endpoint, kind_of(config))
    return f"interrupted: resume with `{command}`"


def _deploy(args: argparse.Namespace, config: PipelineConfig) -> None:
    from flows.deploy import nightly_deployment, pool_deployment, register_on_pool, serve_nightly
    from flows.notify import ensure_automations, notify_targets

    targets = notify_targets(args.notify, args.notify_block)  # a missing block is said before anything is registered
    if args.pool:
        deployment = pool_deployment(config, args.name, args.cron, args.timezone, args.on_collision, args.flow)
        deployment_id, created = register_on_pool(deployment, args.pool)
        print(f"registered {deployment.flow_name}/{deployment.name} on work pool {args.pool!r}"
              f"{' (created, type process)' if created else ''}; its runs wait for a worker: "
              f"`prefect worker start --pool {args.pool}` (with this PREFECT_API_URL and this project's venv)")
    else:
        deployment = nightly_deployment(config, args.name, args.cron, args.timezone, args.on_collision, args.flow)
        deployment_id = deployment.apply() if targets else None  # its id, for the automations; serve applies it again
    if targets:
        names = ensure_automations(deployment.flow_name, deployment.name, deployment_id, targets, args.flow)
        print(f"notifications to {', '.join(targets.names)}: automations {', '.join(repr(n) for n in names)}",
              flush=True)
    if not args.pool:
        serve_nightly(deployment)


def _prepare(config: PipelineConfig) -> None:
    from flows.prepare import prepare_flow
    from flows.steps import describe

    print(describe(prepare_flow(config), config.store))


def _run(command: str, config: PipelineConfig) -> int:
    """`fmnist run` or `fmnist search` in this terminal: a live table of the trials, Ctrl-C stops it in seconds."""
    from flows.cli.interrupts import exit_code, handle_interrupts, say_farewell, stop_descendants, was_interrupted
    from tasks.keys import RunPaths
    from tasks.runs.run import new_run_id
    from tasks.tune.progress import enable_live_progress

    # The id is chosen here, so that an interrupted run can be named in the line that says how to resume it.
    config = config if config.run_id else config.model_copy(update={"run_id": new_run_id()})
    enable_live_progress()  # this terminal is the run's: a live table of the trials (plain lines if piped)
    handle_interrupts(lambda: f"fmnist {command}: {_interrupted(config)}")
    try:
        if command == "search":
            from flows.search import search_flow

            result = search_flow(config)
        else:
            from flows.run import run_flow

            result = run_flow(config)
    except (KeyboardInterrupt, SystemExit) as exc:
        if not isinstance(exc, KeyboardInterrupt) and not was_interrupted():
            raise
        say_farewell()  # first: killing the raylet can end this process at once (Ray's core worker, exit 1)
        stop_descendants(grace_s=3)  # local Ray, its trials, Prefect's temporary server
        return exit_code()  # 130 after Ctrl-C, 143 after SIGTERM
    print(result["markdown"])
    print(f"artifacts: {result['store'].rstrip('/')}/{RunPaths(result['run_id']).root}/")
    return 0


def launch(args: argparse.Namespace) -> int:
    """The checks before Prefect, then the command's flow (or deployment)."""
    _open_store.cache_clear()  # one command, one opening (main() may be called many times in one process)
    config = config_from(args)
    if args.command == "deploy":
        _check_prefect_server()
    else:
        _check_before_prefect(config)
    if args.command in ("run", "search"):  # Ray's own connect never gives up: fail in seconds, before Prefect
        from tasks.tune.cluster import check_ray_reachable
        check_ray_reachable(config.ray_address)
    from flows.prefect_compat import quiet_expected_tracebacks  # also: the Prefect internals used are there

    if not args.debug:
        quiet_expected_tracebacks((PipelineError, KeyboardInterrupt))
        # Tune logs each failed attempt of a trial as "Trial task failed" and the trial's whole traceback; the
        # progress lines say the same in one line ("cnn2: trial failed after epoch 1: DiskFullError: …"), and
        # the traceback stays in the trial's error.txt. --debug shows them.
        logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)
    if args.command == "deploy":
        _deploy(args, config)
    elif args.command == "prepare":
        _prepare(config)
    else:
        return _run(args.command, config)
    return 0
