"""One typed config: every default in one place, named presets as data.

The Prefect flows take a `PipelineConfig` as their parameter (the UI form is
built from it) and Ray trials receive `config.model_dump()`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import ConfigError

ArchitectureName = Literal["baseline", "mlp1", "mlp3_dropout", "cnn1_mlp", "cnn2"]
ALL_ARCHITECTURES: tuple[str, ...] = ("baseline", "mlp1", "mlp3_dropout", "cnn1_mlp", "cnn2")
PresetName = Literal["full", "quick"]

# A preset only changes the fields it names; explicit values win over it.
PRESETS: dict[str, dict[str, Any]] = {
    # The report's protocol: all rows, up to 100 epochs, early stopping after 10.
    "full": {"max_epochs": 100, "train_rows": None, "test_rows": None},
    # For tests and a first look: a few thousand rows, 2 epochs (about a minute on 2 CPUs).
    "quick": {"max_epochs": 2, "train_rows": 3000, "test_rows": 1000},
}

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PipelineConfig(BaseModel):
    """Everything a run needs; the seed protocol by default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: PresetName = Field("full", description="Named set of defaults: 'full' (the report) or 'quick'.")
    store: str = Field("./artifacts", description="Object store: a folder, file://…, or s3://bucket/prefix.")
    s3_endpoint: str | None = Field(None, description="S3-compatible endpoint URL (else AWS_ENDPOINT_URL, else AWS).")
    source: str | None = Field(None, description="Raw Fashion-MNIST: folder, file://, http(s):// or s3:// (else the defaults).")
    rows_per_shard: int = Field(10_000, ge=100, le=1_000_000, description="Rows in each Parquet shard.")
    architectures: list[ArchitectureName] = Field(
        default_factory=lambda: list(ALL_ARCHITECTURES), min_length=1, description="Which of the five models to train."
    )
    max_epochs: int = Field(100, ge=1, le=10_000, description="Upper bound on epochs (early stopping may end sooner).")
    batch_size: int = Field(128, ge=1, le=65_536)
    patience: int = Field(10, ge=0, description="EarlyStopping(monitor='val_accuracy') patience in epochs.")
    train_rows: int | None = Field(None, ge=100, le=60_000, description="Use only the first N training rows (None: all).")
    test_rows: int | None = Field(None, ge=100, le=10_000, description="Evaluate on the first N test rows (None: all).")
    seed: int = Field(0, ge=0)
    steps_per_execution: int = Field(
        32, ge=1, le=4096,
        description="Batches per call into the backend: same batches and updates as 1, less per-step overhead.")
    eval_batch_size: int = Field(
        1024, ge=1, le=65_536, description="Batch for validation and test passes (no effect on the numbers).")
    cpus_per_trial: float = Field(1.0, gt=0, le=512, description="CPUs reserved for each trial.")
    gpus_per_trial: float = Field(0.0, ge=0, le=1, description="Share of one GPU for each trial; fractions pack models.")
    max_failures: int = Field(2, ge=0, le=100, description="Times a trial is restarted from its last checkpoint.")
    promotion_margin: float = Field(
        0.002, ge=0, le=1,
        description="A model replaces the champion only if its test accuracy is higher by at least this (0.002 = 0.2 points).")
    ray_address: str | None = Field(None, description="Existing Ray cluster (else RAY_ADDRESS, else a local Ray).")
    run_id: str | None = Field(None, description="Name of the run; generated when empty. Reuse it to resume.")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "full")
        if preset not in PRESETS:
            return data  # the field validator reports the bad name
        return {**PRESETS[preset], **data}

    @field_validator("architectures")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"each architecture at most once, found {value}")
        return value

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint_is_a_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL, e.g. http://127.0.0.1:9000")
        return value

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str | None) -> str | None:
        if value is not None and not _RUN_ID.match(value):
            raise ValueError("letters, digits, '_', '-', '.' only (at most 64), starting with a letter or digit")
        return value


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad field: its name, what was wrong, and the value found."""
    lines = []
    for error in exc.errors():
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".") or "config"
        lines.append(f"config field '{field}': {error['msg']} (found {error.get('input')!r})")
    return "\n".join(lines)


def build_config(**values: Any) -> PipelineConfig:
    """Validate `values` into a config, raising ConfigError that names each bad field."""
    try:
        return PipelineConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
