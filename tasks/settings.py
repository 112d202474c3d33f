"""The environment variables the pipeline reads, as one typed model: each one's default and bound written once.

`current_settings()` reads the environment when it is called (never cached: a test, or a long-lived process, may
change a variable), and a bad value is a ConfigError of one line naming the variable, what was expected and what
was found. AWS credentials are not settings: boto3 and pyarrow read them from the standard AWS chain themselves,
and nothing here may ever hold a secret (run.json records these values).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from annotated_types import Ge, Gt
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.errors import ConfigError


class Settings(BaseSettings):
    """What the environment may set; an unset or empty variable takes the default."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True)

    debug: bool = Field(False, validation_alias="FMNIST_DEBUG",
                        description="Show the traceback of an expected error too (any value but empty or 0).")
    fashion_mnist_dir: str | None = Field(
        None, validation_alias="FASHION_MNIST_DIR",
        description="The raw Fashion-MNIST source when --source is empty: a folder, file://, http(s):// or s3://.")
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "fmnist-pipeline",
                            validation_alias="FMNIST_CACHE_DIR",
                            description="Where files downloaded from an http(s):// source are kept.")
    ray_connect_timeout_s: float = Field(
        30.0, gt=0, validation_alias="FMNIST_RAY_CONNECT_TIMEOUT_S",
        description="Seconds to wait for the Ray cluster to answer before the run is refused.")
    placement_timeout_s: float = Field(
        600.0, gt=0, validation_alias="FMNIST_PLACEMENT_TIMEOUT_S",
        description="Seconds to wait for an autoscaler to add a node that holds one trial.")
    lease_ttl_s: float = Field(
        120.0, gt=0, validation_alias="FMNIST_LEASE_TTL_S",
        description="Seconds after which a run's lease not renewed, by the store's clock, counts as abandoned (on "
                    "any host); its holder renews it four times as often.")
    progress: Literal["auto", "plain"] = Field(
        "auto", validation_alias="FMNIST_PROGRESS",
        description="'plain' keeps one log line per epoch on a terminal too; 'auto' shows a live table there.")
    s3_max_attempts: int = Field(8, ge=1, validation_alias="FMNIST_S3_MAX_ATTEMPTS",
                                 description="Attempts of one S3 request (botocore's standard retry mode).")
    aws_endpoint_url: str | None = Field(
        None, validation_alias="AWS_ENDPOINT_URL",
        description="The S3-compatible endpoint when --s3-endpoint is empty (empty: AWS).")
    ray_address: str | None = Field(None, validation_alias="RAY_ADDRESS",
                                    description="The Ray cluster when --ray-address is empty (empty: a local Ray).")

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value: Any, info: ValidationInfo) -> Any:
        """A variable of blanks counts as unset, as an empty one does (env_ignore_empty); FMNIST_DEBUG is on for
        anything but 0; FMNIST_PROGRESS in any case; every value stripped."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        if info.field_name == "debug":
            return text != "0"
        return text.lower() if info.field_name == "progress" else text

    def recorded(self) -> dict[str, Any]:
        """The values as run.json records them, by variable name (any user:password@ in a URL left out)."""
        return {variable(name): without_credentials(value) for name, value in self.model_dump(mode="json").items()}


def variable(field: str) -> str:
    """The environment variable of a settings field."""
    return str(Settings.model_fields[field].validation_alias)


def expected(field: str) -> str:
    """What a field's variable must hold, in words, from the field's own type and bounds."""
    info = Settings.model_fields[field]
    kind = {float: "a number", int: "a whole number", bool: "a flag", Path: "a folder"}.get(info.annotation, "")
    if not kind and hasattr(info.annotation, "__args__"):
        choices = [a for a in info.annotation.__args__ if a is not type(None)]
        kind = "one of " + ", ".join(repr(c) for c in choices) if all(isinstance(c, str) for c in choices) else "text"
    if field.endswith("_s"):
        kind += " of seconds"
    for bound in info.metadata:
        if isinstance(bound, Gt):
            kind += f" above {bound.gt:g}"
        elif isinstance(bound, Ge):
            kind += f" of at least {bound.ge:g}"
    return kind


_FIELD_OF = {str(info.validation_alias): name for name, info in Settings.model_fields.items()}


def current_settings() -> Settings:
    """The settings the environment gives now; ConfigError (one line) naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else "?"
            field = _FIELD_OF.get(name, name)
            problems.append(f"environment variable {name}: expected {expected(field)}, found {error.get('input')!r}")
        raise ConfigError("; ".join(problems)) from None


def without_credentials(value: Any) -> Any:
    """A URL with any user:password@ part left out; other values as they are."""
    if isinstance(value, str):
        return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", value)
    return value


def debug_requested() -> bool:
    """FMNIST_DEBUG, for the CLI's --debug default (taken before the command runs: a bad value of another variable
    is not reported here but by the command, in its one line)."""
    try:
        return current_settings().debug
    except ConfigError:
        return False
