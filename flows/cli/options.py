"""The `fmnist` command's options: every config option is a field of PipelineConfig (or SearchConfig), so the CLI,
the Prefect UI form and Ray all see the same defaults and the same checks."""

from __future__ import annotations

import argparse
from typing import Any

from tasks.config import DEFAULT_STORE, PipelineConfig, SearchConfig
from tasks.errors import ConfigError
from tasks.settings import debug_requested

# Filled in by the run itself (the recipes a 'best' run resolved), never typed.
NOT_OPTIONS = ("recipes",)

# Options only a search has (`fmnist deploy` takes them with --flow search).
SEARCH_ONLY = tuple(name for name in SearchConfig.model_fields if name not in PipelineConfig.model_fields)


def config_class(args: argparse.Namespace) -> type[PipelineConfig]:
    """The search's config for `fmnist search` and `fmnist deploy --flow search`, the run's otherwise."""
    return SearchConfig if args.command == "search" or getattr(args, "flow", None) == "search" else PipelineConfig


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config options typed on the command line (argparse leaves the others None)."""
    fields = config_class(args).model_fields
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    misplaced = [name for name in SEARCH_ONLY if getattr(args, name, None) is not None and name not in fields]
    if misplaced:
        flags = ", ".join(_flag(name, SearchConfig.model_fields[name]) for name in misplaced)
        raise ConfigError(f"{flags}: options of a search; deploy one with `fmnist deploy --flow search {flags} …`")
    return given


def _flag(name: str, field: Any) -> str:
    """The option's flag: --<name>, or --no-<name> for a switch that is on by default."""
    switch = field.annotation is bool and field.default is True
    return ("--no-" if switch else "--") + name.replace("_", "-")


def _add_config_options(parser: argparse.ArgumentParser, config_class: type[PipelineConfig] = PipelineConfig,
                        search_options: bool = False) -> None:
    fields = dict(config_class.model_fields)
    if search_options:  # the run's options, then the search's own
        fields.update({name: SearchConfig.model_fields[name] for name in SEARCH_ONLY})
    for name, field in fields.items():
        if name in NOT_OPTIONS:
            continue
        flag = _flag(name, field)
        if name == "architectures":
            parser.add_argument(flag, type=lambda s: [a.strip() for a in s.split(",") if a.strip()],
                                help=f"{field.description} Comma-separated.")
        elif flag.startswith("--no-"):  # a switch that is on by default: --no-<name> turns it off
            parser.add_argument(flag, dest=name, action="store_const", const=False, help=field.description)
        else:
            default = field.default if field.default is not None else "none"
            parser.add_argument(flag, help=f"{field.description or ''} (default: {default})".strip())


def _add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=debug_requested(),
                        help="show the traceback of an expected error too (also: FMNIST_DEBUG=1)")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist", description="Fashion-MNIST: five classifiers, Prefect + Ray + object storage.")
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="fetch, verify and publish the dataset as Parquet shards")
    _add_config_options(prepare)
    run = commands.add_parser("run", help="the main job: prepare, train the five models through Ray, report")
    _add_config_options(run)
    run.add_argument("--resume", metavar="RUN_ID", help="resume an unfinished run (same as --run-id RUN_ID)")
    search = commands.add_parser("search", help="search each architecture's training recipe (Optuna + ASHA), retrain "
                                                "the winners with several seeds, keep the best recipes")
    _add_config_options(search, SearchConfig)
    search.add_argument("--resume", metavar="RUN_ID", help="finish an unfinished search (same as --run-id RUN_ID): "
                                                           "architectures searched are kept, the interrupted one goes on")
    deploy = commands.add_parser("deploy", help="serve the run flow as a nightly Prefect deployment (runs until "
                                               "stopped), or register it on a process work pool (--pool)")
    deploy.add_argument("--name", default="nightly", help="deployment name (default: nightly)")
    deploy.add_argument("--flow", default="run", choices=("run", "search"),
                        help="the flow to deploy: run (the nightly retraining, default) or search (the nightly "
                             "recipe search; takes the search's options too)")
    deploy.add_argument("--pool", metavar="NAME",
                        help="register on this Prefect process work pool (created if missing) and return; "
                             "`prefect worker start --pool NAME` runs it")
    deploy.add_argument("--cron", default="0 2 * * *", help="schedule (default: '0 2 * * *', 02:00 every night)")
    deploy.add_argument("--timezone", default="UTC", help="IANA time zone of the schedule (default: UTC)")
    deploy.add_argument("--on-collision", default="enqueue", choices=("enqueue", "cancel"),
                        help="a run started while one is going waits (enqueue, default) or is cancelled")
    deploy.add_argument("--notify", metavar="URL",
                        help="notify this webhook (a Slack incoming webhook, any URL that takes a JSON POST) when a run "
                             "of the deployment fails, crashes or times out, promotes a champion, or is worse than "
                             "its champions beyond noise (Prefect automations, kept up to date on each deploy)")
    deploy.add_argument("--notify-block", metavar="NAME",
                        help="the same notifications through an existing Prefect notification block (Slack, e-mail, "
                             "webhook…): NAME or TYPE/NAME, e.g. slack-webhook/ops")
    _add_config_options(deploy, search_options=True)
    champion = commands.add_parser("champion", help="show the current champion models")
    champion.add_argument("--store", default=DEFAULT_STORE, help=f"the store to read (default: {DEFAULT_STORE})")
    champion.add_argument("--s3-endpoint", help="S3-compatible endpoint URL")
    predict, runs = _add_predict_command(commands), _add_runs_command(commands)
    for command in (prepare, run, search, deploy, champion, predict, *runs):
        _add_debug_option(command)
    return parser


def _add_read_store_options(parser: argparse.ArgumentParser, inherited: bool = False) -> None:
    """--store and --s3-endpoint. `inherited`: on `runs show|compare`, which take them before or after the action:
    a sub-command's default would overwrite the value given before it (argparse), so there they have none."""
    store_default = argparse.SUPPRESS if inherited else DEFAULT_STORE
    parser.add_argument("--store", default=store_default, help=f"the store to read (default: {DEFAULT_STORE})")
    parser.add_argument("--s3-endpoint", default=argparse.SUPPRESS if inherited else None,
                        help="S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL, else AWS)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, found {text!r}")
    return int(text)


def _add_predict_command(commands) -> argparse.ArgumentParser:
    predict = commands.add_parser("predict", help="classify images with a published model (the champion by default)",
                                  description="Classify PNG/JPEG images, folders of them, .npy arrays or IDX .gz "
                                              "files. Prints one tab-separated line per image: input, class, "
                                              "probability.")
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="a PNG/JPEG file, a folder of them, a .npy (N x 28 x 28 or 28 x 28), an IDX images .gz")
    predict.add_argument("--model", default="champion",
                         help="champion (the overall champion, default; also 'overall'), champion:ARCH (that "
                              "architecture's champion, of either recipe family), champion:ARCH/FAMILY (FAMILY "
                              "report or searched) or RUN_ID/ARCH (a run's model)")
    predict.add_argument("--top", type=_positive, default=1, help="the K most likely classes per image (default: 1)")
    predict.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    predict.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                         help="make the product bright on dark as in Fashion-MNIST: auto inverts an image file "
                              "whose outer ring of pixels is brighter than mid-gray (default: auto)")
    predict.add_argument("--labels", metavar="FILE",
                         help="true classes (IDX labels .gz, or a .npy of 0-9), one per image in input order: "
                              "prints the accuracy (an IDX images file finds its labels file beside it)")
    predict.add_argument("--batch-size", type=_positive, default=1024, help="images per forward pass (default: 1024)")
    _add_read_store_options(predict)
    return predict


def _add_runs_command(commands) -> tuple[argparse.ArgumentParser, ...]:
    runs = commands.add_parser("runs", help="the runs in a store, newest first (show ID, compare A B)")
    _add_read_store_options(runs)
    runs.add_argument("--limit", type=int, default=20, help="show the N newest runs; 0 shows all (default: 20)")
    actions = runs.add_subparsers(dest="runs_action")
    show = actions.add_parser("show", help="one run's summary (for an unfinished run: what finished so far)")
    show.add_argument("run_id", metavar="ID")
    compare = actions.add_parser("compare", help="per-model test accuracy differences, with their paired standard "
                                                 "error and McNemar's test on the same test rows")
    compare.add_argument("run_a", metavar="A")
    compare.add_argument("run_b", metavar="B")
    for parser in (show, compare):
        _add_read_store_options(parser, inherited=True)
    return runs, show, compare
