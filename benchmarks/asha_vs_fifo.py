"""ASHA pays for itself: the same search (space, samples, seed) with ASHA and with FIFO, in one run.

Runs `fmnist search --scheduler asha` and then `--scheduler fifo` on the same architectures, rows and number of
samples (Optuna's first 10 proposals are its random start-up, so both try mostly the same recipes), and compares
from each leaderboard: the best validation accuracy found and the epochs trained in total. Goal (issue 11): ASHA
within 0.2 points of FIFO's best at <= 1/3 of its epochs. Writes benchmarks/results/asha_vs_fifo.md.

    .venv/bin/python benchmarks/asha_vs_fifo.py [--architectures baseline,mlp1] [--num-samples 12] [--max-epochs 20]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, write_result  # noqa: E402
from full_run import timed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def search(scheduler: str, store: Path, args: argparse.Namespace, log: Path) -> tuple[float, list[dict]]:
    run_id = f"bench-{scheduler}-{int(time.time())}"
    command = [str(ROOT / ".venv/bin/fmnist"), "search", "--scheduler", scheduler, "--store", str(store),
               "--run-id", run_id, "--architectures", args.architectures, "--num-samples", str(args.num_samples),
               "--max-epochs", str(args.max_epochs), "--grace-period", str(args.grace_period),
               "--reduction-factor", str(args.reduction_factor), "--seeds", "1",
               "--no-warm-start"]  # each scheduler from scratch: FIFO must not start from ASHA's trials
    if args.train_rows:
        command += ["--train-rows", str(args.train_rows)]
    seconds, _ = timed(command, log)
    return seconds, json.loads((store / "runs" / run_id / "search" / "leaderboard.json").read_text())


def summary(rows: list[dict], architecture: str) -> tuple[float, int, int, int]:
    mine = [r for r in rows if r["architecture"] == architecture and r.get("new", True)]
    return (max(r["best_val_accuracy"] for r in mine), sum(r["epochs"] for r in mine), len(mine),
            sum(r["stopped_early"] for r in mine))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--architectures", default="baseline,mlp1")
    parser.add_argument("--num-samples", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--grace-period", type=int, default=2)
    parser.add_argument("--reduction-factor", type=float, default=3)
    parser.add_argument("--train-rows", type=int, default=0, help="0: all 60,000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        results = {s: search(s, store, args, Path(folder) / f"{s}.log") for s in ("asha", "fifo")}
    lines = [f"# ASHA vs FIFO: the same search, {args.num_samples} recipes per architecture", "",
             f"Machine: {machine()}", "",
             f"`fmnist search --architectures {args.architectures} --num-samples {args.num_samples} --max-epochs "
             f"{args.max_epochs} --grace-period {args.grace_period} --reduction-factor {args.reduction_factor} "
             f"--seeds 1{f' --train-rows {args.train_rows}' if args.train_rows else ''}` with `--scheduler asha`, "
             "then `fifo` (one run each: the figures are epochs and accuracies, not timings).", "",
             "| architecture | best val acc % ASHA | FIFO | Δ (points) | epochs ASHA | FIFO | ratio | stopped early | "
             "goal (≤ 0.2 points, ≤ 1/3 epochs) |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for arch in args.architectures.split(","):
        (a_best, a_epochs, _, a_stopped), (f_best, f_epochs, _, _) = (summary(results[s][1], arch) for s in ("asha", "fifo"))
        met = (f_best - a_best) <= 0.002 and a_epochs <= f_epochs / 3
        lines.append(f"| {arch} | {100 * a_best:.2f} | {100 * f_best:.2f} | {100 * (a_best - f_best):+.2f} | {a_epochs} | "
                     f"{f_epochs} | {a_epochs / f_epochs:.2f} | {a_stopped} | {'met' if met else 'MISSED'} |")
    lines += ["", f"Wall time (whole command, incl. Prefect/Ray start and the 1-seed retrain): ASHA "
                  f"{results['asha'][0]:.0f} s, FIFO {results['fifo'][0]:.0f} s, ratio {results['asha'][0] / results['fifo'][0]:.2f}."]
    text = "\n".join(lines) + "\n"
    write_result("asha_vs_fifo_leaderboards.json", json.dumps({s: results[s][1] for s in results}, indent=1))
    print(text)
    print(f"written to {write_result('asha_vs_fifo.md', text)}")


if __name__ == "__main__":
    main()
