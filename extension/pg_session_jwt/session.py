"""Per-backend state: the connection's settings, its parsed key, the verified sessions.

One `Backend` lives in `pl` for the life of the server process. Its settings are the
values in effect at connection start, captured once (see `pl.capture`); the key is
parsed once from them.

What `pg_session_jwt.jwt` holds after `jwt_session_init` is a *handle*: a random name
that only this backend's memory maps to the verified session, never the token, so code
that reads the setting learns nothing it could use on another connection. A handle of
a transaction-scoped session is also bound to the transaction that made it (a stamp
that changes at every transaction end, `pl.transaction_stamp`): set again in a later
transaction on the same backend, it gives no identity. Any other value in the setting
is a raw token (a gateway may put one there, as in the original) and is verified before
use. Only the latest verified token is accepted again without a new jti, which keeps
"jti strictly increasing" meaningful; with `require_jti` off, earlier tokens stay in a
bounded cache (cache.py) for pooled traffic that re-presents them.

Without pg_session_jwt.jwk at connection start, the key source is the postmaster's
PG_SESSION_JWT_JWKS_URL (jwks.py), when set: the URL is fixed for the server's life, the
key set behind it follows the shared cache file, so a rotation reaches existing
connections too.
"""

import os

from . import cache, keys, token
from . import claims as claim_checks
from .encoding import json_dumps, json_loads
from .errors import (
    CHECK_VIOLATION,
    DATATYPE_MISMATCH,
    INSUFFICIENT_PRIVILEGE,
    INVALID_PARAMETER_VALUE,
    NO_DATA,
    JwtError,
)
from .settings import BOOLEANS, CONNECTION_START

# Exactly what PostgreSQL's uuid input accepts (string_to_uuid in uuid.c): 32 hex digits,
# a hyphen allowed after any group of four but the last, braces only as a pair. Checked
# without `re`, whose import (with `enum`) is a large share of a new backend's cost.
_HEX = frozenset("0123456789abcdefABCDEF")

# A handle cannot be a JWT (no dots), so a value is one or the other, never both.
HANDLE_PREFIX = "pg_session_jwt:"
# Handles kept per scope for rollbacks (a rolled-back jwt_session_init leaves the previous
# handle in the setting, which must still work); older ones are forgotten, so a backend
# holds at most this many session-scoped and this many transaction-scoped handles however
# often a transaction or a connection calls jwt_session_init.
MAX_HANDLES = 16
# Random bytes per handle. The kernel is asked for RANDOM_BATCH handles' worth at a time:
# each handle still gets fresh bytes of its own (none is derived from another, so seeing
# some handles of a backend says nothing about the next), for one getrandom() call per
# RANDOM_BATCH handles instead of one per jwt_session_init.
HANDLE_BYTES = 18
RANDOM_BATCH = 64

STALE_HANDLE = ("pg_session_jwt.jwt holds a session handle of another transaction: a "
                "transaction-scoped session ends with its transaction; call "
                "auth.jwt_session_init(token, true) again")
UNKNOWN_HANDLE = ("pg_session_jwt.jwt holds a session handle this connection does not know: "
                  "handles work only on the connection that made them; call "
                  "auth.jwt_session_init() with the token")
RAW_TOKEN_REFUSED = ("a raw token set in pg_session_jwt.jwt is refused on this connection: "
                     "pg_session_jwt.session_scope is 'transaction' (a transaction pooler shares "
                     "it, and a SET would outlive its client); call "
                     "auth.jwt_session_init(token, true) inside the transaction instead")
SESSION_SCOPE_REFUSED = ("session-scoped sessions are refused on this connection: "
                         "pg_session_jwt.session_scope is 'transaction' (a transaction pooler "
                         "shares it); call auth.jwt_session_init(token, true) inside the "
                         "transaction instead")


class Settings:
    """The `pg_session_jwt.*` values in effect at connection start (defaults: settings.py)."""

    __slots__ = tuple(setting.name for setting in CONNECTION_START)

    def __init__(self, **values):
        for setting in CONNECTION_START:
            setattr(self, setting.name, values.pop(setting.name, setting.default))
        if values:
            raise TypeError(f"not settings of pg_session_jwt: {sorted(values)}")

    @classmethod
    def from_text(cls, values):
        """Settings from {name: text or None} as current_setting() returns them; names
        missing from `values` (an older capture function) take their defaults."""
        parsed = {}
        for setting in CONNECTION_START:
            text = (values.get(setting.name) or "").strip()
            if not text:
                parsed[setting.name] = setting.default
            elif setting.type == "int":
                parsed[setting.name] = _integer(setting, text)
            elif setting.type == "bool":
                parsed[setting.name] = _boolean(setting, text)
            elif setting.choices:
                parsed[setting.name] = _choice(setting, text)
            else:
                parsed[setting.name] = text
        return cls(**parsed)


def _integer(setting, text):
    if not text.isascii() or not text.isdigit():
        raise JwtError(INVALID_PARAMETER_VALUE, f"{setting.full_name} must be a whole number "
                       f"of {setting.unit}, e.g. {setting.default}")
    return int(text)


def _boolean(setting, text):
    try:
        return BOOLEANS[text.lower()]
    except KeyError:
        raise JwtError(INVALID_PARAMETER_VALUE, f"{setting.full_name} must be on or off") from None


def _choice(setting, text):
    if text.lower() not in setting.choices:
        raise JwtError(INVALID_PARAMETER_VALUE, f"{setting.full_name} must be one of "
                       f"{', '.join(setting.choices)}, not {text!r}")
    return text.lower()


def _row(issuer, source, keyset, **status):
    row = {"issuer": issuer, "source": source,
           "kids": sorted(str(k.kid) for k in keyset.keys) if keyset is not None else [],
           "skipped": list(keyset.skipped) if keyset is not None else [],
           "fetched_at": None, "good_until": None, "last_failure": None, "failed_at": None}
    row.update(status)
    return row


def _source_row(issuer, url, source):
    return {"issuer": issuer, "source": url, **source.status()}


def _uuid(value):
    if not isinstance(value, str) or not 32 <= len(value) <= 41:
        return None
    text = value
    if text.startswith("{"):
        if not text.endswith("}"):
            return None
        text = text[1:-1]
    pos = 0
    for group in range(8):
        chunk = text[pos:pos + 4]
        if len(chunk) != 4 or not _HEX.issuperset(chunk):
            return None
        pos += 4
        if group < 7 and text[pos:pos + 1] == "-":
            pos += 1
    return value if pos == len(text) else None


def user_id_of(claims, verified, name="sub"):
    """What auth.user_id() (and, when a UUID, auth.uid()) returns for `claims`: the claim
    `name` (the issuer's user_id_claim, by default `sub`) when it is text; None without it;
    a JwtError for user_id() to raise when a verified token has it in another type."""
    value = claims.get(name)
    if isinstance(value, str):
        return value
    if verified and value is not None:
        # Raised by user_id() only, as the original does.
        what = "subject claim" if name == "sub" else f"user id claim ({name!r})"
        return JwtError(DATATYPE_MISMATCH, f"invalid {what} in the JWT")
    return None


class Session:
    """The claims of one session and what each getter returns for them."""

    __slots__ = ("token", "claims_json", "sub", "uid", "organization", "organization_id",
                 "role", "email", "expires", "issuer")

    def __init__(self, token_text, claims, claims_json, expires, verified, issuer=None):
        self.token = token_text
        self.claims_json = claims_json
        self.expires = expires
        self.issuer = issuer    # the jwks.Issuer that verified it (PG_SESSION_JWT_ISSUERS)
        claims = claims if isinstance(claims, dict) else {}
        sub = user_id_of(claims, verified, "sub" if issuer is None else issuer.user_id_claim)
        self.sub = sub
        self.uid = _uuid(sub)
        # Supabase's auth.role() and auth.email(): the same rules as sub.
        self.role = _text_claim(claims.get("role"), verified, "role")
        self.email = _text_claim(claims.get("email"), verified, "email")
        org = claims.get("o")
        if isinstance(org, dict):
            self.organization = json_dumps(org)
            self.organization_id = _uuid(org.get("id"))
        else:
            self.organization = self.organization_id = None

    def check_expiry(self, now, started=None):
        """Refuse the session once it has expired; `started` (a callable, asked only then)
        gives the time the current statement began: a statement that began while the
        session was valid keeps it to its end (the getters are STABLE: one identity per
        statement, not a failure at row N), the next statement is refused."""
        if self.expires is not None and self.expires < now:
            begun = None if started is None else started()
            if begun is not None and begun <= self.expires:
                return
            exc = JwtError(CHECK_VIOLATION, "Token used after it has expired")
            exc.signed = True   # a session's claims were verified: the refusal log may show sub
            raise exc


def _text_claim(value, verified, name):
    """A getter's value of a claim that must be text: the string, None when absent, or
    (verified claims only) the JwtError the getter raises, as user_id() does for sub."""
    if isinstance(value, str) or value is None:
        return value
    return JwtError(DATATYPE_MISMATCH, f"invalid {name} claim in the JWT") if verified else None


class Entry:
    """What a value of pg_session_jwt.jwt stands for: `key` (a handle or a raw token), its
    session, and the transaction stamp it is bound to: a transaction-scoped handle's, or
    the one a raw token was last checked in (None: a session-scoped handle)."""

    __slots__ = ("key", "session", "xact")

    def __init__(self, key, session, xact=None):
        self.key = key
        self.session = session
        self.xact = xact


class Backend:
    """Everything one server process remembers between calls.

    `current` is the entry the getters saw last (their per-row cache hit); `xact` arguments
    are callables returning the current transaction's stamp, called only when needed."""

    def __init__(self, environ=None):
        self.settings = None
        self.startup_jwt = ""
        self.current = None
        self.last_jti = 0
        self.cache = cache.VerifiedCache()
        self.environ = os.environ if environ is None else environ
        self.log = None
        self._keys = None
        self._jwks = None           # jwks.Config of the postmaster's environment
        self._source = None         # jwks.Source, made on first use
        self._issuers = None        # {iss: jwks.Issuer} of PG_SESSION_JWT_ISSUERS
        self.make_source = None     # jwks.Source of one issuer's Config (replaceable in tests)
        self._request = (None, None)
        self._verified = None       # the last verified session ...
        self._verified_keys = None  # ... and the key set it was verified under
        # Handles by scope, so that starting a session rebuilds nothing: the session-scoped
        # ones (oldest first), and the transaction-scoped ones of the transaction whose
        # stamp is _local_stamp (a later transaction's first start drops them all at once).
        self._session_handles = {}
        self._local_handles = {}
        self._local_stamp = None
        self._random = b""
        self._random_at = 0

    def configure(self, values, log=None):
        """Take the connection-start settings ({name: text}); only the first call counts."""
        if self.settings is None:
            settings = Settings.from_text(values)
            if not settings.jwk:
                from . import jwks  # only without a key at connection start: off the cold path

                issuers = jwks.issuers_from_env(self.environ)
                if issuers is not None:
                    self._issuers = {issuer.issuer: issuer for issuer in issuers}
                    if self.make_source is None:
                        self.make_source = lambda config: jwks.Source(config, log=log)
                else:
                    self._jwks = jwks.Config.from_env(self.environ)
                if (self._jwks is not None or self._issuers is not None) and not (
                        values.get("require_jti") or "").strip():
                    # Identity providers' jti is a string or absent.
                    settings.require_jti = False
            self.settings = settings
            # The session setting as the connection started (a gateway's startup packet).
            self.startup_jwt = values.get("jwt") or ""
            self.log = log

    def has_key_source(self):
        """Whether tokens are verified here: a key at connection start, a JWKS URL, or
        PG_SESSION_JWT_ISSUERS."""
        return bool(self.settings.jwk) or self._jwks is not None or self._issuers is not None

    def keys(self, now=None):
        """The key set to verify with: pg_session_jwt.jwk's, parsed on first use, else the
        JWKS URL's current one."""
        if self._keys is not None:
            return self._keys
        if self.settings.jwk:
            self._keys = keys.parse(self.settings.jwk)
            return self._keys
        if self._issuers is not None:
            # Each issuer's keys are looked at when one of its tokens comes: here only the
            # static ones are parsed (they were checked at start), and nothing is fetched.
            for issuer in self._issuers.values():
                if issuer.jwk is not None:
                    issuer.keys(now, self.make_source)
            return None
        from . import jwks

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

    def refused(self, exc, token=None):
        """Write refusal `exc` (of `token`, when there is one) to the log if log_refusals
        was on at connection start; once per refusal, however many callers see it."""
        if getattr(exc, "logged", False) or self.settings is None:
            return
        exc.logged = True
        if self.settings.log_refusals and self.log is not None:
            from . import refusals  # only where the log is on: off the cold path

            self.log(refusals.line(exc, token, self.settings.max_token_bytes))

    def verify(self, jwt, now, audit=None):
        """The session of token `jwt`, verified unless it is the last verified one (under the
        same key set) or, with require_jti off, in the cache; `audit` gets a log line."""
        try:
            return self._verify(jwt, now, audit)
        except JwtError as exc:
            self.refused(exc, jwt)
            raise

    def _verify(self, jwt, now, audit):
        if self._issuers is not None and not self.settings.jwk:
            return self._verify_issued(jwt, now, audit)
        settings = self.settings
        keyset = self.keys(now)
        verified = self._verified
        try:
            if verified is not None and jwt == verified.token and self._verified_keys is keyset:
                verified.check_expiry(now)
                return verified
            if not settings.require_jti:
                session = self.cache.get(jwt, keyset, now, settings.leeway)
                if session is not None:
                    self._verified, self._verified_keys = session, keyset
                    return session
        except JwtError as exc:
            exc.signed = True   # verified before, refused now in time
            raise
        try:
            claims, text = token.verify(jwt, keyset, settings.max_token_bytes)
        except keys.UnknownKid:
            # The issuer may have rotated its key in: refresh (rate-limited) and retry.
            if self._source is None or not self._source.unknown_kid(now):
                raise
            keyset = self._source.keyset
            claims, text = token.verify(jwt, keyset, settings.max_token_bytes)
        try:
            jti = claim_checks.check(claims, settings, now, self.last_jti)
        except JwtError as exc:
            exc.signed = True
            raise
        session = Session(jwt, claims, text, claim_checks.expires(claims, settings.leeway), True)
        self._remember(session, jti, keyset, claims)
        if settings.audit_log and audit is not None:
            sub, aud = json_dumps(claims.get("sub")), json_dumps(claims.get("aud"))
            audit(f"pg_session_jwt: validated JWT for sub={sub} aud={aud}")
        return session

    def _remember(self, session, jti, keyset, claims):
        """What a newly verified token leaves behind, on either verification path: its jti
        (with require_jti) or its place in the verified-token cache, and itself as the last
        verified session under `keyset`."""
        if jti is not None:
            self.last_jti = jti
        else:
            self.cache.put(session.token, session, keyset, claims.get("nbf"))
        self._verified, self._verified_keys = session, keyset
        # The getters' cache may hold the raw token this one replaces: an older token must
        # be verified again (and fail its jti) rather than hit that cache.
        self.current = None

    def _verify_issued(self, jwt, now, audit):
        """verify() with PG_SESSION_JWT_ISSUERS: the token's `iss` picks the issuer before
        anything else in it is used, and only that issuer's keys may verify it."""
        settings = self.settings
        verified = self._verified
        if verified is not None and jwt == verified.token and verified.issuer is not None and (
                self._verified_keys is verified.issuer.keys(now, self.make_source)):
            try:
                verified.check_expiry(now)
            except JwtError as exc:
                exc.signed = True
                raise
            return verified
        parsed = token.split(jwt, settings.max_token_bytes)
        claims, text = token.payload(parsed)
        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            shown = f" {iss!r}" if isinstance(iss, str) and len(iss) <= 200 else ""
            # Not the list of trusted issuers: any client could read the configuration so.
            raise JwtError(CHECK_VIOLATION, f"JWT issuer ('iss'){shown} is not one of the "
                           "issuers this server trusts (PG_SESSION_JWT_ISSUERS)"
                           if iss is not None else "JWT has no issuer ('iss'): with "
                           "PG_SESSION_JWT_ISSUERS it picks the keys, so it is required")
        signed = False
        try:
            keyset = issuer.keys(now, self.make_source)
            if not settings.require_jti:
                # A hit refused in time was verified before: signed.
                signed = True
                session = self.cache.get(jwt, keyset, now, settings.leeway)
                signed = False
                if session is not None:
                    self._verified, self._verified_keys = session, keyset
                    return session
            try:
                token.check_signature(parsed, keyset)
            except keys.UnknownKid:
                if issuer.jwk is not None or not issuer.source(self.make_source).unknown_kid(now):
                    raise
                keyset = issuer.keys(now, self.make_source)
                token.check_signature(parsed, keyset)
            signed = True
            jti = claim_checks.check(claims, settings, now, self.last_jti)
            issuer.check_audience(claims)
            expires = claim_checks.expires(claims, settings.leeway)
        except JwtError as exc:
            # For the refusal log (refusals.py): whether the signature had verified, and the
            # message before text taken from the token is added to it.
            exc.signed, exc.reason_message = signed, exc.message
            kid = parsed[2]
            shown = repr(kid) if isinstance(kid, str) and len(kid) <= 64 else "(none)"
            # The same exception, its message extended: whatever else it carries stays.
            exc.message = f"{exc.message} [issuer {issuer.issuer!r}, kid {shown}]"
            exc.args = (exc.message,)
            raise
        session = Session(jwt, claims, text, expires, True, issuer)
        self._remember(session, jti, keyset, claims)
        if settings.audit_log and audit is not None:
            user, aud = json_dumps(session.sub if isinstance(session.sub, str) else None), \
                json_dumps(claims.get(issuer.audience_claim))
            audit(f"pg_session_jwt: validated JWT for iss={json_dumps(iss)} user={user} "
                  f"aud={aud}")
        return session

    def key_sets(self, now):
        """Rows of auth.key_sets(): per key source, what it holds and how it fares. Only
        public data: issuers, URLs, kids, times, fetch errors."""
        rows = []
        if self.settings.jwk:
            try:
                keyset = self.keys(now)
            except JwtError as exc:
                keyset, failure = None, exc.message
            else:
                failure = None
            rows.append(_row(self.settings.issuer or None, "pg_session_jwt.jwk", keyset,
                             last_failure=failure))
        elif self._issuers is not None:
            for issuer in self._issuers.values():
                if issuer.jwk is not None:
                    rows.append(_row(issuer.issuer, "static", issuer.keys(now, self.make_source)))
                else:
                    rows.append(_source_row(issuer.issuer, issuer.config.url,
                                            issuer.source(self.make_source)))
        elif self._jwks is not None:
            from . import jwks

            if self._source is None:
                self._source = jwks.Source(self._jwks, log=self.log)
            rows.append(_source_row(self.settings.issuer or None, self._jwks.url, self._source))
        return rows

    def start(self, jwt, local, now, xact, audit=None):
        """jwt_session_init: verify `jwt` and return a new handle for the setting, bound to
        the current transaction when `local`."""
        if not local and self.settings.session_scope == "transaction":
            exc = JwtError(INSUFFICIENT_PRIVILEGE, SESSION_SCOPE_REFUSED)
            self.refused(exc, jwt)
            raise exc
        session = self.verify(jwt, now, audit)
        if local:
            stamp = xact()
            if stamp != self._local_stamp:
                # Handles of finished transactions can never work again: forget them.
                self._local_handles, self._local_stamp = {}, stamp
            handles, entry = self._local_handles, Entry(self._new_handle(), session, stamp)
        else:
            handles, entry = self._session_handles, Entry(self._new_handle(), session)
        while len(handles) >= MAX_HANDLES:
            del handles[next(iter(handles))]
        handles[entry.key] = entry
        self.current = entry
        return entry.key

    def _new_handle(self):
        """A new unguessable handle: HANDLE_BYTES fresh random bytes, in hex."""
        at = self._random_at
        if at + HANDLE_BYTES > len(self._random):
            self._random, at = os.urandom(HANDLE_BYTES * RANDOM_BATCH), 0
        self._random_at = at + HANDLE_BYTES
        return HANDLE_PREFIX + self._random[at:at + HANDLE_BYTES].hex()

    def lookup(self, jwt, request_claims, now, xact, audit=None, started=None):
        """The session the getters see: the handle's or the verified token's with a key,
        else (only when trusted at connection start) request.jwt.claims. `started`: see
        Session.check_expiry."""
        try:
            return self._lookup(jwt, request_claims, now, xact, audit, started)
        except JwtError as exc:
            entry = self._local_handles.get(jwt) or self._session_handles.get(jwt)
            if entry is not None:
                self.refused(exc, entry.session.token)
            else:
                self.refused(exc, None if not jwt or jwt.startswith(HANDLE_PREFIX) else jwt)
            raise

    def _lookup(self, jwt, request_claims, now, xact, audit, started):
        if self.has_key_source():
            if not jwt:
                return None
            entry = self._local_handles.get(jwt) or self._session_handles.get(jwt)
            if entry is None:
                if jwt.startswith(HANDLE_PREFIX):
                    raise JwtError(CHECK_VIOLATION, UNKNOWN_HANDLE)
                if self.settings.session_scope == "transaction" and jwt != self.startup_jwt:
                    # SET and SET LOCAL look the same from here, and a session-level SET of a
                    # raw token would give the next client of a pooled connection its identity.
                    raise JwtError(INSUFFICIENT_PRIVILEGE, RAW_TOKEN_REFUSED)
                # A raw token is verified before use, not a started session: bound to this
                # transaction, the getters' cache sends it back here (to verify(), which
                # checks it against the current key set) once per transaction, so a token
                # of a key the issuer has retired stops working on this connection too.
                entry = Entry(jwt, self.verify(jwt, now, audit), xact())
            elif entry.xact is not None and entry.xact != xact():
                raise JwtError(CHECK_VIOLATION, STALE_HANDLE)
            entry.session.check_expiry(now, started)
            self.current = entry
            return entry.session
        if self.settings.trust_request_claims:
            return self._from_request(request_claims)
        return None

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

