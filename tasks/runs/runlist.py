"""`fmnist runs`: the runs in a store, one run's summary, and two runs compared with the test set's noise beside
each difference (paired: McNemar's exact test and the paired SE on the same test rows; tasks.runs.paired).
Reads only metadata (config.json, run.json's presence, lease.json, <arch>/metrics.json,
summary.md, models/champion.json), never a model or Tune's state.

Listing cost: one delimiter listing of runs/ (a request per 1,000 runs on S3), then per run shown: config.json,
a HEAD of run.json, lease.json, and one metrics.json per architecture. Ordering needs each run's start time:
a generated run id carries it (YYYYmmdd-HHMMSS-xxxxxx, UTC, when the id was claimed); a run id given by hand
costs one HEAD of its config.json (written once, when the run was claimed). The per-run reads go 8 at a time.
On SeaweedFS, 200 runs (11,800 objects): 0.32 s and 142 requests, against 4.4 s for listing every key under runs/
first (benchmarks/results/runs_listing.md).
"""

from __future__ import annotations

import calendar
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from tasks.config import ALL_ARCHITECTURES, PRESETS, RunKind, stored_kind
from tasks.errors import ConfigError, PipelineError
from tasks.records import JsonProblem, parse_object
from tasks.runs.paired import (DEFAULT_ALPHA, Outcomes, OutcomesError, Paired, independent_standard_error,
                               outcomes_match_accuracy, paired, read_outcomes)
from tasks.runs.hints import how_to_finish, resume_command
from tasks.runs.lease import held_by_a_live_process, read_lease, takeover_hint
from tasks.settings import current_settings
from tasks.keys import RUNS_PREFIX, RunPaths
from tasks.data.store import Store, open_store

GENERATED_ID = re.compile(r"^(\d{8}-\d{6})-[0-9a-f]{6}$")
DEFAULT_RECIPE = "report"  # what every run trains until a config says otherwise (the report's five models)
DEFAULT_LIMIT = 20
READ_WORKERS = 8  # metadata reads in flight at once


class RunNotFound(PipelineError):
    """A run id with nothing under runs/<id>/ in the store."""


class RunRecordError(PipelineError):
    """A run's metadata file is there but is not JSON of the expected shape."""


def refuse_missing_folder(uri: str) -> None:
    """ConfigError for a local store whose folder does not exist, where a run is looked up, not made: opening a
    LocalStore would create it (an empty folder left behind), and an empty store would hide a mistyped --store."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme == "file" else uri).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"store {uri}: no such folder; expected the folder `fmnist run` or `fmnist search` "
                              "left (./artifacts by default): run the command where you ran it, or give --store")


def open_store_to_read(uri: str, s3_endpoint: str | None) -> Store:
    """The store, for a command that only reads: a local folder that does not exist is an error here."""
    refuse_missing_folder(uri)
    return open_store(uri, s3_endpoint)


def _read_json(store: Store, key: str) -> dict | None:
    data, _ = store.read_versioned(key)
    if data is None:
        return None
    try:
        return parse_object(data)
    except JsonProblem as exc:
        raise RunRecordError(f"{store.url_for(key)}: {exc}; restore it from a backup") from None


# --- one run ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelResult:
    architecture: str
    test_accuracy: float
    test_rows: int
    epochs: int | None
    dataset_version: str | None
    outcomes: Outcomes | None = None  # which test rows it got right; None: recorded before they were, or unusable
    outcomes_note: str = ""  # why a record's outcomes are not used (damaged, disagreeing with its accuracy)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started: float | None
    config: dict | None
    status: str  # finished | running | resumable
    models: dict[str, ModelResult] = field(default_factory=dict)
    problem: str = ""  # a metadata file that could not be read, shown instead of failing the whole listing
    kind: RunKind | None = None  # what its config.json says it is ('run' or 'search'); None: it does not say
    damaged: dict[str, str] = field(default_factory=dict)  # architecture -> its unreadable metrics.json, in words

    @property
    def architectures(self) -> list[str]:
        planned = (self.config or {}).get("architectures") or []
        return [a for a in ALL_ARCHITECTURES if a in planned or a in self.models] + \
               [a for a in planned if a not in ALL_ARCHITECTURES]

    @property
    def preset(self) -> str:
        """The preset, and the preset fields the run changed (quick with test_rows=10000)."""
        if not self.config:
            return "?"
        preset = self.config.get("preset", "?")
        changed = [f"{k}={self.config.get(k)}" for k, v in PRESETS.get(preset, {}).items() if self.config.get(k) != v]
        return preset + (f" ({', '.join(changed)})" if changed else "")

    @property
    def recipe(self) -> str:
        """The config's recipe ('report', 'best'); 'search' for a run of `fmnist search`, whose models train with the
        recipes it found."""
        return "search" if self.kind == "search" else str((self.config or {}).get("recipe") or DEFAULT_RECIPE)


def started_at(store: Store, run_id: str) -> float | None:
    """When the run was claimed, as the run recorded it: a generated id carries it; else config.json's `started_at`
    (written when the run was claimed), for a config stored before it had one run.json's, and only for neither
    config.json's write time (which a copy of the run's folder changes). None: no config."""
    match = GENERATED_ID.match(run_id)
    if match:
        return float(calendar.timegm(time.strptime(match.group(1), "%Y%m%d-%H%M%S")))
    paths = RunPaths(run_id)
    for key in (paths.config, paths.record):
        recorded = _recorded_start(store, key)
        if recorded is not None:
            return recorded
    return store.modified_at(paths.config)


def _recorded_start(store: Store, key: str) -> float | None:
    """The `started_at` (UTC, ISO 8601) a run's config.json or run.json records; None if absent or unreadable (a
    damaged file is named by the run's row, not here)."""
    try:
        value = (_read_json(store, key) or {}).get("started_at")
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))) if isinstance(value, str) else None
    except (RunRecordError, ValueError):
        return None


def _model_result(metrics: dict) -> ModelResult:
    accuracy = float(metrics["test_accuracy"])
    outcomes, note = _outcomes_of(metrics, accuracy)
    return ModelResult(metrics["architecture"], accuracy, int(metrics["rows"]["test"]), metrics.get("epochs"),
                       metrics.get("dataset_version"), outcomes, note)


def _outcomes_of(metrics: dict, accuracy: float) -> tuple[Outcomes | None, str]:
    """The per-image outcomes a metrics.json records, or None and why they cannot be used (none is no problem:
    the model was tested before they were recorded, and compare says "unpaired")."""
    try:
        outcomes = read_outcomes(metrics.get("test_outcomes"))
    except OutcomesError as exc:
        return None, f"its test_outcomes are damaged ({exc})"
    if outcomes is not None and not outcomes_match_accuracy(outcomes, accuracy):
        return None, "its test_outcomes disagree with its test_accuracy"
    return outcomes, ""


def load_run(store: Store, run_id: str, started: float | None = None) -> RunInfo:
    """One run's metadata; an unreadable file becomes the row's `problem`, not an error for the whole listing."""
    paths = RunPaths(run_id)
    started = started if started is not None else started_at(store, run_id)
    finished = store.exists(paths.record)  # presence is the mark: a HEAD, not run.json's body
    try:
        config = _read_json(store, paths.config)
    except RunRecordError as exc:
        return RunInfo(run_id, started, None, "finished" if finished else "resumable", problem=str(exc))
    kind = stored_kind(config) if config else None
    status = "finished" if finished else ("running" if held_by_a_live_process(store, paths.lease) else "resumable")
    info = RunInfo(run_id, started, config, status, kind=kind)
    models, problem, damaged = {}, "", {}
    for arch in info.architectures or list(ALL_ARCHITECTURES):
        try:
            metrics = _read_json(store, paths.metrics(arch))
            if metrics is not None:
                models[arch] = _model_result(metrics)
        except (RunRecordError, KeyError, TypeError, ValueError) as exc:
            problem = damaged[arch] = str(exc) if isinstance(exc, RunRecordError) else \
                f"{store.url_for(paths.metrics(arch))}: lacks {exc}"
    return RunInfo(run_id, started, config, status, models, problem, kind, damaged)


def require_run(store: Store, run_id: str) -> RunInfo:
    paths = RunPaths(run_id)
    if not (store.exists(paths.config) or store.exists(paths.record)):
        raise RunNotFound(f"run {run_id!r}: no such run in {store.uri} (expected {paths.config}); "
                          f"`fmnist runs --store {store.uri}` lists the runs")
    return load_run(store, run_id)


# --- the listing ---------------------------------------------------------------------------------------------

def run_ids(store: Store) -> list[str]:
    prefix = f"{RUNS_PREFIX}/"
    return [p[len(prefix):-1] for p in store.list_prefixes(prefix)]


def _each(action, items: list) -> list:
    """action(item) for every item, in order, `workers` at a time: on S3 each read is a round trip of its own, and
    20 runs are about 160 of them (boto3 clients are thread-safe)."""
    if len(items) < 2 or READ_WORKERS < 2:
        return [action(item) for item in items]
    with ThreadPoolExecutor(min(READ_WORKERS, len(items))) as pool:
        return list(pool.map(action, items))


def newest_first(store: Store, ids: list[str]) -> list[tuple[str, float | None]]:
    """(run id, start time), newest first; runs with no known start (no config.json) last."""
    timed = list(zip(ids, _each(lambda run_id: started_at(store, run_id), ids)))
    return sorted(timed, key=lambda pair: (pair[1] is not None, pair[1] or 0.0, pair[0]), reverse=True)


def champion_marks(pointer: dict) -> dict[tuple[str, str], str]:
    """(run id, architecture) → '*' for an architecture's champion, '**' for the overall champion."""
    marks = {(e["run_id"], e["architecture"]): "*" for e in pointer.get("architectures", {}).values() if e}
    overall = pointer.get("overall")
    if overall:
        marks[(overall["run_id"], overall["architecture"])] = "**"
    return marks


def _when(started: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)) if started is not None else "?"


def _cell(run: RunInfo, arch: str, marks: dict[tuple[str, str], str]) -> str:
    if arch in run.models:
        mark = marks.get((run.run_id, arch), "")
        return f"{100 * run.models[arch].test_accuracy:.2f}%" + (f" {mark}" if mark else "")
    return "—" if arch in run.architectures else ""


def _test_rows(run: RunInfo) -> str:
    rows = {m.test_rows for m in run.models.values()}
    return ", ".join(f"{r:,}" for r in sorted(rows)) if rows else "—"


def runs_table(store_uri: str, runs: list[RunInfo], total: int, pointer: dict, s3_endpoint: str | None = None) -> str:
    if not runs:
        return f"no runs in {store_uri} (runs/ is empty): `fmnist run` makes one"
    marks = champion_marks(pointer)
    archs = [a for a in ALL_ARCHITECTURES if any(a in r.architectures for r in runs)]
    archs += sorted({a for r in runs for a in r.architectures} - set(archs))
    lines = [f"runs in {store_uri}, newest first ({len(runs)} of {total}):", "",
             "| run | started (UTC) | preset | recipe | status | test rows | " + " | ".join(archs) + " |",
             "|---|---|---|---|---|---:|" + "---:|" * len(archs)]
    for run in runs:
        lines.append(f"| {run.run_id} | {_when(run.started)} | {run.preset} | {run.recipe} | {run.status} | "
                     f"{_test_rows(run)} | " + " | ".join(_cell(run, a, marks) for a in archs) + " |")
    notes = ["", "test accuracy per model; — not finished; * champion of its architecture, ** overall champion"
                 + (f" (models/champion.json revision {pointer['revision']})" if pointer else " (no champion yet)")]
    notes += [f"{run.run_id}: {run.problem}" for run in runs if run.problem]
    if any(run.status == "running" for run in runs):
        notes.append(f"running: a live process holds the run's lease; if it is gone, "
                     f"`{resume_command('ID', store_uri, s3_endpoint)}` (a search: `fmnist search --resume ID …`) "
                     "takes the run over once its lease lapses "
                     f"({current_settings().lease_ttl_s:.0f} s after its last renewal, by the store's clock), or at "
                     "once after deleting runs/ID/lease.json")
    if total > len(runs):
        notes.append(f"{total - len(runs)} older runs not shown: --limit {total} shows all")
    return "\n".join(lines + notes)


def list_runs(store: Store, limit: int = DEFAULT_LIMIT) -> str:
    """The table `fmnist runs` prints: the `limit` newest runs (0: all), champions marked."""
    from tasks.runs.champion import read_champions

    ordered = newest_first(store, run_ids(store))
    shown = ordered if limit <= 0 else ordered[:limit]
    runs = _each(lambda pair: load_run(store, *pair), shown)
    return runs_table(store.uri, runs, len(ordered), read_champions(store) if runs else {}, _endpoint(store))


# --- one run's summary -------------------------------------------------------------------------------------

def _endpoint(store: Store) -> str | None:
    """The S3 endpoint the store was opened with (None for a folder): a hint names it unless the environment does."""
    return getattr(store, "endpoint", None)


def show_run(store: Store, run_id: str) -> str:
    """summary.md when the run finished; else what has finished so far, and how to finish it."""
    run = require_run(store, run_id)
    head = [f"run {run.run_id}: {run.status}, started {_when(run.started)} UTC, preset {run.preset}, "
            f"recipe {run.recipe}"]
    if run.problem:
        head.append(f"note: {run.problem}")
    summary, _ = store.read_versioned(RunPaths(run_id).summary_md)
    if summary is not None:
        return "\n".join(head) + "\n\n" + summary.decode("utf-8", errors="replace").rstrip()
    done = [a for a in run.architectures if a in run.models]
    pending = [a for a in run.architectures if a not in run.models]
    missing = "no summary.md in this run" if run.status == "finished" else "no summary yet"
    lines = head + ["", f"{missing}: {len(done)} of {len(run.architectures)} models finished", "",
                    "| model | epochs | test accuracy | test rows |", "|---|---:|---:|---:|"]
    for arch in done:
        m = run.models[arch]
        lines.append(f"| {arch} | {m.epochs if m.epochs is not None else '?'} | {100 * m.test_accuracy:.2f}% | "
                     f"{m.test_rows:,} |")
    for arch in pending:
        lines.append(f"| {arch} | — | not finished | — |")
    if run.status == "resumable":
        lines += ["", how_to_finish(run.kind, run.run_id, store.uri, _endpoint(store))]
    elif run.status == "running":
        held, stamped = read_lease(store, RunPaths(run_id).lease)
        lines += ["", "a process holds its lease and is running it now; " +
                  takeover_hint(store, RunPaths(run_id).lease, run_id, held, stamped.age_s,
                                current_settings().lease_ttl_s, run.kind or "run")]
    return "\n".join(lines)


# --- two runs compared -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    architecture: str
    a: ModelResult | None
    b: ModelResult | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b.test_accuracy - self.a.test_accuracy

    @property
    def pair(self) -> Paired | None:
        """A and B on the same test rows (b: rows only A got right, c: only B), when both recorded which rows."""
        if self.a is None or self.b is None or self.a.outcomes is None or self.b.outcomes is None:
            return None
        if not self.a.outcomes.same_rows(self.b.outcomes):
            return None
        return paired(self.a.outcomes, self.b.outcomes)

    @property
    def unpaired_because(self) -> str:
        """Why the difference is not paired ('' when it is, or when a side is missing)."""
        if self.a is None or self.b is None or self.pair is not None:
            return ""
        for side, model in (("A", self.a), ("B", self.b)):
            if model.outcomes is None:
                return f"{side}'s {model.outcomes_note or 'metrics.json predates per-image outcomes'}"
        return "tested on different test rows"

    @property
    def standard_error(self) -> float | None:
        """The paired SE on the same rows; else the independent-samples one, sqrt(p1 q1 / n1 + p2 q2 / n2)."""
        if self.a is None or self.b is None:
            return None
        pair = self.pair
        if pair is not None:
            return pair.standard_error
        return independent_standard_error(self.a.test_accuracy, self.a.test_rows, self.b.test_accuracy,
                                          self.b.test_rows)

    @property
    def p_value(self) -> float | None:
        """McNemar's exact two-sided p on the same rows; None when unpaired."""
        pair = self.pair
        return None if pair is None else pair.p_value("two-sided")

    @property
    def beyond_noise(self) -> bool | None:
        """Paired: McNemar's p below 0.05. Unpaired: |difference| above 2 independent SE (about 95% two-sided).
        None when a side is missing."""
        if self.delta is None or self.standard_error is None:
            return None
        if self.p_value is not None:
            return self.p_value < DEFAULT_ALPHA
        return abs(self.delta) > 2 * self.standard_error


def differences(a: RunInfo, b: RunInfo) -> list[Difference]:
    archs = [x for x in ALL_ARCHITECTURES if x in a.models or x in b.models or x in a.damaged or x in b.damaged]
    archs += sorted((set(a.models) | set(b.models) | set(a.damaged) | set(b.damaged)) - set(archs))
    return [Difference(x, a.models.get(x), b.models.get(x)) for x in archs]


def _pct(model: ModelResult | None, damaged: bool = False) -> str:
    return f"{100 * model.test_accuracy:.2f}%" if model else ("damaged" if damaged else "—")


def _verdict(d: Difference) -> str:
    if d.p_value is not None:
        return ("yes" if d.beyond_noise else "no") + " (paired)"
    verdict = ("yes" if d.beyond_noise else "no") + ", unpaired"
    if d.standard_error:  # zero only when both accuracies are 0% or 100%
        verdict += f" ({abs(d.delta) / d.standard_error:.1f} SE)"
    return verdict


def _missing(d: Difference, a: RunInfo, b: RunInfo) -> str:
    """Why a model has no difference: a damaged metrics.json is named (with its path), else 'not finished in both'."""
    damaged = [run.damaged[d.architecture] for run in (a, b) if d.architecture in run.damaged]
    return "damaged: " + "; ".join(damaged) if damaged else "not finished in both"


def _row(d: Difference, a: RunInfo, b: RunInfo) -> str:
    cells = f"| {d.architecture} | {_pct(d.a, d.architecture in a.damaged)} | {_pct(d.b, d.architecture in b.damaged)} |"
    if d.delta is None or d.standard_error is None:
        return f"{cells} — | — | — | — | — | {_missing(d, a, b)} |"
    pair = d.pair
    counts = f"{pair.b:,} | {pair.c:,} | {d.p_value:.3g}" if pair else "— | — | —"
    return f"{cells} {100 * d.delta:+.2f} | {100 * d.standard_error:.2f} | {counts} | {_verdict(d)} |"


def compare_runs(store: Store, run_a: str, run_b: str) -> str:
    """Per model: A's and B's test accuracy, B − A in points, its standard error, and whether it is beyond noise:
    on the same test rows, by McNemar's exact test (b rows only A got right, c only B, two-sided p < 0.05) with the
    paired SE; otherwise |B − A| > 2 independent SE, marked unpaired with the reason."""
    a, b = require_run(store, run_a), require_run(store, run_b)
    rows = differences(a, b)
    lines = [f"run {a.run_id} (A, {a.preset}) → run {b.run_id} (B, {b.preset}): test accuracy", "",
             f"| model | A | B | B − A (points) | SE (points) | b (only A right) | c (only B right) | McNemar p | "
             f"beyond noise? (p < {DEFAULT_ALPHA:g}) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += [_row(d, a, b) for d in rows]
    notes = ["", "Paired (both runs recorded which test rows each model got right, on the same rows): SE is the "
                 "paired standard error of B − A, and McNemar's exact two-sided test on the rows only one of the "
                 f"two got right decides; p < {DEFAULT_ALPHA:g} is beyond noise.",
             f"Many looks: each row is its own test at {DEFAULT_ALPHA:g}; with {len(rows)} models, two equal runs show "
             f"at least one \"yes\" about {100 * (1 - (1 - DEFAULT_ALPHA) ** len(rows)):.0f} % of the time. And a "
             "\"yes\" says these two models differ, not their recipes: two seeds of one recipe are truly different "
             "models (their test accuracies spread by about 0.2-0.3 points, benchmarks/results/champion_gate.md), "
             "so a recipe's change needs several seeds a side."]
    unpaired = [f"{d.architecture}: {d.unpaired_because}" for d in rows if d.unpaired_because]
    if unpaired:
        notes.append("Unpaired (" + "; ".join(unpaired) + "): SE = sqrt(p1(1-p1)/n1 + p2(1-p2)/n2), n = each run's "
                     "test rows, and beyond 2 SE is beyond noise. On the same rows this overstates the noise (about "
                     "twice the paired SE): a difference below it may still be real.")
    test_rows = {m.test_rows for run in (a, b) for m in run.models.values()}
    if len(test_rows) > 1:
        notes.append(f"note: the runs were tested on different numbers of rows ({', '.join(f'{n:,}' for n in sorted(test_rows))}): "
                     "a difference also reflects the test rows chosen")
    versions = {m.dataset_version for run in (a, b) for m in run.models.values() if m.dataset_version}
    if len(versions) > 1:
        notes.append(f"note: different dataset versions ({', '.join(sorted(versions))})")
    return "\n".join(lines + notes)
