"""The run's report: Table 1 of the report with our numbers beside it, the run record, Figure 1."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.model.architectures import ARCHITECTURES
from tasks.runs.champion import Decision, decisions_json, decisions_markdown
from tasks.errors import ChampionFileError
from tasks.runs.plots import samples_png
from tasks.runs.hints import resume_command
from tasks.runs.run import Run
from tasks.settings import current_settings, without_credentials
from tasks.data.shards import CLASS_NAMES, load_split

LIBRARIES = ("tensorflow", "keras", "ray", "prefect", "pyarrow", "boto3", "numpy", "pydantic")


def table1_rows(metrics_by_arch: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per architecture in the report's order: ours, the report's, and the difference (points)."""
    rows = []
    for key, spec in ARCHITECTURES.items():
        if key not in metrics_by_arch:
            continue
        ours = metrics_by_arch[key]
        test = 100 * ours["test_accuracy"]
        rows.append({
            "model": spec.report_name,
            "key": key,
            "params": ours["params"],
            "epochs": ours["epochs"],
            "report_epochs": spec.report.epochs,
            "train_acc": round(100 * ours["train_accuracy"], 2),
            "report_train_acc": spec.report.train_accuracy,
            "test_acc": round(test, 2),
            "report_test_acc": spec.report.test_accuracy,
            "test_acc_diff": round(test - spec.report.test_accuracy, 2),
            "sec_per_epoch": round(ours["seconds_per_epoch"], 2),
        })
    return rows


def table1_markdown(run_id: str, rows: list[dict[str, Any]], note: str = "") -> str:
    lines = [
        f"# Run {run_id}: Table 1, ours beside the report's",
        "",
        # As the table artifact (tasks.runs.tables.run_table): headers in words with units, the test accuracy first.
        "| Model | Test accuracy (%, ours / report) | Δ vs report (points) | Train accuracy (%, ours / report) "
        "| Epochs (ours / report) | Parameters | Seconds per epoch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['test_acc']:.2f} / {r['report_test_acc']:.2f} | {r['test_acc_diff']:+.2f} | "
            f"{r['train_acc']:.2f} / {r['report_train_acc']:.2f} | {r['epochs']} / {r['report_epochs']} | "
            f"{r['params']:,} | {r['sec_per_epoch']:,.2f} |"
        )
    lines += ["", DELTA_BAND]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# Issue 27 §8: Δ is one run of ours against one of the report's, each a draw of its seed.
DELTA_BAND = ("Δ vs report: each side is one run of one seed; one run's test accuracy moves by about 0.2-0.3 points "
              "between seeds (benchmarks/results/champion_gate.md), so a Δ within about ±0.5 points is seed noise.")


def code_version() -> str:
    """The git commit of the code that ran (with '-dirty' when uncommitted), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        if commit:
            return commit
    except (OSError, subprocess.SubprocessError):
        pass
    return metadata.version("fmnist-pipeline")


def hardware(cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """This machine, and the Ray cluster the run used (tasks.tune.cluster.cluster_summary) when there was one."""
    info: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(), "platform": platform.platform()}
    return {**info, "ray_cluster": cluster} if cluster else info


def run_record(run: Run, ended: float, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """run.json: what ran, on what, with what, enough to reproduce the run. Written once, when the run finished (its
    presence is what marks a finished run), so its status is always 'completed'. Neither the config nor the
    settings hold a secret (AWS keys come from the AWS chain and are not settings)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "run_id": run.run_id,
        "status": "completed",
        "resumed": run.resumed,
        "protocol": run.config.protocol(),
        "config": run.config.model_dump(mode="json"),  # resolved: the preset's values filled in, the store absolute
        # The endpoint the store was opened with: --s3-endpoint, else AWS_ENDPOINT_URL (None: AWS, or a local store).
        "s3_endpoint": without_credentials(getattr(run.store, "endpoint", None)),
        "settings": current_settings().recorded(),  # the environment variables the run read (tasks/settings.py)
        "dataset_version": run.dataset_version,
        "code_version": code_version(),
        "libraries": versions,
        "python": platform.python_version(),
        "hardware": hardware(cluster),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.started)),
        "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ended)),
        "seconds": round(ended - run.started, 1),
    }


def _publish_summary(run: Run, metrics_by_arch: dict[str, dict], code: str, decisions: list[Decision],
                     champion_error: str = "") -> dict[str, Any]:
    """Figure 1, summary.json and summary.md (not run.json: the caller decides whether the run is finished)."""
    store, paths, version = run.store, run.paths, run.dataset_version
    images, labels, _ = load_split(store, version, "train", rows=1000, manifest=run.manifest)
    store.put_bytes(paths.samples, samples_png(images, labels, CLASS_NAMES))
    rows = table1_rows(metrics_by_arch)
    promoted = [d.slot for d in decisions if d.promoted]
    summary = {"run_id": run.run_id, "dataset_version": version, "protocol": run.config.protocol(),
               "comparable": run.config.comparable, "table1": rows, "metrics": metrics_by_arch,
               "promoted": bool(promoted), "champion_decisions": decisions_json(decisions)}
    markdown = table1_markdown(run.run_id, rows, note=f"Protocol: {run.config.protocol()}. Dataset version {version}; "
                                                      f"code {code}.")
    if champion_error:
        summary["champion_error"] = champion_error
        markdown += f"\n**Not promoted: champion file unreadable**: {champion_error}\n"
    else:
        markdown += "\n" + (f"**Promoted**: {', '.join(promoted)}\n" if promoted else "**Not promoted**\n")
        markdown += "\n" + decisions_markdown(decisions)
    store.put_bytes(paths.summary_json, json.dumps(summary, indent=2).encode())
    store.put_bytes(paths.summary_md, markdown.encode())
    return {"rows": rows, "markdown": markdown}


def publish_report(run: Run, metrics_by_arch: dict[str, dict], record: dict[str, Any],
                   decisions: list[Decision]) -> dict[str, Any]:
    """Figure 1, summary.json, summary.md, then run.json last (its presence marks a finished run)."""
    result = _publish_summary(run, metrics_by_arch, record["code_version"], decisions)
    run.store.put_bytes(run.paths.record, json.dumps(record, indent=2).encode())
    return result


def keep_unpromoted_summary(run: Run, metrics_by_arch: dict[str, dict], error: ChampionFileError) -> ChampionFileError:
    """A damaged champion file must not cost the night's training: publish Table 1 with a note (no run.json,
    so the run stays unfinished and `--resume` can promote it once the file is repaired) and return the
    error the run ends with, saying so."""
    summary_url = run.store.url_for(run.paths.summary_md)
    _publish_summary(run, metrics_by_arch, code_version(), [], champion_error=error.problem)
    return ChampionFileError(error.url, error.problem,
                             after=f"; this run's models and Table 1 are kept ({summary_url}), and "
                                   f"`{resume_command(run.run_id, run.store.uri, getattr(run.store, 'endpoint', None))}` promotes them "
                                   "without retraining once it is "
                                   f"repaired")
