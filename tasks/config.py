"""One typed config: every default in one place, named presets as data.

The Prefect flows take a `PipelineConfig` as their parameter (the UI form is
built from it) and Ray trials receive `config.model_dump()`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.model.architectures import ARCHITECTURES, REPORT_ARCHITECTURES
from tasks.errors import ConfigError
from tasks.model.recipes import REPORT_BATCH_SIZE, BatchSize, Epochs, parse_recipe
from tasks.records import describe, path_of

# Every registered architecture can be named; the report's five are the default.
ArchitectureName = Literal[tuple(ARCHITECTURES)]  # type: ignore[valid-type]
ALL_ARCHITECTURES: tuple[str, ...] = REPORT_ARCHITECTURES
RecipeChoice = Literal["report", "best"]
PresetName = Literal["full", "quick"]

# A preset fills the fields it names when they are empty (None); a value the user gives wins over it.
# "Empty" and not "absent": the Prefect UI's form sends every field, and an untouched one arrives as null.
# (A quick run on all rows: --train-rows 60000 --test-rows 10000.)
PRESETS: dict[str, dict[str, int | None]] = {
    # The report's protocol: all rows, up to 100 epochs, early stopping after 10.
    "full": {"max_epochs": 100, "train_rows": None, "test_rows": None},
    # For tests and a first look: a few thousand rows, 2 epochs (about a minute on 2 CPUs).
    "quick": {"max_epochs": 2, "train_rows": 3000, "test_rows": 1000},
}
PRESET_FIELDS: tuple[str, ...] = ("max_epochs", "train_rows", "test_rows")
# Fields that decide what a run trains on and how: a resumed run keeps its own, and runs whose values differ
# from their preset's are not comparable with that preset's history.
PROTOCOL_FIELDS: tuple[str, ...] = ("preset", "source", "rows_per_shard", "architectures", "max_epochs", "batch_size",
                                    "patience", "train_rows", "test_rows", "seed", "steps_per_execution", "recipe",
                                    "recipes")

# A search's own fields that decide what it tries: a resumed search keeps them (Tune restores the interrupted
# architecture's searcher and scheduler as they began). Its time budget is not among them: a resume gets the one given.
SEARCH_PROTOCOL_FIELDS: tuple[str, ...] = ("num_samples", "scheduler", "grace_period", "reduction_factor",
                                           "max_concurrent", "seeds", "warm_start")

COMPARABILITY_FIELDS: tuple[str, ...] = ("batch_size", "patience", "seed")

# The embedded default store: a folder beside where the command runs (made absolute when a config is built).
DEFAULT_STORE = "./artifacts"

_RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# http(s)://host[:port][/path], with no user:password@ part (credentials never go into a config).
_ENDPOINT_PATTERN = r"^https?://[^/\s@]+(/[^\s@]*)?$"
# Anything but a URL that carries user:password@ (credentials come only from the AWS chain / the environment).
_NO_CREDENTIALS_PATTERN = r"^(?![A-Za-z][A-Za-z0-9+.-]*://[^/]*@).*$"


class PipelineConfig(BaseModel):
    """Everything a run needs; the seed protocol by default."""

    # python-re: the schema's patterns use a look-ahead (the Prefect form checks them in the browser too).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, regex_engine="python-re")

    preset: PresetName = Field(
        "full", description="Named protocol: 'full' (the report: all rows, up to 100 epochs) or 'quick' (3,000 train "
                            "rows, 1,000 test rows, 2 epochs). Fills max_epochs, train_rows and test_rows when empty.")
    store: str = Field(
        DEFAULT_STORE, min_length=1, pattern=_NO_CREDENTIALS_PATTERN, validate_default=True,
        description="Object store: a folder, file:///path, or s3://bucket/prefix. A relative folder is resolved "
                    "against the working folder of the process that starts the run.")
    s3_endpoint: str | None = Field(
        None, pattern=_ENDPOINT_PATTERN,
        description="S3-compatible endpoint URL, e.g. http://minio:9000 (empty: AWS_ENDPOINT_URL, else AWS). "
                    "No user:password@: credentials come from the AWS chain.")
    source: str | None = Field(
        None, pattern=_NO_CREDENTIALS_PATTERN,
        description="Raw Fashion-MNIST: a folder, file://, http(s):// or s3:// (empty: FASHION_MNIST_DIR, then "
                    "Debian's /usr/share/datasets/fashion-mnist, then the upstream mirror).")
    rows_per_shard: int = Field(10_000, ge=100, le=1_000_000, description="Rows in each Parquet shard.")
    architectures: list[ArchitectureName] = Field(
        default_factory=lambda: list(ALL_ARCHITECTURES), min_length=1,
        description="Which models to train: the report's five by default; 'resnet_bn' (ours, a small residual CNN) "
                    "by name.")
    recipe: RecipeChoice = Field(
        "report", description="How to train: 'report' (the report's protocol) or 'best' (the best recipe per "
                              "architecture that `fmnist search` stored for this preset).")
    recipes: dict[str, dict] | None = Field(
        None, description="Filled in when a run begins with recipe 'best' (the recipes it trains with, kept for "
                          "--resume); leave empty.")
    max_epochs: Epochs | None = Field(
        None,
        description="Upper bound on epochs; early stopping may end sooner (empty: the preset's, full 100, quick 2).")
    # The bounds of a recipe's batch (tasks.model.recipes.BatchSize): a run is refused before it is claimed, not
    # claimed and then failed in every trial.
    batch_size: BatchSize = Field(REPORT_BATCH_SIZE, description="Training batch size (the report: 128).")
    patience: int = Field(10, ge=0, le=10_000,
                          description="EarlyStopping(monitor='val_accuracy') patience in epochs (the report: 10).")
    train_rows: int | None = Field(
        None, ge=100, le=60_000,
        description="Use only the first N training rows (empty: the preset's, full all 60,000, quick 3,000).")
    test_rows: int | None = Field(
        None, ge=100, le=10_000,
        description="Evaluate on the first N test rows (empty: the preset's, full all 10,000, quick 1,000).")
    seed: int = Field(0, ge=0, le=2**32 - 1,
                      description="Random seed of weight initialisation, dropout and the per-epoch shuffle.")
    steps_per_execution: int = Field(
        32, ge=1, le=4096,
        description="Batches per call into the backend: same batches and updates as 1, less per-step overhead.")
    eval_batch_size: int = Field(
        1024, ge=1, le=65_536, description="Batch for validation and test passes (no effect on the numbers).")
    cpus_per_trial: float = Field(1.0, gt=0, le=512, description="CPUs reserved for each trial.")
    gpus_per_trial: float = Field(0.0, ge=0, le=1, description="Share of one GPU for each trial; fractions pack models.")
    max_failures: int = Field(2, ge=0, le=100, description="Times a trial is restarted from its last checkpoint.")
    store_wait_s: float = Field(
        120, ge=0, le=3600,
        description="Seconds a failed trial's restart waits for a store that does not answer (an outage) before it goes ahead.")
    promotion_alpha: float = Field(
        0.05, gt=0, le=0.5,
        description="A model replaces the champion only if it is better on the same test rows by McNemar's exact "
                    "test (one-sided) at this level: a model no better than the champion passes at most this often.")
    promotion_margin: float = Field(
        0.002, ge=0, le=1,
        description="For a champion recorded without per-image outcomes (or tested on other rows): a model replaces "
                    "it only if its test accuracy is higher by at least this (0.002 = 0.2 points).")
    ray_address: str | None = Field(
        None, pattern=_NO_CREDENTIALS_PATTERN,
        description="Existing Ray cluster, e.g. ray://head:10001 or auto (empty: RAY_ADDRESS, else a local Ray).")
    timeout: float | None = Field(
        None, gt=0, le=7 * 24 * 3600,
        description="Time limit of the run in seconds (CLI also '30m', '6h'): past it the trials are stopped where "
                    "they are (checkpoints kept, the run resumable) and the run ends TimedOut (empty: no limit; "
                    "`fmnist deploy` sets 6h for a run, 24h for a search unless given).")
    run_id: str | None = Field(
        None, pattern=_RUN_ID_PATTERN,
        description="Name of the run: letters, digits, '_', '-', '.', at most 64 (empty: generated). "
                    "An unfinished run's id resumes it.")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill the preset's fields that are absent or empty (None); given values win."""
        if not isinstance(data, dict):
            return data
        preset = data.get("preset") or "full"
        if preset not in PRESETS:
            return data  # the field validator reports the bad name
        filled = {name: value for name, value in PRESETS[preset].items() if data.get(name) is None}
        return {**data, **filled}

    @field_validator("architectures")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"each architecture at most once, found {value}")
        return value

    @field_validator("recipes")
    @classmethod
    def _valid_recipes(cls, value: dict[str, dict] | None) -> dict[str, dict] | None:
        for architecture, recipe in (value or {}).items():
            if architecture not in ARCHITECTURES:
                raise ValueError(f"recipe for {architecture!r}: no such architecture; expected some of {sorted(ARCHITECTURES)}")
            try:
                parse_recipe(recipe, f"the recipe of {architecture}")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None  # pydantic names the field
        return value

    @field_validator("store")
    @classmethod
    def _absolute_local_store(cls, value: str) -> str:
        return absolute_store_uri(value)

    # The schema's patterns alone would answer "should match pattern '^(?!…'": say what is wrong instead.
    @field_validator("store", "source", "ray_address", "s3_endpoint", mode="before")
    @classmethod
    def _no_credentials_in_urls(cls, value: Any) -> Any:
        return _refuse_credentials(value)

    @field_validator("s3_endpoint", mode="before")
    @classmethod
    def _endpoint_is_a_url(cls, value: Any) -> Any:
        if isinstance(_refuse_credentials(value), str) and not re.match(_ENDPOINT_PATTERN, value):
            raise ValueError("expected an http:// or https:// URL, e.g. http://127.0.0.1:9000")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout_duration(cls, value: Any) -> Any:
        return seconds_of(value)

    @field_validator("run_id", mode="before")
    @classmethod
    def _safe_run_id(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.match(_RUN_ID_PATTERN, value):
            raise ValueError("letters, digits, '_', '-', '.' only (at most 64), starting with a letter or digit")
        return value

    @property
    def overrides(self) -> dict[str, Any]:
        """The preset's fields whose values differ from the preset's own."""
        return {name: getattr(self, name) for name, value in PRESETS[self.preset].items() if getattr(self, name) != value}

    @property
    def comparable(self) -> bool:
        """Exactly its preset's protocol (a subset of the models aside): comparable with that preset's history."""
        return self._preset_unchanged and self.recipe == "report"

    @property
    def full_protocol(self) -> bool:
        """The full preset's protocol unchanged (any recipe): the only runs that take a champion slot."""
        return self.preset == "full" and self._preset_unchanged

    @property
    def _preset_unchanged(self) -> bool:
        """Its preset's values, and the defaults of the fields that make runs comparable (batch, patience, seed)."""
        return not self.overrides and all(
            getattr(self, name) == PipelineConfig.model_fields[name].default for name in COMPARABILITY_FIELDS)

    def protocol(self) -> str:
        """The resolved protocol in words, for logs and summaries: never a preset name that did not apply."""
        changed = ", ".join(f"{name}={value}" for name, value in self.overrides.items())
        return (f"preset '{self.preset}'" + (f" with {changed}" if changed else "")
                + f": {_rows(self.train_rows, 60_000)} train rows, {_rows(self.test_rows, 10_000)} test rows, "
                  f"up to {self.max_epochs} epochs, batch {self.batch_size}, patience {self.patience}, seed {self.seed}"
                + ("" if self.recipe == "report" else f", recipe '{self.recipe}' (the stored best per architecture: "
                                                      "batch and epochs their own, epochs capped by max_epochs)"))

    def form_parameters(self) -> dict[str, Any]:
        """This config as a deployment's parameters: the preset's fields left empty where they equal the preset's,
        so that a preset chosen in the UI form fills them (the form sends every field)."""
        values = self.model_dump(mode="json")
        for name in PRESET_FIELDS:
            if name not in self.overrides:
                values[name] = None
        return values


def _refuse_credentials(value: Any) -> Any:
    if isinstance(value, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*@", value):
        raise ValueError("a URL with user:password@ in it: credentials never go into the config (they would "
                         "reach run.json, Tune's state and logs); use the AWS credential chain or the environment")
    return value


def _rows(count: int | None, total: int) -> str:
    return f"all {total:,}" if count is None else f"{count:,}"


def absolute_store_uri(uri: str) -> str:
    """A local store (a folder or file: URI) as an absolute path, resolved against this process's working folder.

    Done once, where the run starts: Ray Tune runs each trial in a folder of its own, where a relative path
    would point somewhere else. s3:// and other schemes are returned unchanged (open_store checks them).
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost", "."):
        path = parsed.path if parsed.netloc != "." else "." + parsed.path
        return str(Path(path or ".").expanduser().resolve())
    if parsed.scheme == "":
        return str(Path(uri).expanduser().resolve())
    return uri


def config_field(loc: tuple[str | int, ...]) -> str:
    """How a config's validation error names its place: config field 'architectures[0]'."""
    return f"config field '{path_of(loc)}'" if loc else "config"


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad field: its name, what was wrong, and the value found."""
    return describe(exc, name=config_field, sep="\n")


def build_config(**values: Any) -> PipelineConfig:
    """Validate `values` into a config, raising ConfigError that names each bad field."""
    try:
        return PipelineConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


_DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def seconds_of(value: Any) -> Any:
    """'90', '90s', '30m', '2h' → seconds (a number passes through); anything else is left for pydantic to refuse."""
    if isinstance(value, str):
        match = _DURATION_PATTERN.match(value)
        if match:
            return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    return value


# The search's own preset values, filled like PRESETS: a quick search is a few recipes on the quick rows.
# The search's own preset fields, filled when empty. Quick's grace period is 1 so that ASHA has a rung (epoch 1)
# below its 2 epochs: with the full preset's 2, the only rung would be the last epoch and nothing would be stopped.
SEARCH_PRESETS: dict[str, dict[str, int]] = {"full": {"num_samples": 16, "grace_period": 2},
                                             "quick": {"num_samples": 6, "grace_period": 1}}


class SearchConfig(PipelineConfig):
    """`fmnist search`: a run's config plus the search's budget and scheduler. The search space is the recipe
    (tasks.tune.search.search_space); max_epochs bounds the epoch budgets it tries (a quarter, half, all)."""

    recipe: Literal["report"] = Field(
        "report", description="A search starts from the report's layers and searches the recipe; always 'report'.")
    num_samples: int | None = Field(
        None, ge=1, le=10_000, description="Recipes tried per architecture (empty: the preset's, full 16, quick 6).")
    time_budget: float | None = Field(
        None, gt=0, le=7 * 24 * 3600,
        description="Wall-clock limit of the whole search in seconds (CLI also '30m', '2h'); when it is reached the "
                    "search ends cleanly with the trials it has, and the winners are retrained (empty: no limit).")
    scheduler: Literal["asha", "fifo"] = Field(
        "asha", description="'asha' stops poor recipes after a few epochs; 'fifo' trains every recipe to its budget.")
    grace_period: int | None = Field(
        None, ge=1, le=10_000,
        description="ASHA: epochs every trial gets before it can be stopped (empty: the preset's, full 2, quick 1).")
    reduction_factor: float = Field(3.0, ge=1.5, le=100, description="ASHA: keep the top 1/reduction_factor at each rung.")
    max_concurrent: int | None = Field(
        None, ge=1, le=10_000, description="Trials at once (empty: as many as the cluster's CPUs and GPUs hold).")
    seeds: int = Field(3, ge=1, le=20, description="Each architecture's winning recipe is retrained with this many "
                                                   "seeds (seed+1, seed+2, …: not the search's own seed); Table 1 "
                                                   "gives their mean ± std.")
    warm_start: bool = Field(
        True, description="Hand TPE the trials of this store's earlier searches of the same preset, rows and epochs "
                          "before it proposes (false: a fresh search; CLI --no-warm-start).")

    @model_validator(mode="before")
    @classmethod
    def _apply_search_preset(cls, data: Any) -> Any:
        """As the run's preset: fill num_samples and grace_period when empty (the UI form sends null for an
        untouched field)."""
        if not isinstance(data, dict):
            return data
        preset = SEARCH_PRESETS.get(data.get("preset") or "full", SEARCH_PRESETS["full"])
        return {**data, **{name: value for name, value in preset.items() if data.get(name) is None}}

    @field_validator("time_budget", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return seconds_of(value)

    def form_parameters(self) -> dict[str, Any]:
        """As PipelineConfig's, with num_samples and grace_period left empty too where they are the preset's."""
        values = super().form_parameters()
        for name, value in SEARCH_PRESETS[self.preset].items():
            if getattr(self, name) == value:
                values[name] = None
        return values


def build_search_config(**values: Any) -> SearchConfig:
    try:
        return SearchConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


# --- config.json: the config a run stored when it was claimed, and the kind of run it is ---------------------------

RunKind = Literal["run", "search"]
CONFIG_MODELS: dict[str, type[PipelineConfig]] = {"run": PipelineConfig, "search": SearchConfig}


def kind_of(config: PipelineConfig) -> RunKind:
    """'search' for a config of `fmnist search`, 'run' for one of `fmnist run`."""
    return "search" if isinstance(config, SearchConfig) else "run"


def config_record(config: PipelineConfig) -> bytes:
    """What runs/<id>/config.json holds: the config, with its `kind` ('run' or 'search') named first."""
    return json.dumps({"kind": kind_of(config), **config.model_dump(mode="json")}, indent=2).encode()


def stored_kind(values: dict[str, Any]) -> RunKind | None:
    """The kind a stored config names; for one stored before configs named it, the kind whose model validates it
    (a search's has the search's fields, which a run's config refuses); None when neither does."""
    if values.get("kind") in CONFIG_MODELS:
        return values["kind"]
    fields = {k: v for k, v in values.items() if v is not None and k != "kind"}
    for kind, model in CONFIG_MODELS.items():
        try:
            model.model_validate(fields)
            return kind  # type: ignore[return-value]
        except ValidationError:
            continue
    return None
