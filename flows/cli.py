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
    return parser


def _config_from(args: argparse.Namespace) -> PipelineConfig:
    values: dict[str, Any] = {n: getattr(args, n, None) for n in PipelineConfig.model_fields}
    return build_config(**values)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _config_from(args)
        if args.command == "prepare":
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
