"""Every Prefect internal the project relies on, in one module, checked when it is imported.

- The terminal's copy of an expected error is printed without its traceback: `PrefectConsoleHandler.emit` formats
  through the instance's `format` (patched here), then prints through the handler's rich Console.
- A deployment's Parameters tab shows, beside each parameter's value, the default of the parameter schema that a
  `RunnerDeployment` keeps in its private `_parameter_openapi_schema` (flows/deploy.py sets it to what runs get).
- A SIGTERM that is the runner's cancel of a flow run (the UI's Cancel) is told from any other SIGTERM by the intent
  the runner commits over its control channel first (`prefect._internal.control_listener.get_intent`), which is what
  Prefect's flow engine reads to end the run Cancelled rather than Crashed; flows/steps.py reads it to end a
  trials step Cancelled too.
- The live trials table (tasks/tune/progress.py) prints the handlers' lines above itself by swapping the `file` of
  a handler's rich `console`; it duck-types any handler that has one and never imports Prefect, so the fact that
  Prefect's console handler has one (an undocumented attribute) is checked here.

A Prefect whose handler no longer works so fails at import with one line naming the installed version.
"""

from __future__ import annotations

import io
import logging
from importlib import metadata


def _prefect_version() -> str:
    try:
        return metadata.version("prefect")
    except metadata.PackageNotFoundError:
        return "(not installed)"


class PrefectCompatError(ImportError):
    """The installed Prefect lacks an internal this project relies on."""


def _fail(what: str) -> PrefectCompatError:
    return PrefectCompatError(f"Prefect {_prefect_version()} is installed, and {what}: install the version "
                              f"pyproject.toml pins (flows/prefect_compat.py relies on it)")


try:
    import prefect.main  # noqa: F401  (configures Prefect's logging handlers on import)
    from prefect.logging.handlers import PrefectConsoleHandler
except ImportError as exc:
    raise _fail(f"importing its console handler failed ({exc})") from None


def _check_console_handler() -> None:
    """A PrefectConsoleHandler prints through a rich Console at `.console`, and formats through `self.format`."""
    from rich.console import Console

    stream = io.StringIO()
    try:
        handler = PrefectConsoleHandler(stream=stream)
    except Exception as exc:
        raise _fail(f"its PrefectConsoleHandler(stream=...) failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(getattr(handler, "console", None), Console):
        raise _fail("its PrefectConsoleHandler has no rich Console at `.console`")
    handler.format = lambda record: "fmnist-compat-probe"  # type: ignore[method-assign]
    handler.emit(logging.makeLogRecord({"msg": "unformatted", "levelno": logging.INFO, "levelname": "INFO"}))
    if "fmnist-compat-probe" not in stream.getvalue():
        raise _fail("its PrefectConsoleHandler.emit no longer formats through the handler's `format`")


_check_console_handler()


def _check_runner_deployment_schema() -> None:
    """RunnerDeployment keeps the flow's parameter schema in a private attribute with JSON-schema `properties`."""
    from prefect.deployments.runner import RunnerDeployment

    if "_parameter_openapi_schema" not in getattr(RunnerDeployment, "__private_attributes__", {}):
        raise _fail("its RunnerDeployment no longer keeps the parameter schema in `_parameter_openapi_schema`")


_check_runner_deployment_schema()


def _check_control_intent() -> None:
    """The flow engine reads the runner's committed intent ('cancel') from `control_listener.get_intent()`."""
    try:
        from prefect._internal import control_listener
    except ImportError as exc:
        raise _fail(f"importing prefect._internal.control_listener failed ({exc})") from None
    if not callable(getattr(control_listener, "get_intent", None)):
        raise _fail("its prefect._internal.control_listener has no get_intent() (the runner's cancel intent)")


_check_control_intent()


def cancel_intended() -> bool:
    """Whether this process's flow run is being cancelled by its runner (the SIGTERM it sent is a cancel)."""
    from prefect._internal.control_listener import get_intent

    return get_intent() == "cancel"


def set_parameter_default(deployment, parameter: str, value) -> None:
    """The default the deployment's parameter schema gives `parameter` (what the UI's Parameters tab shows as Default)."""
    deployment._parameter_openapi_schema.properties[parameter]["default"] = value


def quiet_expected_tracebacks(expected: tuple[type[BaseException], ...]) -> None:
    """Prefect's console logs a failed task or flow with its traceback; for an `expected` error the one-line message
    says it all. Only the terminal's copy is shortened: the record itself is left whole, so the Prefect UI's logs
    (another handler of the same record) keep the traceback."""

    def without_expected_traceback(format_record):
        def format(record: logging.LogRecord) -> str:
            if record.exc_info and isinstance(record.exc_info[1], expected):
                record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
            return format_record(record)
        return format

    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    handlers = {id(h): h for logger in loggers for h in getattr(logger, "handlers", [])
                if isinstance(h, PrefectConsoleHandler)}
    for handler in handlers.values():
        handler.format = without_expected_traceback(handler.format)  # type: ignore[method-assign]
