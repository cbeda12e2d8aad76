"""The one exception type of the package: a message for the user and its SQLSTATE.

`pl` turns it into a PostgreSQL ERROR with that SQLSTATE. Messages say what was wrong
and never contain key material or a whole token.
"""

# SQLSTATEs, named as in PostgreSQL's errcodes.txt.
NO_DATA = "02000"
DATATYPE_MISMATCH = "42804"
CHECK_VIOLATION = "23514"
INVALID_PARAMETER_VALUE = "22023"
PROGRAM_LIMIT_EXCEEDED = "54000"
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"
INSUFFICIENT_PRIVILEGE = "42501"
NULL_VALUE_NOT_ALLOWED = "22004"


class JwtError(Exception):
    """A refused key, token or setting: `sqlstate` and a message that names the problem."""

    def __init__(self, sqlstate, message):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
