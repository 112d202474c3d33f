"""The Ray cluster a run uses: join it (or start a local one) with a deadline, and check before anything is
claimed that every trial fits on one node and every node reaches the store. `preflight` runs them all, once.

Ray's own clients never give up on an address where nothing answers (the GCS client retries "Failed to connect
to GCS" forever and the process ignores Ctrl-C), and Tune waits forever for a trial no node can hold ("Ignore this
message if the cluster is autoscaling"): both are checked here first, each with a deadline and one line.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from tasks.config import PipelineConfig
from tasks.errors import ConfigError, PipelineError
from tasks.settings import current_settings, variable
from tasks.progress import Progress
# Quiet TensorFlow's start-up chatter in the workers. Never put secrets here: runtime_env
# env_vars show in the Ray dashboard and logs (ray-project/ray#28276).
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore::DeprecationWarning"}


def worker_env() -> dict[str, str]:
    """WORKER_ENV and the driver's KERAS_BACKEND, if set: the trials train on the backend the run was started with,
    on a cluster joined too (whose workers would otherwise get the environment its nodes were started with)."""
    backend = os.environ.get("KERAS_BACKEND")
    return {**WORKER_ENV, **({"KERAS_BACKEND": backend} if backend else {})}


# Ray's own clients never give up on an address where nothing answers (the GCS client retries "Failed to connect
# to GCS" forever and the process ignores Ctrl-C), so reachability is checked here first, with a deadline.
CONNECT_TIMEOUT_ENV = variable("ray_connect_timeout_s")
RAY_CLIENT_DEFAULT_PORT = 10001  # `ray start --head`'s --ray-client-server-port


class RayConnectError(PipelineError):
    """The Ray cluster to join does not answer (or none is recorded for `auto`)."""


@dataclass(frozen=True)
class RayEndpoint:
    """Where ray.init will connect: the GCS for a plain host:port, the Ray Client server for ray://."""
    host: str
    port: int
    server: str  # what should answer there, for the message
    shown: str  # the address as the user gave it (or as Ray recorded it)
    advice: str  # what to change when nothing answers


def _host_port(address: str, default_port: int | None) -> tuple[str, int] | None:
    """'host:port', '[v6]:port' or (with a default port) 'host'; None when it is none of these."""
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:  # no port at all, or the colon was inside an IPv6 literal
        host, port = address, str(default_port or "")
    host = host.strip("[]")
    return (host, int(port)) if host and port.isdigit() else None


def ray_endpoint(address: str | None) -> RayEndpoint | None:
    """The endpoint ray.init(address) would connect to; None when it would start a local Ray (or when the scheme is
    another client's, e.g. anyscale://, whose connection rules are its own)."""
    from tasks.tune.ray_compat import canonical_bootstrap_address, recorded_ray_address_file

    flag_advice = "check --ray-address / RAY_ADDRESS, or leave it empty for a local Ray"
    target = address or current_settings().ray_address
    if target and "://" in target:
        scheme, _, rest = target.partition("://")
        parsed = _host_port(rest.split("/")[0], RAY_CLIENT_DEFAULT_PORT) if scheme == "ray" else None
        if scheme != "ray":
            return None
        if parsed is None:
            raise RayConnectError(f"Ray address {target!r}: expected ray://host:port; {flag_advice}")
        return RayEndpoint(*parsed, "Ray Client server", target, flag_advice)
    if target is None or target == "auto":
        # Like ray.init: RAY_ADDRESS, else the address `ray start` recorded; with none, `auto` is an error and an
        # empty address starts a local Ray.
        recorded = recorded_ray_address_file()
        try:
            found = canonical_bootstrap_address(target)
        except ConnectionError:
            raise RayConnectError(f"--ray-address auto: no Ray cluster is recorded on this machine ({recorded}) and "
                                  f"none is running; start one with `ray start --head`, or give its address "
                                  f"(--ray-address / RAY_ADDRESS), or leave it empty for a local Ray") from None
        if found is None:
            return None
        parsed = _host_port(found, None)
        if parsed is None:
            raise RayConnectError(f"{recorded}: expected host:port, found {found!r}")
        return RayEndpoint(*parsed, "GCS", f"{found} (recorded in {recorded})",
                           f"start that cluster again, or remove {recorded} if it is gone, or give another "
                           f"address (--ray-address / RAY_ADDRESS)")
    parsed = _host_port(target, None)
    if parsed is None:
        raise RayConnectError(f"Ray address {target!r}: expected host:port (the head's GCS port, 6379 unless set) "
                              f"or ray://host:port; {flag_advice}")
    return RayEndpoint(*parsed, "GCS", target, flag_advice)


def _tcp_answers(host: str, port: int, timeout_s: float) -> OSError | None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc


def _speaks_ray(endpoint: RayEndpoint, timeout_s: float) -> tuple[str, bool] | None:
    """None when a Ray endpoint of the expected kind answers at `endpoint`; else what answered instead, in words,
    and whether the address is the thing to change (not when the cluster is right but wants a token).

    An open port is not yet a Ray cluster: ray.init against another server (an S3 port, a web server) retries
    "Failed to connect to GCS" for minutes, and a cluster with token auth fails only after 20 warnings and 42 s.
    One call of Ray's own protocol, with a deadline, tells them apart."""
    import grpc

    from tasks.tune.ray_compat import GCS_PROBE, RAY_CLIENT_PROBE, auth_metadata

    method, request = GCS_PROBE if endpoint.server == "GCS" else RAY_CLIENT_PROBE
    sent_token = auth_metadata()
    with grpc.insecure_channel(f"{endpoint.host}:{endpoint.port}") as channel:
        call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        try:
            call(request, timeout=timeout_s, metadata=sent_token or None)
            return None
        except grpc.RpcError as error:
            code, details = error.code(), (error.details() or "").strip()
    what, where = f"Ray {endpoint.server}".replace("Ray Ray", "Ray"), f"{endpoint.host}:{endpoint.port}"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if sent_token:
            return (f"the cluster refused this machine's Ray auth token ({details}): set RAY_AUTH_TOKEN to the "
                    f"cluster's token (`ray get-auth-token` on the head prints it)"), False
        return (f"the cluster requires an auth token and none is set here ({details}): set RAY_AUTH_MODE=token and "
                f"RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head prints it; "
                f"RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token also work)"), False
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"something accepts connections on {where} but does not answer as a {what} within {timeout_s:.0f} s", True
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"a gRPC server that is not a {what} answers on {where}", True
    return f"something that is not a {what} answers on {where} ({details.rpartition('last error: ')[2]})", True


def check_ray_reachable(address: str | None, timeout_s: float | None = None) -> None:
    """Fail within `timeout_s` (default $FMNIST_RAY_CONNECT_TIMEOUT_S, else 30 s) with one line when nothing answers
    where ray.init would connect, or when what answers is not Ray. Retried until the deadline: a head that is still
    starting answers a bit later."""
    endpoint = ray_endpoint(address)
    if endpoint is None:
        return
    timeout_s = timeout_s or current_settings().ray_connect_timeout_s
    deadline = time.monotonic() + timeout_s
    while (error := _tcp_answers(endpoint.host, endpoint.port, min(5.0, max(0.1, deadline - time.monotonic())))):
        if time.monotonic() >= deadline:
            reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or type(error).__name__)
            raise RayConnectError(
                f"cannot connect to the Ray cluster at {endpoint.shown} within {timeout_s:g} s: no {endpoint.server} "
                f"answers on {endpoint.host}:{endpoint.port} ({reason}); {endpoint.advice} "
                f"(a head still starting: raise {CONNECT_TIMEOUT_ENV})")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    answer = _speaks_ray(endpoint, max(1.0, deadline - time.monotonic()))
    if answer is not None:
        problem, wrong_address = answer
        raise RayConnectError(f"cannot use the Ray cluster at {endpoint.shown}: {problem}"
                              + (f"; {endpoint.advice}" if wrong_address else ""))


def connect_ray(address: str | None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS); else start a local Ray on this machine."""
    import ray

    if ray.is_initialized():
        return
    check_ray_reachable(address)
    target = address or current_settings().ray_address
    with sigterm_handler_kept():
        try:
            ray.init(address=target, runtime_env={"env_vars": worker_env()}, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise RayConnectError(f"Ray cluster at {target!r}: cannot connect ({exc}); check --ray-address / "
                                  "RAY_ADDRESS or leave it empty for a local Ray") from None


@contextmanager
def sigterm_handler_kept() -> Iterator[None]:
    """Keep whoever handled SIGTERM before `ray.init` (a Prefect flow run: its bridge that turns the runner's
    cancel into a Cancelled state). Ray's driver installs a handler that exits with SystemExit instead, which
    Prefect can only record as a crash."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_store_reaches_every_node(store_uri: str) -> None:
    """A folder store on a multi-node cluster: each trial would write to its own node's disk, where neither the
    report nor a resume finds it. Refuse before anything is trained (or claimed)."""
    nodes = alive_nodes()
    if not store_uri.startswith("s3://") and nodes > 1:
        raise ConfigError(f"store {store_uri} is a folder on this machine, but the Ray cluster has {nodes} nodes: "
                          "trials on the other nodes would write their models and checkpoints to their own disks. "
                          "Use an object store every node reaches: --store s3://bucket/prefix (see README, "
                          "'Scaling out on a Ray cluster')")


# A trial Ray can never place waits forever ("Ignore this message if the cluster is autoscaling"). A trial runs on
# ONE node, so the request is compared with each node, never with the cluster's sum.
PLACEMENT_TIMEOUT_ENV = variable("placement_timeout_s")
PLACEMENT_POLL_S = 2.0


class PlacementError(ConfigError):
    """No node of the Ray cluster (now, or within the autoscaling wait) is big enough for one trial."""


@dataclass(frozen=True)
class NodeShape:
    cpus: float
    gpus: float

    def fits(self, cpus: float, gpus: float) -> bool:
        return self.cpus >= cpus and self.gpus >= gpus


def node_shapes() -> list[NodeShape]:
    """The alive nodes' CPU and GPU totals (a head started with 0 CPUs has no 'CPU' key at all)."""
    import ray

    return [NodeShape(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
            for n in ray.nodes() if n.get("Alive")]


def unplaceable_reason(cpus: float, gpus: float, shapes: list[NodeShape]) -> str | None:
    """None when some node fits one trial; else the one line naming the field, the request and the largest node."""
    if any(shape.fits(cpus, gpus) for shape in shapes):
        return None
    most_cpus = max((s.cpus for s in shapes), default=0.0)
    most_gpus = max((s.gpus for s in shapes), default=0.0)
    if cpus > most_cpus:
        total = sum(s.cpus for s in shapes)
        in_all = f" ({total:g} in all, but a trial runs on one node)" if total >= cpus else ""
        return (f"config field 'cpus_per_trial': each trial asks for {cpus:g} CPUs, but the largest node of the "
                f"Ray cluster has {most_cpus:g}{in_all}; lower --cpus-per-trial or add a bigger node")
    if gpus > most_gpus:
        has = "no node of the Ray cluster has a GPU" if most_gpus == 0 else \
            f"the largest node of the Ray cluster has {most_gpus:g}"
        return (f"config field 'gpus_per_trial': each trial asks for {gpus:g} of a GPU, but {has}; "
                f"use --gpus-per-trial 0 to train on CPUs, or add a node with a GPU")
    most_cpus_with_gpu = max((s.cpus for s in shapes if s.gpus >= gpus), default=0.0)
    return (f"config fields 'cpus_per_trial' and 'gpus_per_trial': each trial asks for {cpus:g} CPUs and {gpus:g} "
            f"of a GPU on one node, but the nodes with that GPU share have at most {most_cpus_with_gpu:g} CPUs; "
            f"lower --cpus-per-trial or add a bigger GPU node")


def _autoscaler_node_types() -> list[NodeShape] | None:
    """The node types an autoscaler reported that it may still start; None when none was reported."""
    from tasks.tune.ray_compat import autoscaler_node_groups

    groups = autoscaler_node_groups()
    if groups is None:
        return None
    return [NodeShape(float(g.resources.get("CPU", 0)), float(g.resources.get("GPU", 0)))
            for g in groups if g.max_count == -1 or g.max_count > g.min_count]


def may_autoscale(cpus: float, gpus: float) -> bool:
    """Whether waiting could help: an autoscaler reported node types and one of them fits a trial; or none was
    reported (the v1 autoscaler of `ray up` reports none) and the cluster was joined, not started here."""
    node_types = _autoscaler_node_types()
    if node_types is not None:
        return any(t.fits(cpus, gpus) for t in node_types)
    from tasks.tune.ray_compat import ray_started_by_this_process

    return not ray_started_by_this_process()


def _wait_for_a_node_that_fits(cpus: float, gpus: float, timeout_s: float, progress: Progress) -> str | None:
    """Ask the autoscaler for one trial's shape (it only starts nodes for demand it sees, and Tune has submitted
    nothing yet) and poll the nodes until one fits or the deadline; the reason if none came."""
    from ray.autoscaler.sdk import request_resources

    bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    progress(f"no node of the Ray cluster fits one trial ({cpus:g} CPUs, {gpus:g} GPU) yet; waiting up to "
             f"{timeout_s:g} s ({PLACEMENT_TIMEOUT_ENV}) for the autoscaler to add one")
    deadline = time.monotonic() + timeout_s
    asked = _ask_autoscaler(request_resources, [bundle], progress)
    try:
        while (reason := unplaceable_reason(cpus, gpus, node_shapes())) and time.monotonic() < deadline:
            time.sleep(min(PLACEMENT_POLL_S, max(0.0, deadline - time.monotonic())))
        return reason
    finally:
        if asked:  # the request outlives this driver otherwise; Tune's trials ask from now on
            _ask_autoscaler(request_resources, [], progress)


def _ask_autoscaler(request_resources: Callable[..., None], bundles: list[dict], progress: Progress) -> bool:
    """request_resources, where this connection allows it (through Ray Client it may not): the wait goes on
    either way, as the cluster may still grow for other reasons."""
    try:
        request_resources(bundles=bundles)
        return True
    except Exception as exc:  # noqa: BLE001
        progress(f"could not ask the Ray autoscaler for {bundles} ({type(exc).__name__}: {exc})")
        return False


def check_trials_fit(config: PipelineConfig, progress: Progress = lambda _: None) -> None:
    """Refuse a per-trial request no node can hold: at once where no autoscaler can add one, else after waiting up
    to $FMNIST_PLACEMENT_TIMEOUT_S (default 600 s) for it."""
    cpus, gpus = float(config.cpus_per_trial), float(config.gpus_per_trial)
    reason = unplaceable_reason(cpus, gpus, node_shapes())
    if reason is None:
        return
    if not may_autoscale(cpus, gpus):
        raise PlacementError(reason)
    timeout_s = current_settings().placement_timeout_s
    reason = _wait_for_a_node_that_fits(cpus, gpus, timeout_s, progress)
    if reason is not None:
        raise PlacementError(f"{reason} (none joined within {timeout_s:g} s of asking the autoscaler; "
                             f"{PLACEMENT_TIMEOUT_ENV} sets the wait)")


def cluster_summary() -> dict[str, float] | None:
    """The Ray cluster this process uses, for run.json: CPUs, GPUs and alive nodes (None without Ray, or if Ray
    does not answer: the record is best effort, never a reason to fail a finished run)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        resources = ray.cluster_resources()
        return {"cpus": resources.get("CPU", 0), "gpus": resources.get("GPU", 0), "nodes": alive_nodes()}
    except Exception:  # noqa: BLE001
        return None


def preflight(config: PipelineConfig, progress: Progress = lambda _: None) -> None:
    """Everything about the cluster that can refuse a run, checked once before the run is claimed: Ray answers
    (within the connect timeout), every node reaches the store, and some node holds one trial."""
    connect_ray(config.ray_address)
    check_store_reaches_every_node(config.store)
    check_trials_fit(config, progress)
