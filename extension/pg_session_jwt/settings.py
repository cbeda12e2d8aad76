"""Every `pg_session_jwt.*` setting, declared once: name, type, default, when it is read.

The table below is the one description of the extension's settings (as
neondatabase/pg_session_jwt's gucs.rs is for the original). `session.Settings` takes its
defaults from it, `pl.capture` reads exactly its connection-start rows (and the session
setting's connection-start value), and the image's configuration checks and the
README's settings table are meant to be read from or tested against it.

"Read at connection start" means the value in effect when the server connection started
(postgresql.conf, ALTER ROLE/DATABASE ... SET, the startup packet): a session's own SET,
set_config, SET LOCAL, RESET or a function's SET clause cannot change what the extension
uses. The one setting read at every call is `pg_session_jwt.jwt`, the session itself.

Plain Python with no imports beyond the standard library, so that tools outside the
server (the entrypoint's checks, docs, tests) can import it.
"""

PREFIX = "pg_session_jwt."


class Setting:
    """One `pg_session_jwt.<name>` setting. A plain class, not a dataclass: `dataclasses`
    imports `inspect`, `re` and `enum`, about 9 ms of every new backend's first call."""

    __slots__ = ("name", "type", "default", "connection_start", "description", "choices", "unit")

    def __init__(self, name, type, default, connection_start, description, choices=(), unit=None):
        self.name = name                          # without the prefix
        self.type = type                          # "text", "bool" or "int"
        self.default = default                    # the value when unset ("" for text: none)
        self.connection_start = connection_start  # read once, as it was at connection start
        self.description = description            # one line, for docs and error messages
        self.choices = choices                    # for text settings that take one of a few words
        self.unit = unit                          # of an int setting, for messages

    def __repr__(self):
        return f"Setting({self.name!r})"

    @property
    def full_name(self):
        return PREFIX + self.name


SETTINGS = (
    Setting("jwk", "text", "", True,
            "the issuer's public JWK, or a JWKS {\"keys\": [...]} (the token's kid picks the key)"),
    Setting("audience", "text", "", True, "when set, tokens must carry this aud"),
    Setting("issuer", "text", "", True, "when set, tokens must carry this iss"),
    Setting("leeway", "int", 60, True, "seconds of clock skew allowed for exp and nbf",
            unit="seconds"),
    Setting("require_jti", "bool", True, True,
            "tokens need an integer jti, strictly increasing per server connection"),
    Setting("audit_log", "bool", False, True,
            "one LOG line per verified token with sub and aud (never the token)"),
    Setting("log_refusals", "bool", False, True,
            "one LOG line per refused token with a reason code, kid and iss (never the token)"),
    Setting("max_token_bytes", "int", 16384, True, "longer tokens are refused before parsing",
            unit="bytes"),
    Setting("trust_request_claims", "bool", False, True,
            "without a key, take the identity from request.jwt.claims (PostgREST gateway mode)"),
    Setting("session_scope", "text", "session", True,
            "transaction: refuse session-scoped jwt_session_init (roles behind transaction poolers)",
            choices=("session", "transaction")),
    Setting("jwt", "text", "", False,
            "the session: a handle jwt_session_init() leaves, or a raw token a gateway sets"),
)

BY_NAME = {setting.name: setting for setting in SETTINGS}
# The spellings of a boolean that PostgreSQL accepts, for these settings and for the
# PG_SESSION_JWT_* switches of the server's environment.
BOOLEANS = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False,
            "1": True, "0": False, "t": True, "f": False, "y": True, "n": False}
CONNECTION_START = tuple(s for s in SETTINGS if s.connection_start)
