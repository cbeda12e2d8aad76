"""The one error type for problems a person must fix, and the one way a command reports it.

A UserError's message names the problem and the fix. Every command-line entry point (build,
dev stack, token tool, issuer, benchmarks, the entrypoint's configuration check, the
renderer) catches it and calls `failed()`: one line `error: ...` on standard error and exit
status 2, never a traceback.
"""

import sys

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with input or environment, with a message that says how to fix it."""


def failed(exc):
    """Print `exc` as the one-line error a person reads; the exit status to return."""
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR
