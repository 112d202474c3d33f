"""One process at a time per run: a lease in the store, taken with a conditional write, kept alive while it runs.

Two `fmnist run --run-id X` at once would otherwise both train into runs/X/ (the second would look like a
resume). The lease `runs/X/lease.json` names its holder (host, pid) and when it was last renewed. Another
process may take it over only when the holder is gone: on the same host, its pid no longer exists (so a killed
run resumes at once); on another host, the lease was not renewed for $FMNIST_LEASE_TTL_S (120 s unless set).
Every write is conditional
(If-None-Match / If-Match on S3, a lock locally), so of two claimants exactly one wins.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.data.store import Store
from tasks.errors import ConfigError, PipelineError
from tasks.processes import pid_alive
from tasks.records import JsonProblem, parse_object, validate
from tasks.settings import current_settings

RENEWALS_PER_TTL = 4  # the holder renews four times per lease_ttl_s: a slow store misses a beat, not the lease


class RunInProgress(ConfigError):
    """Another live process holds the run's lease."""


class Lease(BaseModel):
    """runs/<id>/lease.json: who holds the run (host, pid, and an id of its own) and when it last renewed."""

    model_config = ConfigDict(extra="allow")

    host: str
    pid: int
    id: str
    renewed_at: float

    @classmethod
    def of(cls, value: Any) -> "Lease | None":
        """The lease a parsed lease.json holds; None when it holds none (nobody can prove to hold the run)."""
        try:
            return validate(cls, value)
        except JsonProblem:
            return None

    @classmethod
    def read(cls, data: bytes) -> "Lease | None":
        try:
            return cls.of(parse_object(data))
        except JsonProblem:
            return None  # unreadable: nobody can prove to hold it


def holder_alive(holder: Lease, now: float, ttl_s: float | None = None) -> bool:
    """On this host: its process still exists. On another: it renewed within the lease's TTL (a holder on another
    host silent this long is gone)."""
    if holder.host == socket.gethostname():
        return pid_alive(holder.pid)
    return now - holder.renewed_at < (ttl_s if ttl_s is not None else current_settings().lease_ttl_s)


class RunLease:
    """The lease on one run, held by this process from acquire() to release()."""

    def __init__(self, store: Store, key: str, run_id: str) -> None:
        self.store, self.key, self.run_id = store, key, run_id
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex}
        self.ttl_s = current_settings().lease_ttl_s
        self._token: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return Lease(**self.holder, renewed_at=time.time()).model_dump_json().encode()

    def acquire(self) -> "RunLease":
        """Take the lease, or raise RunInProgress naming the live holder."""
        data, token = self.store.read_versioned(self.key)
        held = Lease.read(data) if data is not None else None
        if held is not None and holder_alive(held, time.time(), self.ttl_s):
            raise self._refusal(held)
        if not self.store.put_if_version(self.key, self._body(), token):
            data, _ = self.store.read_versioned(self.key)
            raise self._refusal(Lease.read(data) if data else None)
        self._token = self.store.read_versioned(self.key)[1]
        self._renewer = threading.Thread(target=self._renew_until_released, name=f"lease-{self.run_id}", daemon=True)
        self._renewer.start()
        return self

    def _refusal(self, held: Lease | None) -> RunInProgress:
        pid, host, age = (held.pid, held.host, time.time() - held.renewed_at) if held else ("?", "?", 0.0)
        return RunInProgress(
            f"run {self.run_id} is in progress: {self.store.url_for(self.key)} is held by pid {pid} on {host} "
            f"(renewed {age:.0f} s ago); wait for it to end, or leave --run-id empty for a new run. If that process "
            f"is gone from another machine, its lease lapses after {self.ttl_s:.0f} s")

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl_s / RENEWALS_PER_TTL):
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
        held = Lease.read(data) if data is not None else None
        if held is not None and held.id == self.holder["id"]:
            self.store.delete(self.key)
