"""The main job vs the plain script, full seed protocol, in one run.

Runs `fmnist run` (Prefect + Ray Tune, five trials, shards from the store; wall time includes
starting Prefect's temporary server and a local Ray) and benchmarks/plain_five.py (the five
models one after another in one process), one after the other, and prints the ratio
fmnist/plain. Writes benchmarks/results/full_run.md and copies the run's summary.md (Table 1
beside the report's) to benchmarks/results/seed_protocol_summary.md.

    .venv/bin/python benchmarks/full_run.py [--max-epochs 100] [-- extra fmnist run options]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], log: Path) -> tuple[float, str]:
    started = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    output = log.read_text()
    if code != 0:
        raise SystemExit(f"{command[:3]} failed ({code}); see {log}\n{output[-2000:]}")
    return time.perf_counter() - started, output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--output", default="full_run.md")
    parser.add_argument("extra", nargs="*", help="more `fmnist run` options")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-full-"))
    python = sys.executable
    run_id = f"bench-full-{time.strftime('%Y%m%d-%H%M%S')}"

    fmnist_seconds, _ = timed([python, "-m", "flows.cli", "run", "--store", str(work / "store"), "--run-id", run_id,
                               "--max-epochs", str(args.max_epochs), *args.extra], work / "fmnist.log")
    plain_seconds, plain_out = timed([python, "benchmarks/plain_five.py", "--max-epochs", str(args.max_epochs)],
                                     work / "plain.log")
    plain_rows = [json.loads(line) for line in plain_out.splitlines() if line.startswith('{"architecture"')]
    summary = json.loads((work / "store" / "runs" / run_id / "summary.json").read_text())

    lines = [
        "# Main job vs plain script: the five models, seed protocol",
        "",
        f"Machine: {machine()}",
        f"max_epochs {args.max_epochs}; fmnist options: {' '.join(args.extra) or '(defaults)'}; one run of each.",
        "",
        f"- `fmnist run` wall: {fmnist_seconds:.0f} s (Prefect temporary server, local Ray, five Tune trials)",
        f"- plain script wall (five one after another): {plain_seconds:.0f} s",
        f"- **ratio fmnist / plain: {fmnist_seconds / plain_seconds:.2f}** (goal <= 1.0)",
        "",
        "| model | fmnist epochs | fmnist test % | plain epochs | plain test % | report test % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    plain_by_arch = {row["architecture"]: row for row in plain_rows}
    for row in summary["table1"]:
        plain = plain_by_arch.get(row["key"], {})
        lines.append(f"| {row['model']} | {row['epochs']} | {row['test_acc']:.2f} | {plain.get('epochs', '')} | "
                     f"{plain.get('test_accuracy', '')} | {row['report_test_acc']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    print("written to", write_result(args.output, text))
    if args.max_epochs == 100 and not args.extra:
        seed = (work / "store" / "runs" / run_id / "summary.md").read_text()
        (RESULTS / "seed_protocol_summary.md").write_text(f"Machine: {machine()}\n\n{seed}")


if __name__ == "__main__":
    main()
