"""ASHA pays for itself: the same search (space, samples, seed, run id) with ASHA and with FIFO.

Runs `fmnist search --scheduler asha` (once per --asha grace×reduction pair) and `--scheduler fifo` on the same
architectures, rows and number of samples, each in a store of its own with the same run id (so TPE's seed, drawn
from seed, architecture and run id, is the same; FIFO's space has one knob more, the epoch budget, so its draws are
not the same recipes), with --no-warm-start. From each leaderboard it compares the search's winner as the search
chooses it: the new trial with the best **final-epoch** validation accuracy (`val_accuracy`) among those that
trained their whole budget; that trial's maximum over epochs (`best_val_accuracy`) is printed beside it. And the
epochs trained in total. Goal (issue 11, again in issue 18): ASHA within 0.2 points of FIFO's best at <= 1/3 of
its epochs. Under ASHA every trial's budget is --max-epochs (max_t); FIFO searches a quarter, half or all of it.
One search of 12 recipes is a small sample (which recipes TPE happens to draw moves the best by points), so
--repeats N runs N run ids and the table adds their mean (--append adds repeats to the saved ones). Writes
benchmarks/results/asha_vs_fifo.md and asha_vs_fifo_leaderboards.json (rewritten after each search).

    .venv/bin/python benchmarks/asha_vs_fifo.py [--architectures baseline,mlp1] [--num-samples 12] [--max-epochs 20]
        [--asha 2x3,1x4] [--repeats 1] [--append] [--work DIR]
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


def parse_asha(text: str) -> list[tuple[int, float]]:
    """'2x3,1x4' -> [(grace 2, reduction 3.0), (grace 1, reduction 4.0)]."""
    pairs = []
    for item in text.split(","):
        grace, reduction = item.strip().split("x")
        pairs.append((int(grace), float(reduction)))
    return pairs


def label(scheduler: str, grace: int | None = None, reduction: float | None = None) -> str:
    return "fifo" if scheduler == "fifo" else f"asha g{grace} r{reduction:g}"


def search(scheduler: str, work: Path, run_id: str, args: argparse.Namespace, grace: int, reduction: float,
           name: str) -> tuple[float, list[dict]]:
    work.mkdir(parents=True, exist_ok=True)
    store = work / name.replace(" ", "-")
    command = [str(ROOT / ".venv/bin/fmnist"), "search", "--scheduler", scheduler, "--store", str(store),
               "--run-id", run_id, "--architectures", args.architectures, "--num-samples", str(args.num_samples),
               "--max-epochs", str(args.max_epochs), "--grace-period", str(grace),
               "--reduction-factor", str(reduction), "--seeds", "1",
               "--no-warm-start"]  # each search from scratch (their stores are apart anyway)
    if args.train_rows:
        command += ["--train-rows", str(args.train_rows)]
    print(f"{time.strftime('%H:%M:%S')} {name}: {' '.join(command[1:])}", flush=True)
    seconds, _ = timed(command, work / f"{name.replace(' ', '-')}.log")
    print(f"{time.strftime('%H:%M:%S')} {name}: {seconds:.0f} s", flush=True)
    return seconds, json.loads((store / "runs" / run_id / "search" / "leaderboard.json").read_text())


def summary(rows: list[dict], architecture: str) -> dict:
    """The winner as the search picks it (best final-epoch val accuracy among new trials that trained their whole
    budget, else among all new ones), its best-over-epochs, and the epochs trained in total."""
    mine = [r for r in rows if r["architecture"] == architecture and r.get("new", True)]
    finished = [r for r in mine if r["ended"] == "finished"]
    winner = max(finished or mine, key=lambda r: r["val_accuracy"])
    return {"val": winner["val_accuracy"], "best_val": winner["best_val_accuracy"], "winner_epochs": winner["epochs"],
            "epochs": sum(r["epochs"] for r in mine), "trials": len(mine), "finished": len(finished),
            "stopped": sum(r["stopped_early"] for r in mine)}


def report(args: argparse.Namespace, pairs: list[tuple[int, float]], repeats: list[dict]) -> str:
    asha_names = [label("asha", g, r) for g, r in pairs]
    lines = [f"# ASHA vs FIFO: the same search, {args.num_samples} recipes per architecture", "",
             f"Machine: {machine()}", "",
             f"`fmnist search --architectures {args.architectures} --num-samples {args.num_samples} --max-epochs "
             f"{args.max_epochs} --seeds 1 --no-warm-start{f' --train-rows {args.train_rows}' if args.train_rows else ''}` "
             f"with `--scheduler fifo` and with `--scheduler asha` at each `--grace-period G --reduction-factor R` "
             f"({'; '.join(f'G={g}, R={r:g}' for g, r in pairs)}); in each repeat (a run id) every search has its own "
             f"store and the same run id, so the same TPE seed ({len(repeats)} repeat(s); the wall times are one run's, "
             "on a shared machine).", "",
             "Accuracy: the search's winner, the new trial with the best **final-epoch** validation accuracy among "
             "those that trained their whole budget (`val_accuracy`); its maximum over epochs (`best_val_accuracy`) "
             "in brackets. Epochs: all trials' epochs, summed.", "",
             "| architecture | ASHA (grace, reduction) | repeat | final val acc % ASHA [best] | FIFO [best] | Δ (points) | "
             "epochs ASHA | FIFO | ratio | trials stopped early / finished | goal (≥ −0.2 points, ≤ 1/3 epochs) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]

    def verdict(delta: float, ratio: float) -> str:
        accuracy_met, epochs_met = delta >= -0.002, ratio <= 1 / 3
        return "met" if accuracy_met and epochs_met else (
            "MISSED (" + ", ".join(w for w, ok in (("accuracy", accuracy_met), ("epochs", epochs_met)) if not ok) + ")")

    for arch in args.architectures.split(","):
        for (g, r), name in zip(pairs, asha_names):
            pooled = []
            for number, repeat in enumerate(repeats, 1):
                searches = repeat["searches"]
                if name not in searches:
                    continue
                a = summary(searches[name]["rows"], arch)
                if "fifo" not in searches:
                    lines.append(f"| {arch} | {g}, {r:g} | {number} | {100 * a['val']:.2f} [{100 * a['best_val']:.2f}] | "
                                 f"– | – | {a['epochs']} | – | – | {a['stopped']} / {a['finished']} | – |")
                    continue
                f = summary(searches["fifo"]["rows"], arch)
                pooled.append((a, f))
                delta, ratio = a["val"] - f["val"], a["epochs"] / f["epochs"]
                lines.append(f"| {arch} | {g}, {r:g} | {number} | {100 * a['val']:.2f} [{100 * a['best_val']:.2f}] | "
                             f"{100 * f['val']:.2f} [{100 * f['best_val']:.2f}] | {100 * delta:+.2f} | {a['epochs']} | "
                             f"{f['epochs']} | {ratio:.2f} | {a['stopped']} / {a['finished']} | {verdict(delta, ratio)} |")
            if len(pooled) > 1:
                mean = lambda values: sum(values) / len(values)
                a_val, f_val = mean([a["val"] for a, _ in pooled]), mean([f["val"] for _, f in pooled])
                a_ep, f_ep = sum(a["epochs"] for a, _ in pooled), sum(f["epochs"] for _, f in pooled)
                lines.append(f"| {arch} | {g}, {r:g} | **mean of {len(pooled)}** | {100 * a_val:.2f} | {100 * f_val:.2f} | "
                             f"{100 * (a_val - f_val):+.2f} | {a_ep / len(pooled):.0f} | {f_ep / len(pooled):.0f} | "
                             f"{a_ep / f_ep:.2f} | | {verdict(a_val - f_val, a_ep / f_ep)} |")
    lines += ["", "Wall time (whole command, incl. Prefect/Ray start and the 1-seed retrain of each winner): " + "; ".join(
        f"repeat {number}: " + ", ".join(f"{name} {s['wall_s']:.0f} s" for name, s in repeat["searches"].items())
        for number, repeat in enumerate(repeats, 1)) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--architectures", default="baseline,mlp1")
    parser.add_argument("--num-samples", type=int, default=12)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--asha", default="2x3", help="ASHA grace×reduction pairs, each a search: 2x3,1x4")
    parser.add_argument("--repeats", type=int, default=1, help="repeats, each with its own run id (TPE seed)")
    parser.add_argument("--append", action="store_true",
                        help="add the repeats to those in results/asha_vs_fifo_leaderboards.json (same options)")
    parser.add_argument("--train-rows", type=int, default=0, help="0: all 60,000")
    parser.add_argument("--work", default="", help="folder for the stores and logs (kept); default a temporary one")
    args = parser.parse_args()
    pairs = parse_asha(args.asha)
    work = Path(args.work or tempfile.mkdtemp(prefix="asha-vs-fifo-"))
    work.mkdir(parents=True, exist_ok=True)
    saved = RESULTS / "asha_vs_fifo_leaderboards.json"
    earlier = json.loads(saved.read_text()) if args.append and saved.exists() else {"options": {}, "repeats": []}
    repeats: list[dict] = earlier["repeats"]
    shown = list(dict.fromkeys(parse_asha(earlier["options"]["asha"]) + pairs if repeats else pairs))
    for _ in range(args.repeats):
        run_id = f"bench-asha-fifo-{int(time.time())}"  # the same in every store of this repeat: the same TPE seed
        repeat = {"run_id": run_id, "searches": {}}
        repeats.append(repeat)
        plan = [("asha", g, r, label("asha", g, r)) for g, r in pairs]
        for scheduler, grace, reduction, name in [plan[0], ("fifo", 2, 3.0, "fifo"), *plan[1:]]:
            seconds, rows = search(scheduler, work / run_id, run_id, args, grace, reduction, name)
            repeat["searches"][name] = {"wall_s": round(seconds, 1), "rows": rows}
            options = {**vars(args), "asha": ",".join(f"{g}x{r:g}" for g, r in shown)}
            write_result(saved.name, json.dumps({"options": options, "repeats": repeats}, indent=1))
            text = report(args, shown, repeats)
            write_result("asha_vs_fifo.md", text)
            print(text, flush=True)


if __name__ == "__main__":
    main()
