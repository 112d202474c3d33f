"""The commands the product prints as advice on an unfinished run: each one works for that kind of run, typed as
printed, from any folder.

- a run of `fmnist run`: `fmnist run --resume ID --store URI` (nothing finished is redone);
- a search (`fmnist search`): it is not resumed, so the advice is to start it again with the options it began with.

Each carries the options that find the run: `--store` always (an absolute path or an s3:// URI), and `--s3-endpoint`
when the store's endpoint is not the one the environment gives (AWS_ENDPOINT_URL). No Prefect, no Ray here.
"""

from __future__ import annotations

import shlex
from typing import Any

from pydantic import ValidationError

from tasks.config import RunKind, SearchConfig
from tasks.errors import ConfigError
from tasks.settings import current_settings

# Fields a command line never carries (filled in by the run, or said by store_options).
_NOT_REPEATED = ("run_id", "recipes", "store", "s3_endpoint")
# What a stored config.json holds beside the config's fields.
RECORD_KEYS = ("kind", "started_at", "prefect")  # "prefect": the flow run that claimed it, if any


def store_options(store_uri: str, s3_endpoint: str | None) -> str:
    """' --store URI', and ' --s3-endpoint URL' for an S3 store whose endpoint the environment does not give."""
    options = f" --store {shlex.quote(store_uri)}"
    if store_uri.startswith("s3://") and s3_endpoint and s3_endpoint != _environment_endpoint():
        options += f" --s3-endpoint {shlex.quote(s3_endpoint)}"
    return options


def _environment_endpoint() -> str | None:
    try:
        return current_settings().aws_endpoint_url
    except ConfigError:  # a bad variable elsewhere: then name the endpoint, which is never wrong
        return None


def resume_command(run_id: str, store_uri: str, s3_endpoint: str | None) -> str:
    """The command that finishes an unfinished run of `fmnist run`."""
    return f"fmnist run --resume {shlex.quote(run_id)}{store_options(store_uri, s3_endpoint)}"


def _flag(name: str, value: Any) -> str:
    """One option as typed: a switch that is on by default is turned off by --no-NAME (flows.cli.options)."""
    if isinstance(value, bool):
        return f"--no-{name.replace('_', '-')}" if not value else ""
    text = ",".join(value) if isinstance(value, list) else str(value)
    return f"--{name.replace('_', '-')} {shlex.quote(text)}"


def search_command(config: SearchConfig, store_uri: str, s3_endpoint: str | None) -> str:
    """`fmnist search` with the options that make the same search: those that differ from the preset's defaults."""
    default = SearchConfig(preset=config.preset).model_dump()
    values = config.model_dump()
    flags = [_flag(name, value) for name, value in values.items()
             if name not in _NOT_REPEATED and value is not None and (name == "preset" and value != "full"
                                                                      or name != "preset" and value != default[name])]
    return " ".join(["fmnist search", *filter(None, flags)]) + store_options(store_uri, s3_endpoint)


def search_again(config: SearchConfig | None, store_uri: str, s3_endpoint: str | None) -> str:
    """The advice for an unfinished search: `fmnist search` has no --resume, so: start it again, the same options."""
    command = search_command(config, store_uri, s3_endpoint) if config is not None else \
        f"fmnist search{store_options(store_uri, s3_endpoint)} (with the options it began with)"
    return f"a search is not resumed: start it again with `{command}`"


def stored_search_config(values: dict | None) -> SearchConfig | None:
    """A search's stored config.json as a SearchConfig, or None when it is not one (then the advice names no options)."""
    if not values:
        return None
    try:
        return SearchConfig.model_validate({k: v for k, v in values.items() if v is not None and k not in RECORD_KEYS})
    except ValidationError:
        return None


def how_to_finish(kind: RunKind | None, run_id: str, store_uri: str, s3_endpoint: str | None,
                  stored: dict | None = None) -> str:
    """The advice line for an unfinished run of either kind (`stored`: its config.json, for a search's options)."""
    if kind == "search":
        return search_again(stored_search_config(stored), store_uri, s3_endpoint)
    return f"finish it with `{resume_command(run_id, store_uri, s3_endpoint)}` (nothing finished is redone)"
