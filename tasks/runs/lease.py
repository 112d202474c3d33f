"""One process at a time per run: a lease in the store, taken with a conditional write, kept alive while it runs.

Two `fmnist run --run-id X` at once would otherwise both train into runs/X/ (the second would look like a
resume). The lease `runs/X/lease.json` names its holder (host, pid) and when it was last renewed. Another
process may take it over only when the holder is gone: on the same host, its pid no longer exists (so a killed
run resumes at once); on another host, the lease was not renewed for LEASE_TTL_S. Every write is conditional
(If-None-Match / If-Match on S3, a lock locally), so of two claimants exactly one wins.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from tasks.errors import ConfigError, PipelineError
from tasks.processes import pid_alive
from tasks.data.store import Store

LEASE_TTL_S = float(os.environ.get("FMNIST_LEASE_TTL_S", "120"))  # a holder on another host silent this long is gone
RENEW_EVERY_S = LEASE_TTL_S / 4


class RunInProgress(ConfigError):
    """Another live process holds the run's lease."""


def holder_alive(holder: dict[str, Any], now: float) -> bool:
    if holder.get("host") == socket.gethostname():
        return pid_alive(int(holder.get("pid", -1)))
    return now - float(holder.get("renewed_at", 0)) < LEASE_TTL_S


class RunLease:
    """The lease on one run, held by this process from acquire() to release()."""

    def __init__(self, store: Store, key: str, run_id: str) -> None:
        self.store, self.key, self.run_id = store, key, run_id
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex}
        self._token: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({**self.holder, "renewed_at": time.time()}).encode()

    def acquire(self) -> "RunLease":
        """Take the lease, or raise RunInProgress naming the live holder."""
        data, token = self.store.read_versioned(self.key)
        if data is not None:
            try:
                held = json.loads(data)
            except ValueError:
                held = {}  # unreadable: nobody can prove to hold it
            if held and holder_alive(held, time.time()):
                raise self._refusal(held)
        if not self.store.put_if_version(self.key, self._body(), token):
            data, _ = self.store.read_versioned(self.key)
            raise self._refusal(json.loads(data) if data else {})
        self._token = self.store.read_versioned(self.key)[1]
        self._renewer = threading.Thread(target=self._renew_until_released, name=f"lease-{self.run_id}", daemon=True)
        self._renewer.start()
        return self

    def _refusal(self, held: dict[str, Any]) -> RunInProgress:
        age = time.time() - float(held.get("renewed_at", time.time()))
        return RunInProgress(
            f"run {self.run_id} is in progress: {self.store.url_for(self.key)} is held by pid {held.get('pid', '?')} "
            f"on {held.get('host', '?')} (renewed {age:.0f} s ago); wait for it to end, or leave --run-id empty for a "
            f"new run. If that process is gone from another machine, its lease lapses after {LEASE_TTL_S:.0f} s")

    def _renew_until_released(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            try:
                if not self.store.put_if_version(self.key, self._body(), self._token):
                    return  # taken over (we were presumed gone); the run's own writes will tell
                self._token = self.store.read_versioned(self.key)[1]
            except PipelineError:
                continue  # the store is away for a moment: try again at the next beat

    def release(self) -> None:
        """Stop renewing and give the lease up (a finished or failed run; a killed one simply stops renewing)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        data, token = self.store.read_versioned(self.key)
        if data is not None and json.loads(data).get("id") == self.holder["id"]:
            self.store.delete(self.key)
