"""Prefect flows (prepare, run), the nightly deployment and the `fmnist` command.

Prefect stays here, at the edges: every flow calls plain functions from `tasks`.
"""

import os

# The temporary Prefect server and the client would otherwise phone home.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
