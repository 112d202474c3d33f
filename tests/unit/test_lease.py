"""One process per run: the lease on runs/<id>/, on a store (a folder here; tests/integration/test_lease_s3.py runs the
same on SeaweedFS). Two `fmnist run --run-id X` at once, and a run taken over mid-training: tests/cli/test_lease.py.

Staleness is judged by the store's clock (LastModified / mtime), never by a client's: the clock-skew, outage, reused
pid and PID-namespace cases below are the ones a holder's own `renewed_at` got wrong (issues 17 §3 and 21 X1)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tasks.config import PipelineConfig
from tasks.data.store import Store, open_store
from tasks.errors import LeaseLost
from tasks.keys import RunPaths
from tasks.processes import boot_id, pid_alive, pid_namespace, process_started
from tasks.runs.lease import Lease, RunInProgress, RunLease, holder_alive
from tasks.runs.run import claim_run
from tasks.settings import Settings

DEFAULT_TTL_S = Settings.model_fields["lease_ttl_s"].default
REPO = Path(__file__).resolve().parents[2]


def lease_of(store, run_id: str, host: str | None = None) -> RunLease:
    return RunLease(store, RunPaths(run_id).lease, run_id, host=host)


def reopened(store: Store) -> Store:
    """The same store, opened again under the test's settings (S3: one attempt per request, so a renewal during an
    outage fails in a second instead of spending botocore's backoff)."""
    return open_store(store.uri, getattr(store, "endpoint", None))


def holder_record(pid: int, started: int | None, **fields) -> bytes:
    """A lease.json written by a process of this host, boot and PID namespace."""
    return json.dumps({"host": socket.gethostname(), "pid": pid, "id": "x", "renewed_at": time.time(),
                       "started": started, "boot_id": boot_id(), "pid_ns": pid_namespace(), **fields}).encode()


def wait_until(condition, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {limit_s} s"
        time.sleep(0.05)


def test_a_live_holder_keeps_the_run_and_release_frees_it(store):
    first = lease_of(store, "r1").acquire()
    with pytest.raises(RunInProgress) as refused:
        lease_of(store, "r1").acquire()
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and "is in progress" in message and message.count("\n") == 0
    # how to take over a run whose holder is gone: when the lease lapses, or at once by deleting it
    assert f"fmnist run --resume r1 --store {store.uri}" in message
    assert f"delete {store.url_for(RunPaths('r1').lease)}" in message
    first.release()
    assert not store.exists(RunPaths("r1").lease)
    lease_of(store, "r1").acquire().release()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(store):
    gone = subprocess.Popen(["sleep", "30"])
    started = process_started(gone.pid)
    gone.kill()
    gone.wait(timeout=30)
    store.put_bytes(RunPaths("r2").lease, holder_record(gone.pid, started))
    taken = lease_of(store, "r2").acquire()
    assert json.loads(store.get_bytes(RunPaths("r2").lease))["pid"] == os.getpid()
    taken.release()


def test_a_reused_pid_is_not_the_holder(store):
    """A lease naming a live pid whose process started at another time (the pid was reused) is not alive; the
    same pid with its own start time is."""
    live = subprocess.Popen(["sleep", "60"])
    try:
        started = process_started(live.pid)
        assert started is not None and pid_alive(live.pid)
        store.put_bytes(RunPaths("r7").lease, holder_record(live.pid, started))
        with pytest.raises(RunInProgress, match=f"pid {live.pid} on {socket.gethostname()}"):
            lease_of(store, "r7").acquire()
        store.put_bytes(RunPaths("r7").lease, holder_record(live.pid, started - 1))  # another process, same pid
        lease_of(store, "r7").acquire().release()
    finally:
        live.kill()
        live.wait(timeout=30)


def test_an_old_lease_without_a_start_time_is_judged_by_its_expiry_alone(store, monkeypatch):
    """lease.json of an earlier version (host, pid, id, renewed_at): still read, and held until it lapses even if
    its pid is gone here (nothing tells that pid's process from a later one)."""
    monkeypatch.setenv("FMNIST_LEASE_TTL_S", "1.5")
    store.put_bytes(RunPaths("r8").lease, json.dumps({"host": socket.gethostname(), "pid": 2 ** 22 + 7, "id": "o",
                                                      "renewed_at": time.time()}).encode())
    with pytest.raises(RunInProgress):
        lease_of(store, "r8").acquire()
    time.sleep(2.6)  # past the TTL by the store's clock (S3's is to the second)
    lease_of(store, "r8").acquire().release()


def test_a_holder_on_another_host_counts_until_its_lease_lapses_by_the_stores_clock(store, monkeypatch):
    """The writer's renewed_at plays no part: 10,000 s in the past is fresh when the store wrote it just now, and
    a lease the store has not seen renewed for the TTL lapses whatever renewed_at says."""
    monkeypatch.setenv("FMNIST_LEASE_TTL_S", "1.5")
    store.put_bytes(RunPaths("r3").lease, json.dumps({"host": "another-node", "pid": 1, "id": "y",
                                                      "renewed_at": time.time() - 10_000}).encode())
    with pytest.raises(RunInProgress, match="on another-node"):
        lease_of(store, "r3").acquire()
    store.put_bytes(RunPaths("r3").lease, json.dumps({"host": "another-node", "pid": 1, "id": "y",
                                                      "renewed_at": time.time() + 10_000}).encode())
    time.sleep(2.6)
    lease_of(store, "r3").acquire().release()


def test_a_lease_past_its_expiry_is_never_alive_even_on_this_host():
    me = Lease(host=socket.gethostname(), pid=os.getpid(), id="z", renewed_at=time.time(),
               started=process_started(os.getpid()), boot_id=boot_id(), pid_ns=pid_namespace())
    assert holder_alive(me, age_s=1, ttl_s=10)
    assert not holder_alive(me, age_s=10, ttl_s=10)


def test_the_holder_renews_its_lease_while_it_runs(store, monkeypatch):
    monkeypatch.setenv("FMNIST_LEASE_TTL_S", "0.8")  # renewed four times per TTL: every 0.2 s
    held = lease_of(store, "r4").acquire()
    try:
        first = json.loads(store.get_bytes(RunPaths("r4").lease))["renewed_at"]
        wait_until(lambda: json.loads(store.get_bytes(RunPaths("r4").lease))["renewed_at"] != first, 10,
                   "the lease was renewed")
    finally:
        held.release()


def test_a_claimant_whose_clock_is_150_s_ahead_does_not_take_a_live_holders_lease(store, monkeypatch):
    """Issue 17 §3's reproduction: holder A (on "host-a") renewing every 0.5 s, claimant B here with time.time()
    150 s ahead. B is refused; A keeps the run and never finds it lost. (B's clock is faked in this process: the
    store's clock, which decides, is the kernel's file times or SeaweedFS's, which the fake does not reach.)"""
    monkeypatch.setenv("FMNIST_LEASE_TTL_S", "2")
    a = lease_of(store, "r9", host="host-a").acquire()
    try:
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + 150)
        for _ in range(3):  # across a few of A's renewals
            with pytest.raises(RunInProgress, match="on host-a"):
                lease_of(store, "r9").acquire()
            time.sleep(0.6)
        monkeypatch.setattr(time, "time", real_time)
        assert a.lost is None
        a.check()  # still A's
        assert json.loads(store.get_bytes(RunPaths("r9").lease))["id"] == a.holder["id"]
    finally:
        a.release()


@pytest.fixture
def outage(backend, store, request):
    """A context manager: the store does not answer inside it. A folder: replaced by a plain file, so every path
    in it fails (ENOTDIR), as a mount that went away does. S3: the session's SeaweedFS stopped, then started again
    (same data, same port)."""

    @contextmanager
    def away() -> Iterator[None]:
        if backend == "s3":
            server = request.getfixturevalue("s3_server")
            server.stop()
            try:
                yield
            finally:
                server.start()
            return
        root: Path = store.root
        aside = root.with_name(root.name + ".away")
        root.rename(aside)
        root.write_text("the store is away")
        try:
            yield
        finally:
            root.unlink()
            aside.rename(root)

    return away


def test_after_an_outage_longer_than_the_ttl_an_unclaimed_holder_still_holds_its_run(store, outage, monkeypatch):
    """Nobody could take the lease while the store was away, and its version is still the holder's: the holder's
    first conditional write after the outage succeeds, which proves no one took it meanwhile, so it goes on (it
    wrote nothing during the outage: nothing could be written)."""
    monkeypatch.setenv("FMNIST_LEASE_TTL_S", "2")
    monkeypatch.setenv("FMNIST_S3_MAX_ATTEMPTS", "1")
    store = reopened(store)
    a = lease_of(store, "r10", host="host-a").acquire()
    try:
        with outage():
            time.sleep(3)  # past the TTL; A's renewals fail meanwhile
        a.check()
        assert a.lost is None
        with pytest.raises(RunInProgress, match="on host-a"):
            lease_of(store, "r10").acquire()
    finally:
        a.release()


def test_a_holder_taken_over_after_an_outage_finds_it_lost_and_its_fenced_writes_refuse(store, outage, monkeypatch):
    """The holder is paused (its renewals held) through an outage longer than the TTL; the store comes back and a
    claimant finds the lease lapsed by the store's clock and takes it. The old holder's next renewal records the
    loss (who, when); its check before a write and a trial's fence raise the one line, and nothing it tried to
    publish after the loss reaches the store."""
    monkeypatch.setenv("FMNIST_LEASE_TTL_S", "2")
    monkeypatch.setenv("FMNIST_S3_MAX_ATTEMPTS", "1")
    store = reopened(store)
    a = lease_of(store, "r11", host="host-a").acquire()
    fence = a.fence()
    fence.check(store)
    with a._renewing:  # A is paused: no renewal, no check (a stopped machine)
        with outage():
            time.sleep(2.5)
        b = lease_of(store, "r11").acquire()  # lapsed by the store's clock: B takes the run
    try:
        wait_until(lambda: a.lost is not None, 5, "A found its lease lost")
        line = str(a.lost)
        assert line.startswith(f"run r11 was taken over by pid {os.getpid()} on {socket.gethostname()} at ")
        assert line.endswith("; nothing more was written by this process")

        def publish(key: str) -> None:  # what the run does before each write that publishes
            a.check()
            store.put_bytes(key, b"written after the loss")

        with pytest.raises(LeaseLost, match="was taken over by pid"):
            publish("runs/r11/run.json")
        with pytest.raises(LeaseLost, match="was taken over by pid"):
            fence.check(store)
        assert not store.exists("runs/r11/run.json")
        a.release()  # leaves B's lease alone
        assert json.loads(store.get_bytes(RunPaths("r11").lease))["id"] == b.holder["id"]
    finally:
        b.release()


TAKE_AND_WAIT = """
import os, sys, time
from tasks.data.store import open_store
from tasks.runs.lease import RunLease
lease = RunLease(open_store(sys.argv[1], sys.argv[2] or None), sys.argv[3], sys.argv[4]).acquire()
print("held as pid", os.getpid(), flush=True)
time.sleep(120)
"""

TAKE_AND_RELEASE = """
import os, sys
from tasks.data.store import open_store
from tasks.runs.lease import RunLease
RunLease(open_store(sys.argv[1], sys.argv[2] or None), sys.argv[3], sys.argv[4]).acquire().release()
print("taken over as pid", os.getpid(), flush=True)
"""


def in_new_pid_namespace(script: str, store: Store, run_id: str) -> list[str]:
    """`unshare --pid --fork --mount-proc python -c script …`: the script runs as pid 1 of a PID namespace of its
    own, as a container's entrypoint does."""
    return ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script, store.uri,
            getattr(store, "endpoint", None) or "", RunPaths(run_id).lease, run_id]


def test_a_holder_that_was_pid_1_of_a_namespace_and_was_killed_is_taken_over_after_expiry(store, monkeypatch):
    """Issue 21 X1: `unshare --pid --fork --mount-proc` runs a process that takes the lease as pid 1, and it is
    SIGKILLed. Its pid names another process here (and pid 1 is alive in any new namespace), so the lease is
    judged by its expiry: refused before it (by the store's clock), taken over after it, from the host and from
    a fresh namespace alike."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: no PID namespace to make")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"unshare cannot make a PID namespace here (not root, or no CAP_SYS_ADMIN): {probe.stderr.strip()}")
    monkeypatch.setenv("FMNIST_LEASE_TTL_S", "3")
    holder = subprocess.Popen(in_new_pid_namespace(TAKE_AND_WAIT, store, "r12"), cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 60)
        assert ready, "the holder in its namespace did not take the lease within 60 s"
        assert holder.stdout.readline().strip() == "held as pid 1"
        inner = [int(pid) for pid in Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()]
        assert len(inner) == 1
        os.kill(inner[0], signal.SIGKILL)  # pid 1 of the namespace: the namespace ends with it
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
    lease = json.loads(store.get_bytes(RunPaths("r12").lease))
    assert lease["pid"] == 1 and lease["pid_ns"] != pid_namespace() and lease["host"] == socket.gethostname()
    with pytest.raises(RunInProgress, match="held by pid 1 on"):
        lease_of(store, "r12").acquire()  # within its TTL: it might still run elsewhere
    time.sleep(4)
    taker = subprocess.run(in_new_pid_namespace(TAKE_AND_RELEASE, store, "r12"), cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert taker.returncode == 0, taker.stderr[-2000:]
    assert taker.stdout.strip() == "taken over as pid 1"  # pid 1 again, in a new namespace: not mistaken for it
    assert not store.exists(RunPaths("r12").lease)


def test_a_second_claim_of_a_run_in_progress_writes_nothing(store):
    config = PipelineConfig(preset="quick", store=store.uri, run_id="r5", architectures=["baseline"])
    if store.uri.startswith("s3://"):
        config = config.model_copy(update={"s3_endpoint": store.endpoint})
    run = claim_run(config, store)
    before = {key: store.get_bytes(key) for key in store.list_keys("runs/r5/") if not key.endswith("lease.json")}
    with pytest.raises(RunInProgress):
        claim_run(config, store)
    after = {key: store.get_bytes(key) for key in store.list_keys("runs/r5/") if not key.endswith("lease.json")}
    assert after == before
    run.release()
    assert claim_run(config, store).resumed  # once released, the same id resumes
