"""One process at a time per run: a lease in the store, taken with a conditional write, kept alive while it runs,
and checked before every write that publishes (fencing).

Two `fmnist run --run-id X` at once would otherwise both train into runs/X/ (the second would look like a
resume). The lease `runs/X/lease.json` names its holder: host, pid, the process's start time, the machine's boot id
and its PID namespace, and an id of its own. Another process may take it over only when the holder is gone:
- its lease was not renewed for $FMNIST_LEASE_TTL_S (120 s unless set), measured by the STORE's clock (the object's
  LastModified on S3, its mtime in a folder) against the store's time now: no client's clock, skewed or not, takes
  part. A lease past that is never alive, on any host;
- or, before that, the holder is a process of this machine's boot and PID namespace that no longer exists (same
  pid and start time), so a killed run resumes at once. A pid reused by another process is not the holder.
A lease.json of an older version (no start time) is judged by its expiry alone.

The holder renews RENEWALS_PER_TTL times per TTL. A renewal that loses its conditional write means the run was
taken over: the loss is recorded (who, when), the Tune experiment is stopped (tasks/tune/fencing.py), and every
fenced write raises LeaseLost, whose one line ends the run. Every write is conditional (If-None-Match / If-Match on
S3, a lock locally), so of two claimants exactly one wins.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.data.store import Stamped, Store, open_store
from tasks.errors import ConfigError, LeaseLost, PipelineError
from tasks.processes import boot_id, pid_alive, pid_namespace, process_started
from tasks.records import JsonProblem, parse_object, validate
from tasks.settings import current_settings

RENEWALS_PER_TTL = 4  # the holder renews four times per lease_ttl_s: a slow store misses a beat, not the lease


class RunInProgress(ConfigError):
    """Another live process holds the run's lease."""


class Lease(BaseModel):
    """runs/<id>/lease.json: who holds the run and when it last renewed (by its own clock: shown, never judged)."""

    model_config = ConfigDict(extra="allow")

    host: str
    pid: int
    id: str
    renewed_at: float
    started: int | None = None  # the holder's start, in clock ticks after boot (/proc/<pid>/stat)
    boot_id: str | None = None  # /proc/sys/kernel/random/boot_id of the holder's machine
    pid_ns: str | None = None  # the holder's PID namespace: its pid means the same process only inside it

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


def this_process(host: str | None = None) -> dict[str, Any]:
    """The identity this process writes into a lease it takes (a fresh id for each lease)."""
    pid = os.getpid()
    return {"host": host or socket.gethostname(), "pid": pid, "id": uuid.uuid4().hex, "started": process_started(pid),
            "boot_id": boot_id(), "pid_ns": pid_namespace()}


def _ttl(ttl_s: float | None) -> float:
    return ttl_s if ttl_s is not None else current_settings().lease_ttl_s


def seen_from_here(holder: Lease) -> bool:
    """Whether the holder's pid names a process this process can look up: same host, boot and PID namespace, and a
    lease that recorded its start time (an older lease.json did not)."""
    return (holder.started is not None and holder.host == socket.gethostname() and holder.boot_id == boot_id()
            and holder.pid_ns == pid_namespace())


def holder_alive(holder: Lease, age_s: float, ttl_s: float | None = None) -> bool:
    """Whether the holder of a lease renewed `age_s` seconds ago by the store's clock may still run: never past the
    TTL; before it, unless it is a process of this machine and namespace that is gone (its pid ended, or now names
    a process that started at another time)."""
    if age_s >= _ttl(ttl_s):
        return False
    if seen_from_here(holder):
        return pid_alive(holder.pid) and process_started(holder.pid) == holder.started
    return True


def read_lease(store: Store, key: str) -> tuple[Lease | None, Stamped]:
    """The lease at `key` (None: absent or unreadable) and the stamped read it came from."""
    stamped = store.read_stamped(key)
    return (Lease.read(stamped.data) if stamped.data is not None else None), stamped


def utc(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)) if seconds is not None else "an unknown time"


def takeover_hint(store: Store, key: str, run_id: str, holder: Lease | None, age_s: float | None,
                  ttl_s: float, kind: str = "run") -> str:
    """How to take over a run (kind 'run') or search whose holder is gone (for the refusal line and `fmnist runs
    show`)."""
    left = max(0.0, ttl_s - (age_s or 0.0))
    return (f"if that process is gone, `fmnist {kind} --resume {run_id} --store {store.uri}` takes the {kind} over once "
            f"its lease lapses, {ttl_s:.0f} s after its last renewal by the store's clock (in about {left:.0f} s), "
            f"or at once after you delete {store.url_for(key)} (only when you are sure it is gone: two processes "
            "would then train into one run)")


def lost_line(run_id: str, holder: Lease | None, at: float | None, lapsed_s: float | None = None) -> LeaseLost:
    """The one line a process that lost its run ends with."""
    if holder is not None:
        what = f"run {run_id} was taken over by pid {holder.pid} on {holder.host} at {utc(at)}"
    elif lapsed_s is not None:
        what = f"run {run_id}: this process's lease lapsed (not renewed for {lapsed_s:.0f} s by the store's clock)"
    else:
        what = f"run {run_id} lost its lease (lease.json was removed; noticed at {utc(at)})"
    return LeaseLost(f"{what}; nothing more was written by this process")


class LeaseFence(BaseModel):
    """What a process other than the holder's (a Ray trial) needs to check that the run's holder still holds it:
    plain values, so it pickles into a trial."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    store: str
    s3_endpoint: str | None = None
    key: str
    holder_id: str
    ttl_s: float

    def check(self, store: Store | None = None, wait_s: float | None = None) -> None:
        """Return when lease.json names the holder and is within its TTL by the store's clock; raise LeaseLost when
        it names another holder or none, or stays lapsed for `wait_s` (default half a TTL: the holder renews every
        quarter TTL, so a lapse that lasts means it is not renewing)."""
        store = store or open_store(self.store, self.s3_endpoint)
        deadline = time.monotonic() + (self.ttl_s / 2 if wait_s is None else wait_s)
        while True:
            held, stamped = read_lease(store, self.key)
            if held is None or held.id != self.holder_id:
                raise lost_line(self.run_id, held, stamped.modified if held else stamped.now)
            age = stamped.age_s or 0.0
            if age < self.ttl_s:
                return
            if time.monotonic() >= deadline:
                raise lost_line(self.run_id, None, None, lapsed_s=age)
            time.sleep(min(self.ttl_s / RENEWALS_PER_TTL / 2, max(0.05, deadline - time.monotonic())))


_held: dict[str, "RunLease"] = {}  # the leases this process holds, by run id (for the Tune stopper)
_held_lock = threading.Lock()


def held_lease(run_id: str) -> "RunLease | None":
    """The lease this process holds on `run_id`, if it took one."""
    with _held_lock:
        return _held.get(run_id)


class RunLease:
    """The lease on one run, held by this process from acquire() to release()."""

    def __init__(self, store: Store, key: str, run_id: str, host: str | None = None, kind: str = "run") -> None:
        self.store, self.key, self.run_id, self.kind = store, key, run_id, kind  # kind: 'run' or 'search', for hints
        self.holder = this_process(host)
        self.ttl_s = current_settings().lease_ttl_s
        self._token: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._renewing = threading.Lock()  # one conditional write at a time: the renewer's or check()'s
        self.lost: LeaseLost | None = None  # set once another process took the run over

    def _body(self) -> bytes:
        return Lease(**self.holder, renewed_at=time.time()).model_dump_json().encode()

    def acquire(self) -> "RunLease":
        """Take the lease, or raise RunInProgress naming the live holder."""
        held, stamped = read_lease(self.store, self.key)
        if held is not None and holder_alive(held, stamped.age_s or 0.0, self.ttl_s):
            raise self._refusal(held, stamped.age_s)
        if not self.store.put_if_version(self.key, self._body(), stamped.token):
            held, stamped = read_lease(self.store, self.key)
            raise self._refusal(held, stamped.age_s)
        data, self._token = self.store.read_versioned(self.key)
        mine = Lease.read(data) if data is not None else None
        if mine is None or mine.id != self.holder["id"]:
            held, stamped = read_lease(self.store, self.key)  # taken between our write and our read
            raise self._refusal(held, stamped.age_s)
        with _held_lock:
            _held[self.run_id] = self
        self._renewer = threading.Thread(target=self._renew_until_released, name=f"lease-{self.run_id}", daemon=True)
        self._renewer.start()
        return self

    def _refusal(self, held: Lease | None, age_s: float | None) -> RunInProgress:
        pid, host = (held.pid, held.host) if held else ("?", "?")
        return RunInProgress(
            f"run {self.run_id} is in progress: {self.store.url_for(self.key)} is held by pid {pid} on {host} "
            f"(renewed {age_s or 0.0:.0f} s ago by the store's clock); wait for it to end, or leave --run-id empty "
            f"for a new run; {takeover_hint(self.store, self.key, self.run_id, held, age_s, self.ttl_s, self.kind)}")

    def fence(self) -> LeaseFence:
        """The check a trial makes before it publishes (see LeaseFence.check)."""
        store = self.store
        return LeaseFence(run_id=self.run_id, store=store.uri, s3_endpoint=getattr(store, "endpoint", None),
                          key=self.key, holder_id=self.holder["id"], ttl_s=self.ttl_s)

    def _renew(self) -> None:
        """One renewal; on a lost conditional write, record who holds the run now (self.lost) and raise it."""
        with self._renewing:
            if self.lost is not None:
                raise self.lost
            if self.store.put_if_version(self.key, self._body(), self._token):
                data, token = self.store.read_versioned(self.key)
                held = Lease.read(data) if data is not None else None
                if held is not None and held.id == self.holder["id"]:
                    self._token = token
                    return
            held, stamped = read_lease(self.store, self.key)
            self.lost = lost_line(self.run_id, held, stamped.modified if held else stamped.now)
            raise self.lost

    def check(self) -> None:
        """Before a write that publishes: renew now (a conditional write that succeeds proves the run is still
        ours, for one more TTL); raise LeaseLost if it was taken over. A store that does not answer raises its
        StoreError: nothing can be published there meanwhile anyway."""
        self._renew()

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl_s / RENEWALS_PER_TTL):
            try:
                self._renew()
            except LeaseLost:
                return  # recorded in self.lost: the Tune stopper ends the trials, the fenced writes raise it
            except (PipelineError, OSError):
                continue  # the store is away for a moment: try again at the next beat (see check())

    def release(self) -> None:
        """Stop renewing and give the lease up (a finished or failed run; a killed one simply stops renewing).
        A lease taken over by another process is left to it."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        with _held_lock:
            if _held.get(self.run_id) is self:
                del _held[self.run_id]
        if self.lost is not None:
            return
        data, token = self.store.read_versioned(self.key)
        held = Lease.read(data) if data is not None else None
        if held is not None and held.id == self.holder["id"]:
            self.store.delete(self.key)


def check_held(lease: RunLease | None) -> None:
    """Before the driver publishes (champion pointer, summary, run.json): a renewal now, which proves the run is
    still this process's and keeps it so for one more TTL by the store's clock (longer than those writes take);
    LeaseLost, the one line, if another process took it over. A run without a lease (tests, benchmarks) passes."""
    if lease is not None:
        lease.check()


def held_by_a_live_process(store: Store, key: str) -> bool:
    """Whether the lease at `key` exists and its holder may still run (holder_alive, by the store's clock)."""
    held, stamped = read_lease(store, key)
    return held is not None and holder_alive(held, stamped.age_s or 0.0)
