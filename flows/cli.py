"""The `fmnist` command: every option is a field of PipelineConfig, so the CLI,
the Prefect UI form and Ray all see the same defaults and the same checks."""

from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from typing import Any, Sequence

from tasks.config import PipelineConfig, absolute_store_uri, build_config
from tasks.errors import ConfigError, PipelineError


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    for name, field in PipelineConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name == "architectures":
            parser.add_argument(flag, type=lambda s: [a.strip() for a in s.split(",") if a.strip()],
                                help=f"{field.description} Comma-separated.")
        else:
            default = field.default if field.default is not None else "none"
            parser.add_argument(flag, help=f"{field.description or ''} (default: {default})".strip())


def _add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=os.environ.get("FMNIST_DEBUG", "") not in ("", "0"),
                        help="show the traceback of an expected error too (also: FMNIST_DEBUG=1)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist", description="Fashion-MNIST: five classifiers, Prefect + Ray + object storage.")
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="fetch, verify and publish the dataset as Parquet shards")
    _add_config_options(prepare)
    run = commands.add_parser("run", help="the main job: prepare, train the five models through Ray, report")
    _add_config_options(run)
    run.add_argument("--resume", metavar="RUN_ID", help="resume an unfinished run (same as --run-id RUN_ID)")
    deploy = commands.add_parser("deploy", help="serve the run flow as a nightly Prefect deployment (runs until "
                                               "stopped), or register it on a process work pool (--pool)")
    deploy.add_argument("--name", default="nightly", help="deployment name (default: nightly)")
    deploy.add_argument("--flow", default="run",
                        help="the flow to deploy: run (default; flows/deploy.py DEPLOYABLE_FLOWS lists them)")
    deploy.add_argument("--pool", metavar="NAME",
                        help="register on this Prefect process work pool (created if missing) and return; "
                             "`prefect worker start --pool NAME` runs it")
    deploy.add_argument("--cron", default="0 2 * * *", help="schedule (default: '0 2 * * *', 02:00 every night)")
    deploy.add_argument("--timezone", default="UTC", help="IANA time zone of the schedule (default: UTC)")
    deploy.add_argument("--on-collision", default="enqueue", choices=("enqueue", "cancel"),
                        help="a run started while one is going waits (enqueue, default) or is cancelled")
    _add_config_options(deploy)
    champion = commands.add_parser("champion", help="show the current champion models")
    champion.add_argument("--store", default="./artifacts", help="the store to read (default: ./artifacts)")
    champion.add_argument("--s3-endpoint", help="S3-compatible endpoint URL")
    for command in (prepare, run, deploy, champion):
        _add_debug_option(command)
    return parser


@functools.lru_cache(maxsize=4)
def _open_store(uri: str, s3_endpoint: str | None):
    """The store, opened (and on S3 checked) once however many checks before Prefect look at it."""
    from tasks.store import open_store

    return open_store(uri, s3_endpoint)


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config options typed on the command line (argparse leaves the others None)."""
    return {name: getattr(args, name) for name in PipelineConfig.model_fields if getattr(args, name, None) is not None}


def _config_from(args: argparse.Namespace) -> PipelineConfig:
    """The config the options describe; for a run id that exists in the store (--resume, or --run-id of an
    unfinished run), the config that run stored when it began, with the options given that don't change it."""
    from tasks.runs import RunPaths, read_stored_config, refuse_finished, resume_config

    given = _given_options(args)
    if getattr(args, "resume", None):
        given["run_id"] = args.resume
    config = build_config(**given)
    if args.command != "run" or not config.run_id:
        return config
    store = _open_store(config.store, config.s3_endpoint)
    refuse_finished(store, config.run_id)
    stored = read_stored_config(store, config.run_id)
    if stored is not None:
        return resume_config(stored, {**given, "store": config.store})  # the store it was found in, wherever it moved
    if getattr(args, "resume", None) and not store.list_keys(f"{RunPaths(config.run_id).root}/"):
        raise ConfigError(f"--resume {config.run_id}: no such run in {store.uri}; check the run id and --store "
                          "(runs are listed under runs/ in the store)")
    return config


def _check_before_prefect(config: PipelineConfig) -> None:
    """What can be checked in a second is checked before Prefect's server starts (which takes many): the store
    answers, and the dataset source is there and verifies (a local source is read again by the flow: ~0.3 s)."""
    from tasks.dataset import fetch_dataset

    _open_store(config.store, config.s3_endpoint)
    fetch_dataset(config.source, s3_endpoint=config.s3_endpoint)


def _quiet_expected_tracebacks() -> None:
    """Prefect's console logs a failed task or flow with its traceback; for an expected error (PipelineError)
    the one-line message says it all. Only the terminal's copy is shortened: the record itself is left whole,
    so the Prefect UI's logs (another handler of the same record) keep the traceback."""
    import logging

    import prefect.main  # noqa: F401  (configures Prefect's logging handlers on import)
    from prefect.logging.handlers import PrefectConsoleHandler

    def without_expected_traceback(format_record):
        def format(record: logging.LogRecord) -> str:
            if record.exc_info and isinstance(record.exc_info[1], (PipelineError, KeyboardInterrupt)):
                record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
            return format_record(record)
        return format

    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    handlers = {id(h): h for logger in loggers for h in getattr(logger, "handlers", [])
                if isinstance(h, PrefectConsoleHandler)}
    for handler in handlers.values():
        handler.format = without_expected_traceback(handler.format)  # type: ignore[method-assign]


def _interrupted(config: PipelineConfig) -> str:
    """What an interrupted run leaves, and the command that finishes it."""
    from tasks.runs import RunPaths

    try:
        claimed = _open_store(config.store, config.s3_endpoint).exists(RunPaths(config.run_id or "-").config)
    except PipelineError:
        claimed = True  # the store did not answer: say how to resume, it may well be there
    if not claimed:
        return "interrupted before the run began; nothing to resume"
    store = "" if config.store == absolute_store_uri("./artifacts") else f" --store {config.store}"
    return f"interrupted: resume with `fmnist run --resume {config.run_id}{store}`"


def _check_prefect_server() -> None:
    """A deployment needs a lasting Prefect server; the temporary one would vanish with this process."""
    import os

    from tasks.errors import ConfigError

    if not os.environ.get("PREFECT_API_URL"):
        raise ConfigError("fmnist deploy needs a Prefect server: start one with `prefect server start` and set "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api (see README, 'Nightly retraining')")


def _show_champions(store_uri: str, s3_endpoint: str | None) -> None:
    from tasks.champion import read_champions
    from tasks.store import open_store

    pointer = read_champions(open_store(store_uri, s3_endpoint))
    if not pointer:
        print(f"no champion yet in {store_uri} (a full run promotes its models)")
        return
    print(f"champions in {store_uri} (revision {pointer['revision']}):")
    print("| slot | architecture | test accuracy | run | model |\n|---|---|---:|---|---|")
    slots = {**pointer.get("architectures", {}), "overall": pointer.get("overall")}
    for slot, entry in slots.items():
        if entry:
            print(f"| {slot} | {entry['architecture']} | {100 * entry['test_accuracy']:.2f}% | {entry['run_id']} | "
                  f"{entry['model_key']} |")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _open_store.cache_clear()  # one command, one opening (main() may be called many times in one process)
    try:
        if args.command == "champion":
            _show_champions(absolute_store_uri(args.store), args.s3_endpoint)
            return 0
        config = _config_from(args)
        if args.command == "deploy":
            _check_prefect_server()
        else:
            _check_before_prefect(config)
        if args.command == "run":  # Ray's own connect never gives up: fail in seconds, before Prefect starts
            from tasks.fanout import check_ray_reachable
            check_ray_reachable(config.ray_address)
        if not args.debug:
            _quiet_expected_tracebacks()
        if args.command == "deploy":
            from flows.deploy import nightly_deployment, pool_deployment, register_on_pool, serve_nightly

            if args.pool:
                deployment = pool_deployment(config, args.name, args.cron, args.timezone, args.on_collision, args.flow)
                _, created = register_on_pool(deployment, args.pool)
                print(f"registered {deployment.flow_name}/{deployment.name} on work pool {args.pool!r}"
                      f"{' (created, type process)' if created else ''}; its runs wait for a worker: "
                      f"`prefect worker start --pool {args.pool}` (with this PREFECT_API_URL and this project's venv)")
            else:
                serve_nightly(nightly_deployment(config, args.name, args.cron, args.timezone, args.on_collision,
                                                 args.flow))
        elif args.command == "prepare":
            from flows.prepare import describe, prepare_flow

            result = prepare_flow(config)
            print(describe(result, config.store))
        elif args.command == "run":
            from flows.interrupts import (EXIT_INTERRUPTED, handle_interrupts, say_farewell, stop_descendants,
                                          was_interrupted)
            from flows.run import run_flow
            from tasks.runs import RunPaths, new_run_id

            # The id is chosen here, so that an interrupted run can be named in the line that says how to resume it.
            config = config if config.run_id else config.model_copy(update={"run_id": new_run_id()})
            from tasks.progress import enable_live_progress
            enable_live_progress()  # this terminal is the run's: a live table of the trials (plain lines if piped)
            handle_interrupts(lambda: f"fmnist run: {_interrupted(config)}")
            try:
                result = run_flow(config)
            except (KeyboardInterrupt, SystemExit) as exc:
                if not isinstance(exc, KeyboardInterrupt) and not was_interrupted():
                    raise
                say_farewell()  # first: killing the raylet can end this process at once (Ray's core worker, exit 1)
                stop_descendants(grace_s=3)  # local Ray, its trials, Prefect's temporary server
                return EXIT_INTERRUPTED
            print(result["markdown"])
            print(f"artifacts: {result['store'].rstrip('/')}/{RunPaths(result['run_id']).root}/")
        return 0
    except PipelineError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fmnist {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a run began (checks, imports, Prefect's start), or in another command
        from flows.interrupts import EXIT_INTERRUPTED, stop_descendants

        stop_descendants(grace_s=3)
        print(f"fmnist {args.command}: interrupted" + (" before the run began; nothing to resume"
                                                       if args.command == "run" else ""), file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
