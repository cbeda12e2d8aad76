"""Per-backend state: the connection's settings, its parsed key, the verified session.

One `Backend` lives in `pl` for the life of the server process. Its settings are the
values in effect at connection start, captured once (see `pl.capture`); the key is
parsed once from them. The verified session is cached keyed by the exact token text:
a getter that sees any other token verifies it first, so a value SET by hand never
yields an identity without a valid signature. Only the latest token is cached, which
is what makes "jti strictly increasing" hold: an older token, once replaced, must be
verified again and fails the jti check.
"""

from . import claims as claim_checks
from . import keys, token
from .encoding import json_dumps, json_loads
from .errors import CHECK_VIOLATION, DATATYPE_MISMATCH, INVALID_PARAMETER_VALUE, NO_DATA, JwtError

# What PostgreSQL's uuid input accepts, narrowed: 32 hex digits, hyphens optional
# between the usual groups, optionally in braces. Checked without `re`, whose import
# (with `enum`) is a large share of a new backend's cost.
_UUID_GROUPS = (8, 4, 4, 4, 12)
_HEX = frozenset("0123456789abcdefABCDEF")
_BOOLEANS = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False,
             "1": True, "0": False, "t": True, "f": False, "y": True, "n": False}


class Settings:
    """The `pg_session_jwt.*` values in effect at connection start."""

    __slots__ = ("jwk", "audience", "issuer", "leeway", "require_jti", "audit_log",
                 "max_token_bytes")

    def __init__(self, jwk="", audience="", issuer="", leeway=60, require_jti=True,
                 audit_log=False, max_token_bytes=16384):
        self.jwk = jwk
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.require_jti = require_jti
        self.audit_log = audit_log
        self.max_token_bytes = max_token_bytes

    @classmethod
    def from_text(cls, values):
        """Settings from {name: text or None} as current_setting() returns them."""
        def text(name):
            return (values.get(name) or "").strip()

        return cls(jwk=text("jwk"), audience=text("audience"), issuer=text("issuer"),
                   leeway=_integer("leeway", text("leeway"), 60),
                   require_jti=_boolean("require_jti", text("require_jti"), True),
                   audit_log=_boolean("audit_log", text("audit_log"), False),
                   max_token_bytes=_integer("max_token_bytes", text("max_token_bytes"), 16384))


def _integer(name, text, default):
    if not text:
        return default
    if not text.isascii() or not text.isdigit():
        raise JwtError(INVALID_PARAMETER_VALUE, f"pg_session_jwt.{name} must be a whole number "
                       f"of {'seconds' if name == 'leeway' else 'bytes'}, e.g. {default}")
    return int(text)


def _boolean(name, text, default):
    if not text:
        return default
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise JwtError(INVALID_PARAMETER_VALUE, f"pg_session_jwt.{name} must be on or off") from None


def _uuid(value):
    if not isinstance(value, str) or not 32 <= len(value) <= 38:
        return None
    text = value[value.startswith("{"):]
    text = text[:len(text) - text.endswith("}")]
    for size in _UUID_GROUPS:
        group, text = text[:size], text[size:]
        if len(group) != size or not _HEX.issuperset(group):
            return None
        if text.startswith("-") and size != 12:
            text = text[1:]
    return value if not text else None


class Session:
    """The claims of one session and what each getter returns for them."""

    __slots__ = ("token", "claims_json", "sub", "uid", "organization", "organization_id",
                 "expires")

    def __init__(self, token_text, claims, claims_json, expires, verified):
        self.token = token_text
        self.claims_json = claims_json
        self.expires = expires
        claims = claims if isinstance(claims, dict) else {}
        sub = claims.get("sub")
        if not isinstance(sub, str):
            if verified and sub is not None:
                # Raised by user_id() only, as the original does.
                sub = JwtError(DATATYPE_MISMATCH, "invalid subject claim in the JWT")
            else:
                sub = None
        self.sub = sub
        self.uid = _uuid(sub)
        org = claims.get("o")
        if isinstance(org, dict):
            self.organization = json_dumps(org)
            self.organization_id = _uuid(org.get("id"))
        else:
            self.organization = self.organization_id = None

    def check_expiry(self, now):
        if self.expires is not None and self.expires < now:
            raise JwtError(CHECK_VIOLATION, "Token used after it has expired")


class Backend:
    """Everything one server process remembers between calls."""

    def __init__(self):
        self.settings = None
        self.current = None
        self.last_jti = 0
        self._keys = None
        self._request = (None, None)

    def configure(self, values):
        """Take the connection-start settings ({name: text}); only the first call counts."""
        if self.settings is None:
            self.settings = Settings.from_text(values)

    def keys(self):
        """The parsed key set of pg_session_jwt.jwk, parsed on first use."""
        if self._keys is None:
            if not self.settings.jwk:
                raise JwtError(NO_DATA, "Missing runtime parameter: pg_session_jwt.jwk")
            self._keys = keys.parse(self.settings.jwk)
        return self._keys

    def verify(self, jwt, now, audit=None):
        """The session of `jwt`, verified unless it is the cached one; `audit` gets a log line."""
        current = self.current
        if current is not None and jwt == current.token:
            current.check_expiry(now)
            return current
        settings = self.settings
        claims, text = token.verify(jwt, self.keys(), settings.max_token_bytes)
        jti = claim_checks.check(claims, settings, now, self.last_jti)
        session = Session(jwt, claims, text, claim_checks.expires(claims, settings.leeway), True)
        if jti is not None:
            self.last_jti = jti
        self.current = session
        if settings.audit_log and audit is not None:
            sub, aud = json_dumps(claims.get("sub")), json_dumps(claims.get("aud"))
            audit(f"pg_session_jwt: validated JWT for sub={sub} aud={aud}")
        return session

    def lookup(self, jwt, request_claims, now, audit=None):
        """The session the getters see: verified `jwt` with a key, else request.jwt.claims."""
        if self.settings.jwk:
            return self.verify(jwt, now, audit) if jwt else None
        return self._from_request(request_claims)

    def _from_request(self, text):
        # PostgREST's request.jwt.claims, trusted as is: whoever can set it is the issuer.
        if not text:
            return None
        cached_text, session = self._request
        if text == cached_text:
            return session
        try:
            claims = json_loads(text)
        except ValueError:
            claims = None
        session = None if claims is None else Session(None, claims, text, None, False)
        self._request = (text, session)
        return session
