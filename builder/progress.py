"""Progress lines a person can follow: what is happening, for which major, and since when."""

import sys
import time

_START = time.monotonic()


def say(scope, message):
    """Print `[  12.3s] scope: message` to standard error."""
    print(f"[{time.monotonic() - _START:7.1f}s] {scope}: {message}", file=sys.stderr, flush=True)
