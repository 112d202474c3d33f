"""The commands that only read the store: `fmnist predict`, `fmnist runs`, `fmnist champion`. None of them goes
through Prefect or Ray, and nothing here imports them (or the flows): they answer in a second."""

from __future__ import annotations

import argparse
import json
import sys

from tasks.config import absolute_store_uri


def predict(args: argparse.Namespace) -> None:
    """Inputs first (a bad file fails before TensorFlow is imported), then the model, then one batched pass."""
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


def runs(args: argparse.Namespace) -> None:
    from tasks.runs.runlist import compare_runs, list_runs, open_store_to_read, show_run

    store = open_store_to_read(absolute_store_uri(args.store), args.s3_endpoint)
    if args.runs_action == "show":
        print(show_run(store, args.run_id))
    elif args.runs_action == "compare":
        print(compare_runs(store, args.run_a, args.run_b))
    else:
        print(list_runs(store, args.limit))


def champion(args: argparse.Namespace) -> None:
    from tasks.data.store import open_store
    from tasks.runs.champion import champions_table, read_champions

    store_uri = absolute_store_uri(args.store)
    print(champions_table(store_uri, read_champions(open_store(store_uri, args.s3_endpoint))))


COMMANDS = {"predict": predict, "runs": runs, "champion": champion}
