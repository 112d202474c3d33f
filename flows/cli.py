"""The `fmnist` command: every option is a field of PipelineConfig, so the CLI,
the Prefect UI form and Ray all see the same defaults and the same checks."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from tasks.config import PipelineConfig, build_config
from tasks.errors import PipelineError


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    for name, field in PipelineConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name == "architectures":
            parser.add_argument(flag, type=lambda s: [a.strip() for a in s.split(",") if a.strip()],
                                help=f"{field.description} Comma-separated.")
        else:
            default = field.default if field.default is not None else "none"
            parser.add_argument(flag, help=f"{field.description or ''} (default: {default})".strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist", description="Fashion-MNIST: five classifiers, Prefect + Ray + object storage.")
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="fetch, verify and publish the dataset as Parquet shards")
    _add_config_options(prepare)
    run = commands.add_parser("run", help="the main job: prepare, train the five models through Ray, report")
    _add_config_options(run)
    run.add_argument("--resume", metavar="RUN_ID", help="resume an unfinished run (same as --run-id RUN_ID)")
    deploy = commands.add_parser("deploy", help="serve the run flow as a nightly Prefect deployment (runs until stopped)")
    deploy.add_argument("--name", default="nightly", help="deployment name (default: nightly)")
    deploy.add_argument("--cron", default="0 2 * * *", help="schedule (default: '0 2 * * *', 02:00 every night)")
    deploy.add_argument("--timezone", default="UTC", help="IANA time zone of the schedule (default: UTC)")
    deploy.add_argument("--on-collision", default="enqueue", choices=("enqueue", "cancel"),
                        help="a run started while one is going waits (enqueue, default) or is cancelled")
    _add_config_options(deploy)
    champion = commands.add_parser("champion", help="show the current champion models")
    champion.add_argument("--store", default="./artifacts", help="the store to read (default: ./artifacts)")
    champion.add_argument("--s3-endpoint", help="S3-compatible endpoint URL")
    return parser


def _config_from(args: argparse.Namespace) -> PipelineConfig:
    values: dict[str, Any] = {n: getattr(args, n, None) for n in PipelineConfig.model_fields}
    if getattr(args, "resume", None):
        values["run_id"] = args.resume
    return build_config(**values)


def _check_resumable(config: PipelineConfig) -> None:
    from tasks.errors import ConfigError
    from tasks.store import open_store

    if not open_store(config.store, config.s3_endpoint).list_keys(f"runs/{config.run_id}/"):
        raise ConfigError(f"--resume {config.run_id}: no such run in {config.store}; check the run id and --store "
                          "(runs are listed under runs/ in the store)")


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
    try:
        if args.command == "champion":
            _show_champions(args.store, args.s3_endpoint)
            return 0
        config = _config_from(args)
        if getattr(args, "resume", None):
            _check_resumable(config)
        if args.command == "deploy":
            _check_prefect_server()
            from flows.deploy import nightly_deployment, serve_nightly

            serve_nightly(nightly_deployment(config, args.name, args.cron, args.timezone, args.on_collision))
        elif args.command == "prepare":
            from flows.prepare import describe, prepare_flow

            result = prepare_flow(config)
            print(describe(result, config.store))
        elif args.command == "run":
            from flows.run import run_flow

            result = run_flow(config)
            print(result["markdown"])
            print(f"artifacts: {result['store'].rstrip('/')}/runs/{result['run_id']}/")
        return 0
    except PipelineError as exc:
        print(f"fmnist {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
