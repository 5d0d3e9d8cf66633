"""The command-line front ends: one module per ``faceverify`` command, each parsing its options,
calling the library and printing (``faceverify.cli`` dispatches to their ``main``). ``run`` is how
a command ends: a ``FaceverifyError`` becomes the exit status of ``faceverify.errors`` and one
message, ``faceverify <command>: <message>`` on stderr (or, for a command whose output is JSON, an
``{"error": {"code", "message", "details"}}`` object on stdout)."""

from __future__ import annotations

import json
import sys
from typing import Callable

from ..errors import EXIT_OK, FaceverifyError, exit_status


def run(command: str, body: Callable[[], int | None], json_errors: bool = False) -> int:
    """``body()``'s exit status (None: EXIT_OK), or the status and message of the error it raised."""
    try:
        status = body()
    except FaceverifyError as exc:
        if json_errors:
            print(json.dumps({"error": error_dict(exc)}))
        else:
            print(f"faceverify {command}: {exc.message}", file=sys.stderr)
        return exit_status(exc)
    return EXIT_OK if status is None else int(status)


def error_dict(exc: FaceverifyError) -> dict:
    """A typed error as JSON output carries it: code, message and details (arrays as lists)."""
    details = json.loads(json.dumps(exc.details, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    return {"code": exc.code, "message": exc.message, "details": details}
