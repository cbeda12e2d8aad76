"""The one error type the tooling raises for problems a person must fix.

Its message names the problem and the fix; command-line entry points print it
on one line and exit 2 instead of showing a traceback.
"""


class UserError(Exception):
    """A problem with input or environment, with a message that says how to fix it."""
