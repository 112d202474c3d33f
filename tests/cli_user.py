"""The `fmnist` command run as a user runs it: the one way the tests start it in a subprocess.

- The command is a line as typed ("fmnist run --preset quick", ".venv/bin/fmnist deploy …", or another command of
  the venv a user types beside it, ".venv/bin/prefect worker start …") or a list of words (["fmnist", "runs",
  "--store", path]); it runs through /bin/sh (`exec`, so the process is the command itself) with the test's venv
  first on PATH, so `fmnist` is the installed script of the README's set-up.
- In `cwd`, by default a fresh empty folder (removed at exit).
- In its own session (process group), as a terminal starts a command: Ctrl-C is `os.killpg(p.pid, SIGINT)`, and
  on a timeout the whole group (the flow, its local Ray, Prefect's temporary server) is killed.
- With a user's environment (`user_env`): this test session's own settings are dropped: its Prefect server
  (PREFECT_API_*), its Ray (RAY_ADDRESS), the project's variables (FMNIST_*, FASHION_MNIST_DIR) and
  AWS_ENDPOINT_URL. The AWS key pair stays (the session's SeaweedFS server put it there). A test adds what its user
  would have set with `env={...}`; None removes a variable.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import atexit
from collections.abc import Mapping, Sequence
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
FMNIST = VENV_BIN / "fmnist"
DEFAULT_TIMEOUT_S = 600.0

# This session's settings that a user's shell does not have (a test passes the ones it means in `env`).
DROPPED_PREFIXES = ("PREFECT_API", "FMNIST_")
DROPPED = {"RAY_ADDRESS", "FASHION_MNIST_DIR", "AWS_ENDPOINT_URL"}


def user_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """A user's shell: the venv's commands first on PATH, unbuffered output, no Prefect analytics, none of this
    session's Prefect server, Ray or project settings; then `env` (a None value removes the variable)."""
    result = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_PREFIXES) and k not in DROPPED}
    result.update(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1",
                  PREFECT_SERVER_ANALYTICS_ENABLED="false")
    for name, value in (env or {}).items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def fresh_folder() -> Path:
    """An empty folder of its own, removed when the test session ends."""
    folder = Path(tempfile.mkdtemp(prefix="fmnist-user-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _line(command: str | Sequence[str]) -> str:
    return command if isinstance(command, str) else shlex.join(str(word) for word in command)


def start_fmnist(command: str | Sequence[str], cwd: Path | None = None, env: Mapping[str, str | None] | None = None,
                 merge_stderr: bool = False, **popen) -> subprocess.Popen:
    """Start `command` as a user types it (see the module's docstring) and return at once. Output is captured as
    text (stderr into stdout with `merge_stderr`); `popen` overrides Popen's arguments (a pseudo-terminal's stdin,
    stdout, stderr, preexec_fn)."""
    line = _line(command)
    started = time.monotonic()
    options = dict(cwd=cwd or fresh_folder(), env=user_env(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True, start_new_session=True)
    options.update(popen)
    process = subprocess.Popen(["/bin/sh", "-c", f"exec {line}"], **options)
    process.command_line, process.started = line, started
    return process


def finish(process: subprocess.Popen, timeout: float = DEFAULT_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Wait for a started command; past `timeout` s, kill its process group and fail saying what it printed.
    Returns a CompletedProcess (args: the command line) with `seconds`, the time from its start to its exit."""
    line = getattr(process, "command_line", process.args)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        stdout, stderr = process.communicate(timeout=30)
        raise AssertionError(f"`{line}` did not finish within {timeout:.0f} s; it printed:\n"
                             f"{(stdout or '')[-3000:]}\n{(stderr or '')[-3000:]}") from None
    finally:
        if process.poll() is None:
            stop_group(process)
    result = subprocess.CompletedProcess(line, process.returncode, stdout, stderr)
    result.seconds = time.monotonic() - getattr(process, "started", time.monotonic())
    return result


def run_fmnist(command: str | Sequence[str], cwd: Path | None = None, env: Mapping[str, str | None] | None = None,
               timeout: float = DEFAULT_TIMEOUT_S, merge_stderr: bool = False) -> subprocess.CompletedProcess:
    """Run `command` as a user types it and wait for it (see start_fmnist and finish)."""
    return finish(start_fmnist(command, cwd, env, merge_stderr=merge_stderr), timeout)


def stop_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the command's whole process group (no error if it has already gone)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def interrupt_and_wait(process: subprocess.Popen, grace_s: float = 60) -> None:
    """Ctrl-C to the command's process group, as a terminal sends it (a served deployment stops so); SIGKILL to the
    group if it has not ended within `grace_s`."""
    stop_group(process, signal.SIGINT)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        stop_group(process)
        process.wait(timeout=10)


def live_processes(session: int) -> list[str]:
    """Live processes (zombies aside) of a session, as "pid sid stat args": what a command started here (its own
    session: the session id is its pid) left running, its local Ray and Prefect's temporary server included."""
    listing = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in listing.splitlines()]
    return [" ".join(row) for row in rows if len(row) >= 3 and row[1] == str(session) and not row[2].startswith("Z")]


def ok(result: subprocess.CompletedProcess) -> str:
    """The command's stdout, once it is known to have exited 0 (else fail with its output)."""
    assert result.returncode == 0, (f"`{result.args}` exit {result.returncode}\n{(result.stdout or '')[-3000:]}\n"
                                    f"{(result.stderr or '')[-3000:]}")
    return result.stdout
