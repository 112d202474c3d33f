"""The `fmnist` command: parse, dispatch, and turn an expected error into one line and exit status 2.

- options: the parser (every config option is a field of PipelineConfig)
- read: `predict`, `runs`, `champion`, which only read the store (no Prefect, no Ray)
- launch: `prepare`, `run`, `search`, `deploy`: the checks before Prefect, then the flow
- interrupts: Ctrl-C in a run
"""

from __future__ import annotations

import sys
import traceback
from typing import Sequence

from flows.cli.options import parser
from tasks.errors import PipelineError


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command in ("predict", "runs", "champion"):
            from flows.cli.read import COMMANDS

            COMMANDS[args.command](args)
            return 0
        from flows.cli.launch import launch

        return launch(args)
    except PipelineError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fmnist {args.command}: error: {exc}", file=sys.stderr)
        _quiet_prefect_from_now_on()
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a run began (checks, imports, Prefect's start), or in another command
        from flows.cli.interrupts import EXIT_INTERRUPTED, stop_descendants

        stop_descendants(grace_s=3)
        print(f"fmnist {args.command}: interrupted" + (" before the run began; nothing to resume"
                                                       if args.command in ("run", "search") else ""),
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _quiet_prefect_from_now_on() -> None:
    """Keep the error the command's last line: Prefect's temporary server says "Stopping temporary server on …" at
    exit (an atexit hook), after it. Its info lines are dropped from here on; its warnings and errors still show."""
    import logging

    logging.getLogger("prefect").addFilter(lambda record: record.levelno >= logging.WARNING)
