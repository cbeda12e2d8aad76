"""Per-backend state: the connection's settings, its parsed key, the verified session.

One `Backend` lives in `pl` for the life of the server process. Its settings are the
values in effect at connection start, captured once (see `pl.capture`); the key is
parsed once from them. The verified session is cached keyed by the exact token text:
a getter that sees any other token verifies it first, so a value SET by hand never
yields an identity without a valid signature. With `require_jti` on, only the latest
token is cached, which is what makes "jti strictly increasing" hold: an older token,
once replaced, must be verified again and fails the jti check. With it off, earlier
tokens stay in a bounded cache (cache.py) for pooled traffic that re-presents them.

Without pg_session_jwt.jwk at connection start, the key source is the postmaster's
PG_SESSION_JWT_JWKS_URL (jwks.py), when set: the URL is fixed for the server's life, the
key set behind it follows the shared cache file, so a rotation reaches existing
connections too.
"""

import json
import os
import re

from . import cache, jwks, keys, token
from . import claims as claim_checks
from .encoding import b64url_decode, json_loads
from .errors import CHECK_VIOLATION, DATATYPE_MISMATCH, INVALID_PARAMETER_VALUE, NO_DATA, JwtError

# What PostgreSQL's uuid input accepts, narrowed: 32 hex digits, hyphens optional
# between the usual groups, optionally in braces.
_UUID = re.compile(r"\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}\}?")
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
    return value if isinstance(value, str) and _UUID.fullmatch(value) else None


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
            self.organization = json.dumps(org)
            self.organization_id = _uuid(org.get("id"))
        else:
            self.organization = self.organization_id = None

    def check_expiry(self, now):
        if self.expires is not None and self.expires < now:
            raise JwtError(CHECK_VIOLATION, "Token used after it has expired")


class Backend:
    """Everything one server process remembers between calls."""

    def __init__(self, environ=None):
        self.settings = None
        self.current = None
        self.last_jti = 0
        self.cache = cache.VerifiedCache()
        self.environ = os.environ if environ is None else environ
        self.log = None
        self._keys = None
        self._jwks = None          # jwks.Config of the postmaster's environment
        self._source = None        # jwks.Source, made on first use
        self._current_keys = None  # the key set self.current was verified under
        self._request = (None, None)

    def configure(self, values, log=None):
        """Take the connection-start settings ({name: text}); only the first call counts."""
        if self.settings is None:
            settings = Settings.from_text(values)
            if not settings.jwk:
                self._jwks = jwks.Config.from_env(self.environ)
                if self._jwks is not None and not (values.get("require_jti") or "").strip():
                    # Identity providers' jti is a string or absent.
                    settings.require_jti = False
            self.settings = settings
            self.log = log

    def keys(self, now=None):
        """The key set to verify with: pg_session_jwt.jwk's, parsed on first use, else the
        JWKS URL's current one."""
        if self._keys is not None:
            return self._keys
        if self.settings.jwk:
            self._keys = keys.parse(self.settings.jwk)
            return self._keys
        if self._jwks is None:
            raise JwtError(NO_DATA, "Missing runtime parameter: pg_session_jwt.jwk (or set "
                           f"{jwks.URL_VARIABLE} in the server's environment)")
        if self._source is None:
            if not self.settings.audience and not jwks.flag(self.environ,
                                                            jwks.ANY_AUDIENCE_VARIABLE):
                # An identity provider signs tokens for its tenant's other applications too.
                raise JwtError(INVALID_PARAMETER_VALUE, f"{jwks.URL_VARIABLE} is set but no "
                               "audience is required: set PG_SESSION_JWT_AUDIENCE to this "
                               "database's audience, or PG_SESSION_JWT_ALLOW_ANY_AUDIENCE=on if "
                               "the issuer signs tokens for nothing else")
            self._source = jwks.Source(self._jwks, log=self.log)
        return self._source.current(now)

    def verify(self, jwt, now, audit=None):
        """The session of `jwt`, verified unless it is cached; `audit` gets a log line."""
        settings = self.settings
        keyset = self.keys(now)
        current = self.current
        if current is not None and jwt == current.token and self._current_keys is keyset:
            current.check_expiry(now)
            return current
        if not settings.require_jti:
            session = self.cache.get(jwt, keyset, now, settings.leeway)
            if session is not None:
                self.current, self._current_keys = session, keyset
                return session
        try:
            claims, text = token.verify(jwt, keyset, settings.max_token_bytes)
        except JwtError:
            # A kid the set lacks: the issuer may have rotated; refresh (rate-limited), retry.
            if self._source is None or not _unknown_kid(jwt, keyset) or \
                    not self._source.unknown_kid(now):
                raise
            keyset = self._source.keyset
            claims, text = token.verify(jwt, keyset, settings.max_token_bytes)
        jti = claim_checks.check(claims, settings, now, self.last_jti)
        session = Session(jwt, claims, text, claim_checks.expires(claims, settings.leeway), True)
        if jti is not None:
            self.last_jti = jti
        else:
            self.cache.put(jwt, session, keyset, claims.get("nbf"))
        self.current, self._current_keys = session, keyset
        if settings.audit_log and audit is not None:
            sub, aud = json.dumps(claims.get("sub")), json.dumps(claims.get("aud"))
            audit(f"pg_session_jwt: validated JWT for sub={sub} aud={aud}")
        return session

    def lookup(self, jwt, request_claims, now, audit=None):
        """The session the getters see: verified `jwt` with a key, else request.jwt.claims."""
        if self.settings.jwk or self._jwks is not None:
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


def _unknown_kid(jwt, keyset):
    """Whether `jwt`'s header names a kid that `keyset` lacks (False when unreadable)."""
    try:
        header = json_loads(b64url_decode(jwt.split(".", 1)[0].encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return False
    kid = header.get("kid") if isinstance(header, dict) else None
    return isinstance(kid, str) and kid not in keyset.by_kid
