"""Helpers shared by the benchmarks: machine description and result files."""

from __future__ import annotations

import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(f"{n} {metadata.version(n)}" for n in ("tensorflow", "keras", "ray", "prefect", "pyarrow"))
    return (f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}; {versions}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_result(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(text)
    return path
