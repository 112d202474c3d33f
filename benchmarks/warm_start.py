"""Does a second night's search start where the first stopped? Two nights of `fmnist search` in one store.

For each --seed (a fresh store each): night 1 is `fmnist search` (run id night1); night 2 is the same command again
in the same store (run id night2), warm-started from night 1's leaderboard (its rows appear there with
`new: false`); the control is night 2 with --no-warm-start (run id night2-cold, run after night 2 so that night 2
does not start from it: a different run id, so TPE's seed differs as night 2's does from night 1's). Every night
has the same budget (--num-samples recipes per architecture, --max-epochs, the full preset's ASHA).

Measured per architecture: each night's winner as the search picks it, the new trial with the best **final-epoch**
validation accuracy among those that trained their whole budget; the epochs its trials trained; for night 2 how
many of night 1's trials it was handed. The question: does night 2 find a better or equal validation accuracy
than night 1 with the same budget, and than a cold night 2? Writes benchmarks/results/warm_start.md and
warm_start_leaderboards.json (rewritten after each night).

    .venv/bin/python benchmarks/warm_start.py [--architectures baseline,mlp1] [--num-samples 8] [--max-epochs 10]
        [--seeds 0,1] [--append] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, write_result  # noqa: E402
from full_run import timed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NIGHTS = (("night1", []), ("night2", []), ("night2-cold", ["--no-warm-start"]))


def night(store: Path, run_id: str, extra: list[str], seed: int, args: argparse.Namespace,
          log: Path) -> tuple[float, list[dict]]:
    command = [str(ROOT / ".venv/bin/fmnist"), "search", "--store", str(store), "--run-id", run_id,
               "--architectures", args.architectures, "--num-samples", str(args.num_samples),
               "--max-epochs", str(args.max_epochs), "--seed", str(seed), "--seeds", "1", *extra]
    if args.train_rows:
        command += ["--train-rows", str(args.train_rows)]
    print(f"{time.strftime('%H:%M:%S')} seed {seed} {run_id}: {' '.join(command[1:])}", flush=True)
    seconds, _ = timed(command, log)
    print(f"{time.strftime('%H:%M:%S')} seed {seed} {run_id}: {seconds:.0f} s", flush=True)
    return seconds, json.loads((store / "runs" / run_id / "search" / "leaderboard.json").read_text())


def summary(rows: list[dict], architecture: str) -> dict:
    """The night's winner as the search picks it, its epochs, and how many earlier trials it was handed."""
    mine = [r for r in rows if r["architecture"] == architecture]
    new = [r for r in mine if r.get("new", True)]
    finished = [r for r in new if r["ended"] == "finished"]
    winner = max(finished or new, key=lambda r: r["val_accuracy"])
    return {"val": winner["val_accuracy"], "best_val": winner["best_val_accuracy"], "recipe": winner["config"],
            "epochs": sum(r["epochs"] for r in new), "trials": len(new), "finished": len(finished),
            "handed": len(mine) - len(new)}


def report(args: argparse.Namespace, results: dict) -> str:
    lines = ["# Warm start: two nights of `fmnist search` in one store", "", f"Machine: {machine()}", "",
             f"Each night: `fmnist search --architectures {args.architectures} --num-samples {args.num_samples} "
             f"--max-epochs {args.max_epochs} --seed S --seeds 1{f' --train-rows {args.train_rows}' if args.train_rows else ''}` "
             "(the full preset's ASHA, grace 2, reduction 3; all 60,000 training rows unless stated), into a fresh "
             "store per seed S: night 1 (run id night1), night 2 the same command in the same store (night2: "
             "warm-started from night 1), and the control night 2 with `--no-warm-start` (night2-cold). One run each.",
             "", "Accuracy: each night's winner, its new trial with the best **final-epoch** validation accuracy "
             "among those that trained their whole budget (its maximum over epochs in brackets). Epochs: the night's "
             "new trials' epochs, summed. Handed: night 1's trials the warm night 2 started from (`new: false` rows).",
             "", "| seed | architecture | night 1 % | night 2 warm % | night 2 cold % | warm − night 1 | warm − cold | "
             "epochs 1 / warm / cold | handed | night 2 ≥ night 1? |", "|---:|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for seed, nights in results.items():
        for arch in args.architectures.split(","):
            s = {name: summary(nights[name][1], arch) for name in nights}
            cell = lambda name: f"{100 * s[name]['val']:.2f} [{100 * s[name]['best_val']:.2f}]" if name in s else "–"
            diff = lambda a, b: f"{100 * (s[a]['val'] - s[b]['val']):+.2f}" if a in s and b in s else "–"
            epochs = " / ".join(str(s[name]["epochs"]) if name in s else "–" for name, _ in NIGHTS)
            verdict = ("yes" if s["night2"]["val"] >= s["night1"]["val"] else "NO") if "night2" in s else "–"
            lines.append(f"| {seed} | {arch} | {cell('night1')} | {cell('night2')} | {cell('night2-cold')} | "
                         f"{diff('night2', 'night1')} | {diff('night2', 'night2-cold')} | {epochs} | "
                         f"{s['night2']['handed'] if 'night2' in s else '–'} | {verdict} |")
    walls = "; ".join(f"seed {seed}: " + ", ".join(f"{name} {wall:.0f} s" for name, (wall, _) in nights.items())
                      for seed, nights in results.items())
    lines += ["", f"Wall time (whole command, incl. Prefect/Ray start and the 1-seed retrain): {walls}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--architectures", default="baseline,mlp1")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0", help="comma-separated: one pair of nights (a fresh store) per seed")
    parser.add_argument("--append", action="store_true",
                        help="add these seeds to those in results/warm_start_leaderboards.json (same options)")
    parser.add_argument("--train-rows", type=int, default=0, help="0: all 60,000")
    parser.add_argument("--work", default="", help="folder for the stores and logs (kept); default a temporary one")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="warm-start-"))
    work.mkdir(parents=True, exist_ok=True)
    saved = RESULTS / "warm_start_leaderboards.json"
    results: dict[int, dict[str, tuple[float, list[dict]]]] = {
        int(seed): {name: (n["wall_s"], n["rows"]) for name, n in nights.items()}
        for seed, nights in json.loads(saved.read_text()).items()} if args.append and saved.exists() else {}
    for seed in (int(s) for s in args.seeds.split(",")):
        store = work / f"store-seed{seed}"
        results[seed] = {}
        for run_id, extra in NIGHTS:
            results[seed][run_id] = night(store, run_id, extra, seed, args, work / f"seed{seed}-{run_id}.log")
            write_result(saved.name, json.dumps(
                {str(s): {name: {"wall_s": round(wall, 1), "rows": rows} for name, (wall, rows) in nights.items()}
                 for s, nights in results.items()}, indent=1))
            text = report(args, results)
            write_result("warm_start.md", text)
            print(text, flush=True)


if __name__ == "__main__":
    main()
