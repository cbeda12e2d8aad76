"""Refusals you can see: a stable reason code per refusal, and the LOG line
`pg_session_jwt.log_refusals` writes for it.

The reason codes are short identifiers an operator can grep and alert on; unlike the
messages (which say what to do and may gain detail) they do not change. They are derived
here, in one table, from the refusal's SQLSTATE and its message (or the exception class),
so that the modules raising refusals stay as they are; a unit test runs every kind of
refused token through `reason()` and fails on a message this table no longer recognises.

The log line names what helps find the cause and nothing that would let a reader of the
log use the token: the `kid` and `iss` as the token states them (parsed from its header
and payload for the log only, never trusted for anything), `sub` only when the signature
had verified (the raiser says so, setting `exc.signed`; nothing is inferred from the message),
never the token or any of its base64url parts.
"""

from .encoding import b64url_decode, json_dumps, json_loads
from .errors import (
    CHECK_VIOLATION,
    DATATYPE_MISMATCH,
    INSUFFICIENT_PRIVILEGE,
    INVALID_PARAMETER_VALUE,
    NO_DATA,
    NULL_VALUE_NOT_ALLOWED,
    PROGRAM_LIMIT_EXCEEDED,
)

# (SQLSTATE, a phrase of the message, reason), first match wins. The README lists the
# codes beside the SQLSTATEs.
REASONS = (
    (PROGRAM_LIMIT_EXCEEDED, "max_token_bytes", "too_long"),
    (DATATYPE_MISMATCH, "(JWE)", "encrypted"),
    (DATATYPE_MISMATCH, "invalid JWT encoding", "malformed"),
    (DATATYPE_MISMATCH, "could not parse JWT component", "malformed"),
    (DATATYPE_MISMATCH, "invalid JWT header", "bad_header"),
    (DATATYPE_MISMATCH, "pg_session_jwt.jwk is unusable", "bad_key"),
    (DATATYPE_MISMATCH, "'jti'", "bad_jti"),
    (DATATYPE_MISMATCH, "must be an integer", "bad_claim"),
    (DATATYPE_MISMATCH, "", "bad_claim"),
    (CHECK_VIOLATION, "'kid'", "unknown_kid"),
    (CHECK_VIOLATION, "does not match the key", "wrong_alg"),
    (CHECK_VIOLATION, "invalid JWT signature", "bad_signature"),
    (CHECK_VIOLATION, "strictly monotonically increasing", "replayed_jti"),
    (CHECK_VIOLATION, "before it is ready", "not_yet_valid"),
    (CHECK_VIOLATION, "after it has expired", "expired"),
    (CHECK_VIOLATION, "issuer ('iss')", "wrong_issuer"),
    (CHECK_VIOLATION, "JWT audience (", "wrong_audience"),
    (CHECK_VIOLATION, "handle of another transaction", "stale_handle"),
    (CHECK_VIOLATION, "handle this connection does not know", "unknown_handle"),
    (INSUFFICIENT_PRIVILEGE, "raw token set in", "raw_token_set"),
    (INSUFFICIENT_PRIVILEGE, "session-scoped sessions are refused", "session_scope"),
    (NO_DATA, "", "no_key"),
    (INVALID_PARAMETER_VALUE, "", "bad_setting"),
    (NULL_VALUE_NOT_ALLOWED, "", "null_token"),
)
OTHER = "refused"


# Longer kid/iss/sub values are cut: a log line stays a line, whatever the token says.
MAX_SHOWN = 64


def reason(exc):
    """The reason code of JwtError `exc`, from its message as first raised: a raiser that
    extends the message with text taken from the token (a kid, an issuer) keeps the first
    one in `exc.reason_message`, so that the token cannot pick its own reason code."""
    message = getattr(exc, "reason_message", exc.message)
    for sqlstate, phrase, code in REASONS:
        if exc.sqlstate == sqlstate and phrase in message:
            return code
    return OTHER


def _part(parts, index):
    """Part `index` of a split token as a JSON object, or None when it is not one."""
    try:
        value = json_loads(b64url_decode(parts[index]))
    except (ValueError, IndexError):
        return None
    return value if isinstance(value, dict) else None


def _shown(value):
    if not isinstance(value, str):
        return None
    if len(value) > MAX_SHOWN:
        value = value[:MAX_SHOWN] + "..."
    return json_dumps(value)   # quoted, control characters and non-ASCII escaped


def line(exc, token=None, max_bytes=None):
    """The LOG line for refusal `exc` of `token` (None: no token at hand, e.g. a handle).
    A token longer than `max_bytes` is not parsed at all."""
    code = reason(exc)
    fields = [f"pg_session_jwt: refused JWT: reason={code} sqlstate={exc.sqlstate}"]
    if isinstance(token, str) and (max_bytes is None or len(token) <= max_bytes):
        parts = token.split(".")
        header = _part(parts, 0) if len(parts) == 3 else None
        if header is not None:
            payload = _part(parts, 1) or {}
            for name, value in (("kid", header.get("kid")), ("iss", payload.get("iss"))):
                shown = _shown(value)
                if shown is not None:
                    fields.append(f"{name}={shown}")
            shown = _shown(payload.get("sub"))
            if getattr(exc, "signed", False) and shown is not None:
                fields.append(f"sub={shown}")
    return " ".join(fields)
