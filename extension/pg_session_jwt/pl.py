"""The glue called from the extension's plpython3u functions; the only module using plpy.

Each SQL function body caches one function of this module in its SD and calls it with
`plpy` and its arguments. The getters receive `pg_session_jwt.jwt` as their argument
(read by an inlined SQL wrapper), so a cache hit — the common case, once per row — is a
string comparison and an expiry check (plus, for a transaction-scoped session, a read of
`transaction_stamp()`), with no SPI call. `request.jwt.claims` is read only when the
token setting is empty (`read_setting`, no SPI either); 0.2.0's getters still pass it.
A JwtError becomes an ERROR with its SQLSTATE: returned as [sqlstate, message]
to PL/pgSQL by init_check() and check() (a clean ERROR), raised with plpy.error() by the
getters (PL/Python then adds "plpy.Error: " and a traceback as CONTEXT).
"""

from time import time

from . import ffi
from .errors import NULL_VALUE_NOT_ALLOWED, OBJECT_NOT_IN_PREREQUISITE_STATE, JwtError
from .session import Backend
from .settings import BY_NAME, CONNECTION_START

state = Backend()

NULL_TOKEN = ("auth.jwt_session_init(): the token is NULL; pass the token text "
              "(to end a session, call auth.jwt_session_end())")
NULL_LOCAL = ('auth.jwt_session_init(): "local" is NULL; pass true for a '
              "transaction-scoped session or false for a session-scoped one")

PARALLEL_MODE = ("pg_session_jwt cannot read the connection's settings in parallel mode: call "
                 "auth.init() before a query that may run in parallel, and do not wrap its "
                 "functions in PARALLEL SAFE ones")

# What is read once per backend: the connection-start settings, and the session setting's
# own connection-start value (a raw token in the startup packet), which session_scope =
# transaction tells from a SET one.
CAPTURED = CONNECTION_START + (BY_NAME["jwt"],)


def capture(plpy):
    """Read the connection-start settings once per backend, never in parallel mode.

    Each is the setting's reset value: what RESET would restore, i.e. the value from
    postgresql.conf, ALTER ROLE/DATABASE ... SET or the startup packet, which no SET,
    set_config, SET LOCAL or function SET clause of the session changes. It is read from the
    server's memory, without SPI: nothing is planned, compiled or run in a subtransaction.

    Refused in parallel mode — also in the PARALLEL UNSAFE init() and jwt_session_init(),
    which run there when a PARALLEL SAFE function (an application's PL/pgSQL or SQL
    function) calls them: a parallel worker's settings are a copy of the leader's current
    ones, with no connection-start values of their own."""
    if state.settings is not None:
        return
    if in_parallel_mode():
        raise JwtError(OBJECT_NOT_IN_PREREQUISITE_STATE, PARALLEL_MODE)
    state.configure(connection_start_values(), plpy.log)


def connection_start_values():
    """{name: text or None} of the CAPTURED settings, as they were at connection start."""
    return {setting.name: reset_value(setting.full_name) for setting in CAPTURED}


def reset_value(name):
    """The value RESET would give setting `name`, or None when it does not exist.

    The server's GetConfigOptionResetString() raises an ERROR for a setting that does not
    exist (a placeholder nobody set), and an ERROR would jump out of the interpreter: so it
    is asked only after GetConfigOption(name, missing_ok => true, restrict_privileged =>
    false), which reports no error, has found the setting. Outside a server (unit tests):
    None."""
    global _reset_readers
    if _reset_readers is None:
        _reset_readers = _reset_reader_functions()
    current, reset = _reset_readers
    encoded = name.encode()
    if current(encoded, True, False) is None:
        return None
    value = reset(encoded)
    return None if value is None else value.decode("utf-8", "replace")


_reset_readers = None


def _reset_reader_functions():
    reset = _server().function("GetConfigOptionResetString", ffi.c_char_p, (ffi.c_char_p,))
    if reset is None:   # not inside a server: unit tests
        return (lambda name, missing_ok, restrict: None), None
    return _config_reader(), reset


def _server():
    """The running process: inside a backend, the server's own functions."""
    global _server_library
    if _server_library is None:
        _server_library = ffi.Library(None)
    return _server_library


_server_library = None


def in_parallel_mode():
    """PostgreSQL's IsInParallelMode(), called in the server process itself. Outside a
    server (unit tests) the symbol does not exist and the answer is False."""
    global _is_in_parallel_mode
    if _is_in_parallel_mode is None:
        function = _server().function("IsInParallelMode", ffi.c_bool)
        if function is None:
            return False
        _is_in_parallel_mode = function
    return _is_in_parallel_mode()


_is_in_parallel_mode = None


def transaction_stamp():
    """A number that stays the same for the whole of the current transaction and changes
    when it ends: what binds a transaction-scoped handle to its transaction. Outside a
    server (unit tests): 0.

    Read per row by the getters, so it must cost next to nothing: no call into the server
    (a C call costs about as much as the whole getter). Instead the backend registers,
    once, libc's clock_gettime() as a transaction callback (RegisterXactCallback): PostgreSQL
    calls callback(event, arg) at every transaction end, so clock_gettime(event, buffer)
    writes the time of clock number `event` (0-7, all valid Linux clocks; COMMIT writes
    CLOCK_REALTIME, ABORT the process CPU time, both in nanoseconds) into our buffer. The
    buffer therefore holds a new value after every COMMIT, ROLLBACK or PREPARE (also inside
    procedures; the clocks only move forward), and Python reads it as plain memory. No
    Python runs in the callback, and nothing but the buffer is written."""
    global _clock
    if _clock is None:
        _clock = _transaction_clock()
    seconds, nanoseconds = _clock
    return seconds.value * 1_000_000_000 + nanoseconds.value


_clock = None


class _Constant:
    value = 0


def _transaction_clock():
    """(seconds, nanoseconds) views of the buffer the transaction callback writes."""
    server = _server()
    register = server.function("RegisterXactCallback", None, (ffi.c_void_p, ffi.c_void_p))
    if register is None:   # not inside a server: unit tests
        return _Constant(), _Constant()
    timespec = (ffi.c_int64 * 2)()    # struct timespec on 64-bit Linux
    _keep_alive.append(timespec)  # PostgreSQL holds its address for the backend's life
    register(server.address("clock_gettime"), ffi.addressof(timespec))
    return (ffi.c_int64.from_buffer(timespec, 0), ffi.c_int64.from_buffer(timespec, 8))


_keep_alive = []


# PostgreSQL's TimestampTz counts microseconds from 2000-01-01 UTC.
POSTGRES_EPOCH = 946_684_800


def statement_start():
    """The Unix time at which the current client statement began (statement_timestamp()),
    or, when later, at which the current transaction began: a procedure that COMMITs inside
    one CALL starts new transactions within the same statement, and each of them counts as a
    new start (else one CALL could act as an expired user for as long as it loops). Read
    with the server's GetCurrentStatementStartTimestamp() and
    GetCurrentTransactionStartTimestamp(), which cannot fail; asked only once a session has
    expired, so these calls are no cost on the getters' path. Outside a server (unit
    tests): None (the statement counts as starting now)."""
    global _statement_clocks
    if _statement_clocks is None:
        clocks = [_server().function(name, ffi.c_int64) for name in (
            "GetCurrentStatementStartTimestamp", "GetCurrentTransactionStartTimestamp")]
        if None in clocks:
            return None
        _statement_clocks = clocks
    return max(clock() for clock in _statement_clocks) / 1_000_000 + POSTGRES_EPOCH


_statement_clocks = None


def _error(plpy, exc):
    plpy.error(exc.message, sqlstate=exc.sqlstate)


# The getters' request_claims when their SQL wrapper did not pass it (0.3.0's do not).
UNREAD = object()
REQUEST_CLAIMS = "request.jwt.claims"


def read_setting(name):
    """The current value of setting `name` (None when it does not exist), read with the
    server's GetConfigOption(name, missing_ok => true, restrict_privileged => false),
    which reports no error for those arguments: no SPI call and nothing that could jump
    out of the interpreter. Outside a server (unit tests): None."""
    global _get_config_option
    if _get_config_option is None:
        _get_config_option = _config_reader()
    value = _get_config_option(name.encode(), True, False)
    # The image's databases are UTF-8; a byte the codec refuses makes the JSON unreadable,
    # which counts as no claims, as bad JSON does.
    return None if value is None else value.decode("utf-8", "replace")


_get_config_option = None


def _config_reader():
    function = _server().function("GetConfigOption", ffi.c_char_p,
                                  (ffi.c_char_p, ffi.c_bool, ffi.c_bool))
    if function is None:   # not inside a server: unit tests
        return lambda name, missing_ok, restrict: None
    return function


def _lookup(plpy, jwt, request_claims):
    current = state.current
    if current is not None and jwt == current.key and (
            current.xact is None or current.xact == transaction_stamp()):
        session = current.session
        try:
            session.check_expiry(time(), statement_start)
        except JwtError as exc:
            state.refused(exc, session.token)
            raise
        return session
    if request_claims is UNREAD:
        # request.jwt.claims counts only where no key is configured: once the settings are
        # known to have one, no getter reads it (per row, for queries without a session).
        keyed = state.settings is not None and state.has_key_source()
        request_claims = None if keyed else read_setting(REQUEST_CLAIMS)
    if not jwt and not request_claims:
        return None
    capture(plpy)
    return state.lookup(jwt, request_claims, time(), transaction_stamp, plpy.log,
                        statement_start)


def _find(plpy, jwt, request_claims):
    """The getters' session (or None), with a refusal turned into an ERROR."""
    try:
        return _lookup(plpy, jwt, request_claims)
    except JwtError as exc:
        _error(plpy, exc)


def init_check(plpy):
    """auth._init() (0.2.0): capture the settings and parse the key; None, or
    [sqlstate, message] for auth.init() to raise from PL/pgSQL."""
    try:
        capture(plpy)
        state.keys()
    except JwtError as exc:
        return [exc.sqlstate, exc.message]
    return None


def check(plpy, jwt):
    """auth._check() (0.2.0, kept for databases not yet updated): None when `jwt` verifies
    (it is then the verified token), or [sqlstate, message] for auth.jwt_session_init() to
    raise from PL/pgSQL.

    Raising from PL/pgSQL gives a clean ERROR: raised from PL/Python, the message would
    read "plpy.Error: ..." and carry a Python traceback as its CONTEXT."""
    try:
        capture(plpy)
        state.verify(jwt, time(), plpy.log)
    except JwtError as exc:
        return [exc.sqlstate, exc.message]
    return None


def start(plpy, jwt, local):
    """auth._start() (0.3.0): verify `jwt` and return [NULL, handle] for
    auth.jwt_session_init() to store in pg_session_jwt.jwt, or [sqlstate, message] for it
    to raise. The handle, not the token, is what SQL can read afterwards. A NULL argument
    is refused here, so the PL/pgSQL caller needs no statement of its own for it."""
    if jwt is None:
        return [NULL_VALUE_NOT_ALLOWED, NULL_TOKEN]
    if local is None:
        return [NULL_VALUE_NOT_ALLOWED, NULL_LOCAL]
    try:
        capture(plpy)
        return [None, state.start(jwt, local, time(), transaction_stamp, plpy.log)]
    except JwtError as exc:
        return [exc.sqlstate, exc.message]


def init(plpy):
    """0.1.0's auth.init(), kept for databases not yet updated."""
    failure = init_check(plpy)
    if failure is not None:
        plpy.error(failure[1], sqlstate=failure[0])


def verify(plpy, jwt):
    """0.1.0's auth._verify(), kept for databases not yet updated: `jwt` or an ERROR."""
    failure = check(plpy, jwt)
    if failure is not None:
        plpy.error(failure[1], sqlstate=failure[0])
    return jwt


def session(plpy, jwt, request_claims=UNREAD):
    """auth.session() / auth.jwt(): the claims as JSON text, JSON null without a session."""
    found = _find(plpy, jwt, request_claims)
    return "null" if found is None else found.claims_json


def user_id(plpy, jwt, request_claims=UNREAD):
    """auth.user_id(): `sub`, NULL without a session; 42804 when a verified `sub` is not text."""
    found = _find(plpy, jwt, request_claims)
    if found is None:
        return None
    sub = found.sub
    if isinstance(sub, JwtError):
        _error(plpy, sub)
    return sub


def uid(plpy, jwt, request_claims=UNREAD):
    """auth.uid(): `sub` when it is a UUID, else NULL."""
    found = _find(plpy, jwt, request_claims)
    return None if found is None else found.uid


def organization(plpy, jwt, request_claims=UNREAD):
    """auth.organization(): the `o` claim when it is an object, else NULL."""
    found = _find(plpy, jwt, request_claims)
    return None if found is None else found.organization


def _text_getter(plpy, jwt, request_claims, attribute):
    found = _find(plpy, jwt, request_claims)
    if found is None:
        return None
    value = getattr(found, attribute)
    if isinstance(value, JwtError):
        _error(plpy, value)
    return value


def role(plpy, jwt, request_claims=UNREAD):
    """auth.role() (as Supabase's): the `role` claim, NULL without a session; 42804 when a
    verified `role` is not text."""
    return _text_getter(plpy, jwt, request_claims, "role")


def email(plpy, jwt, request_claims=UNREAD):
    """auth.email() (as Supabase's): the `email` claim, NULL without a session; 42804 when
    a verified `email` is not text."""
    return _text_getter(plpy, jwt, request_claims, "email")


def organization_id(plpy, jwt, request_claims=UNREAD):
    """auth.organization_id(): `o.id` when it is a UUID, else NULL."""
    found = _find(plpy, jwt, request_claims)
    return None if found is None else found.organization_id


def key_sets(plpy):
    """auth.key_sets(): one row per key source of this connection (issuer, source, kids in
    use, skipped keys with their reason, fetch and failure times). The cache files are read,
    nothing is fetched. Public data only, so every role may call it."""
    from .encoding import json_dumps

    try:
        capture(plpy)
        rows = state.key_sets(time())
    except JwtError as exc:
        _error(plpy, exc)
    return [{**row, "skipped": json_dumps([{"kid": kid, "reason": reason}
                                           for kid, reason in row["skipped"]]),
             **{name: _timestamp(row[name]) for name in ("fetched_at", "good_until",
                                                         "failed_at")}}
            for row in rows]


def _timestamp(seconds):
    """A Unix time as timestamptz input text (None stays NULL)."""
    if seconds is None:
        return None
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()
