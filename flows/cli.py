"""The `fmnist` command: every option is a field of PipelineConfig, so the CLI,
the Prefect UI form and Ray all see the same defaults and the same checks."""

from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from typing import Any, Sequence

from tasks.config import PipelineConfig, SearchConfig, absolute_store_uri, build_config, build_search_config
from tasks.errors import ConfigError, PipelineError


# Filled in by the run itself (the recipes a 'best' run resolved), never typed.
NOT_OPTIONS = ("recipes",)


def _config_class(args: argparse.Namespace) -> type[PipelineConfig]:
    """The search's config for `fmnist search` and `fmnist deploy --flow search`, the run's otherwise."""
    return SearchConfig if args.command == "search" or getattr(args, "flow", None) == "search" else PipelineConfig


# Options only a search has (`fmnist deploy` takes them with --flow search).
SEARCH_ONLY = tuple(name for name in SearchConfig.model_fields if name not in PipelineConfig.model_fields)


def _add_config_options(parser: argparse.ArgumentParser, config_class: type[PipelineConfig] = PipelineConfig,
                        search_options: bool = False) -> None:
    fields = dict(config_class.model_fields)
    if search_options:  # the run's options, then the search's own
        fields.update({name: SearchConfig.model_fields[name] for name in SEARCH_ONLY})
    for name, field in fields.items():
        if name in NOT_OPTIONS:
            continue
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
    search = commands.add_parser("search", help="search each architecture's training recipe (Optuna + ASHA), retrain "
                                                "the winners with several seeds, keep the best recipes")
    _add_config_options(search, SearchConfig)
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
    _add_config_options(deploy, search_options=True)
    champion = commands.add_parser("champion", help="show the current champion models")
    champion.add_argument("--store", default="./artifacts", help="the store to read (default: ./artifacts)")
    champion.add_argument("--s3-endpoint", help="S3-compatible endpoint URL")
    predict, runs = _add_predict_command(commands), _add_runs_command(commands)
    for command in (prepare, run, search, deploy, champion, predict, *runs):
        _add_debug_option(command)
    return parser


def _add_read_store_options(parser: argparse.ArgumentParser, inherited: bool = False) -> None:
    """--store and --s3-endpoint. `inherited`: on `runs show|compare`, which take them before or after the action:
    a sub-command's default would overwrite the value given before it (argparse), so there they have none."""
    store_default = argparse.SUPPRESS if inherited else "./artifacts"
    parser.add_argument("--store", default=store_default, help="the store to read (default: ./artifacts)")
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
                              "architecture's champion) or RUN_ID/ARCH (a run's model)")
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
    compare = actions.add_parser("compare", help="per-model test accuracy differences, with their standard error")
    compare.add_argument("run_a", metavar="A")
    compare.add_argument("run_b", metavar="B")
    for parser in (show, compare):
        _add_read_store_options(parser, inherited=True)
    return runs, show, compare


def _predict(args: argparse.Namespace) -> None:
    """Inputs first (a bad file fails before TensorFlow is imported), then the model, then one batched pass."""
    import json

    from tasks.predict import classify, inputs as read
    from tasks.runs.runlist import open_store_to_read

    inputs = read.load_inputs(args.images, args.invert)
    if not inputs.names:
        raise read.PredictInputError(f"{' '.join(args.images)}: no images in it (an empty array?); expected {read.WHAT_IS_READ}")
    labels, source = read.labels_for(inputs, args.labels)
    store = open_store_to_read(absolute_store_uri(args.store), args.s3_endpoint)
    ref = classify.choose_model(store, args.model)
    probabilities = classify.classify(classify.load_model(store, ref), inputs.pixels(), args.batch_size)
    score = classify.accuracy(probabilities, labels, source)
    if args.json:
        print(json.dumps(classify.prediction_json(inputs.names, probabilities, ref, args.top, labels, score)))
        return
    print(f"model: {ref.describe()}", file=sys.stderr)
    print("\n".join(classify.prediction_lines(inputs.names, probabilities, args.top, labels)))
    if score is not None:
        print(score.line())


def _runs(args: argparse.Namespace) -> None:
    from tasks.runs.runlist import compare_runs, list_runs, open_store_to_read, show_run

    store = open_store_to_read(absolute_store_uri(args.store), args.s3_endpoint)
    if args.runs_action == "show":
        print(show_run(store, args.run_id))
    elif args.runs_action == "compare":
        print(compare_runs(store, args.run_a, args.run_b))
    else:
        print(list_runs(store, args.limit))


@functools.lru_cache(maxsize=4)
def _open_store(uri: str, s3_endpoint: str | None):
    """The store, opened (and on S3 checked) once however many checks before Prefect look at it."""
    from tasks.data.store import open_store

    return open_store(uri, s3_endpoint)


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config options typed on the command line (argparse leaves the others None)."""
    fields = _config_class(args).model_fields
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    misplaced = [name for name in SEARCH_ONLY if getattr(args, name, None) is not None and name not in fields]
    if misplaced:
        flags = ", ".join("--" + name.replace("_", "-") for name in misplaced)
        raise ConfigError(f"{flags}: options of a search; deploy one with `fmnist deploy --flow search {flags} …`")
    return given


def _config_from(args: argparse.Namespace) -> PipelineConfig:
    """The config the options describe; for a run id that exists in the store (--resume, or --run-id of an
    unfinished run), the config that run stored when it began, with the options given that don't change it."""
    from tasks.runs.run import read_stored_config, refuse_finished, resume_config
    from tasks.keys import RunPaths

    given = _given_options(args)
    if _config_class(args) is SearchConfig:
        return build_search_config(**given)
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
    from tasks.data.dataset import fetch_dataset

    store = _open_store(config.store, config.s3_endpoint)
    if config.recipe == "best" and not config.recipes:
        from tasks.model.recipes import best_recipes

        best_recipes(store, config.preset, list(config.architectures))  # none stored: say so now, not in the flow
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


def _interrupted(config: PipelineConfig, command: str = "run") -> str:
    """What an interrupted run leaves, and the command that finishes it."""
    from tasks.keys import RunPaths

    try:
        claimed = _open_store(config.store, config.s3_endpoint).exists(RunPaths(config.run_id or "-").config)
    except PipelineError:
        claimed = True  # the store did not answer: say how to resume, it may well be there
    if not claimed:
        return "interrupted before the run began; nothing to resume"
    if command == "search":
        return (f"interrupted: what the search trained is under {RunPaths(config.run_id or '-').root}/search in "
                f"{config.store}; a search is not resumed: start `fmnist search` again")
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
    from tasks.runs.champion import read_champions
    from tasks.data.store import open_store

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
        if args.command in ("predict", "runs"):
            (_predict if args.command == "predict" else _runs)(args)
            return 0
        config = _config_from(args)
        if args.command == "deploy":
            _check_prefect_server()
        else:
            _check_before_prefect(config)
        if args.command in ("run", "search"):  # Ray's own connect never gives up: fail in seconds, before Prefect
            from tasks.tune.cluster import check_ray_reachable
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
        elif args.command in ("run", "search"):
            from flows.interrupts import (EXIT_INTERRUPTED, handle_interrupts, say_farewell, stop_descendants,
                                          was_interrupted)
            from tasks.runs.run import new_run_id
            from tasks.keys import RunPaths

            # The id is chosen here, so that an interrupted run can be named in the line that says how to resume it.
            config = config if config.run_id else config.model_copy(update={"run_id": new_run_id()})
            from tasks.tune.progress import enable_live_progress
            enable_live_progress()  # this terminal is the run's: a live table of the trials (plain lines if piped)
            handle_interrupts(lambda: f"fmnist {args.command}: {_interrupted(config, args.command)}")
            try:
                if args.command == "search":
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
                                                       if args.command in ("run", "search") else ""),
              file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
