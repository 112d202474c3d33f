"""Prefect at the edges: the flows, their steps, the nightly deployment and the `fmnist` command.

- prepare, run, search: the flows, each short; they import their `@task`s from `steps` only (never one another)
- steps: every Prefect `@task`, a thin wrapper of a plain stage in `tasks/` (one retry preset), and the helpers
  the flows share
- deploy: the nightly deployment of a flow (served, or on a process work pool)
- prefect_compat: every Prefect internal the project relies on, checked at import
- cli/: the `fmnist` command (its read-only commands never import Prefect, Ray or the flows)
"""

import os

# The temporary Prefect server and the client would otherwise phone home.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
