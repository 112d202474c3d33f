"""The commands the product prints as advice on an unfinished run: each one works for that kind of run, typed as
printed, from any folder.

- a run of `fmnist run`: `fmnist run --resume ID --store URI` (nothing finished is redone);
- a search (`fmnist search`): `fmnist search --resume ID --store URI` (architectures searched are not searched
  again, the interrupted one goes on from Tune's saved state, the winners' retraining from its checkpoints).

Each carries the options that find the run: `--store` always (an absolute path or an s3:// URI), and `--s3-endpoint`
when the store's endpoint is not the one the environment gives (AWS_ENDPOINT_URL). No Prefect, no Ray here.
"""

from __future__ import annotations

import shlex

from tasks.config import RunKind
from tasks.errors import ConfigError
from tasks.settings import current_settings

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


def resume_command(run_id: str, store_uri: str, s3_endpoint: str | None, kind: RunKind = "run") -> str:
    """The command that finishes an unfinished run of `fmnist run` (or, kind 'search', of `fmnist search`)."""
    return f"fmnist {kind} --resume {shlex.quote(run_id)}{store_options(store_uri, s3_endpoint)}"


def how_to_finish(kind: RunKind | None, run_id: str, store_uri: str, s3_endpoint: str | None) -> str:
    """The advice line for an unfinished run of either kind."""
    return f"finish it with `{resume_command(run_id, store_uri, s3_endpoint, kind or 'run')}` (nothing finished is redone)"
