"""Identity providers' key sets (PG_SESSION_JWT_JWKS_URL, or each issuer of
PG_SESSION_JWT_ISSUERS), shared by every backend.

Where fetching runs, and why: PL/Python cannot start a background worker and the image's
PID 1 is postgres itself, so there is no process that could poll the issuer. Instead

  * the entrypoint fetches once before postgres starts (`python3 -m pg_session_jwt.jwks
    fetch`), so the first connection is served with keys;
  * the validated document is written atomically to one cache file in the server's run
    directory, with its fetch time and lifetime; every backend reads that file (one
    `os.stat` per verification tells it whether the file changed);
  * when the document is stale, or a token names a `kid` it lacks, ONE backend refreshes
    it: a non-blocking `flock` on a lock file picks it, and the lock file's content holds
    the last attempt's time, so the server fetches at most once per REFRESH_MIN whatever
    the number of backends or of tokens with made-up `kid`s. `urllib`/`ssl` are imported
    only then. The backend that fetched logs the change or the failure; the others do not.

Under an operator that runs the image without its entrypoint, the first backend that
needs the keys fetches them the same way.

Only the postmaster's environment configures this (backends inherit it; nothing a
client sends — startup packet, SET, role settings — reaches `os.environ`):

  PG_SESSION_JWT_JWKS_URL          https:// URL of the JWK Set
  PG_SESSION_JWT_JWKS_REFRESH_MIN  shortest interval between two fetches, seconds (60)
  PG_SESSION_JWT_JWKS_CA_FILE      extra CA certificates (PEM) trusted for that URL
  PG_SESSION_JWT_JWKS_ALLOW_HTTP   on: allow an http:// URL (development stacks only)
  PG_SESSION_JWT_JWKS_SECRET       the key that authenticates the cache file (the entrypoint
                                   sets it; an operator without the entrypoint may)
  PG_SESSION_JWT_ISSUERS           several issuers, a JSON array of entries (`Issuer`): each
                                   its exact `iss`, its jwks_url or static jwk, its audience
                                   and the claims that carry the audience and the user; the
                                   variables above are the defaults of its URL's settings.
                                   Each issuer's set has its own cache and lock files, so
                                   one issuer's failures and rate limit never touch another.

Why the cache file is authenticated: the run directory and the file belong to the server's
user, and so does every file a role with pg_write_server_files writes with COPY TO. Owner
and mode cannot tell the server's own document from one such a role planted, and a planted
key set would let that role sign tokens for anyone. With a secret in the postmaster's
environment (out of reach of COPY TO), the file carries an HMAC-SHA256 of its document
under that secret and a backend takes no document without a valid one. Without a secret
(an operator that runs the image without its entrypoint and sets none) the file is
trusted by owner and mode alone, as before. The lock file's content (the last attempt's
time and error) is authenticated the same way, and any content of either file that is not
exactly what the server writes counts as absent (see `Source`).

Bounds: a document lives for the response's Cache-Control max-age (or Expires), at
least REFRESH_MIN and at most MAX_AGE (24 h); DEFAULT_MAX_AGE when the response says
nothing. A failed fetch or a bad document never replaces a good key set: that set is
kept, indefinitely, while the issuer is unreachable, with one LOG line per failed attempt
(at most one per REFRESH_MIN).
"""

import os
import time

from . import keys
from .encoding import json_dumps, json_loads
from .errors import CHECK_VIOLATION, INVALID_PARAMETER_VALUE, NO_DATA, JwtError
from .settings import BOOLEANS

URL_VARIABLE = "PG_SESSION_JWT_JWKS_URL"
REFRESH_VARIABLE = "PG_SESSION_JWT_JWKS_REFRESH_MIN"
CA_VARIABLE = "PG_SESSION_JWT_JWKS_CA_FILE"
HTTP_VARIABLE = "PG_SESSION_JWT_JWKS_ALLOW_HTTP"
ANY_AUDIENCE_VARIABLE = "PG_SESSION_JWT_ALLOW_ANY_AUDIENCE"
SECRET_VARIABLE = "PG_SESSION_JWT_JWKS_SECRET"
MIN_SECRET_CHARS = 32

RUN_DIR = "/var/run/postgresql"
CACHE_NAME = "pg-session-jwt-jwks.json"
LOCK_NAME = "pg-session-jwt-jwks.lock"
DEFAULT_REFRESH_MIN = 60
DEFAULT_MAX_AGE = 300     # the response gave no Cache-Control max-age nor Expires
MAX_AGE = 86400           # longest a document is used before it is fetched again
TIMEOUT = 5               # seconds, for connecting and for each read
MAX_DOCUMENT_BYTES = 1 << 20


def flag(env, name):
    """A boolean environment variable (unset or empty: off); JwtError naming it when it is
    not on/off."""
    text = (env.get(name) or "").strip().lower()
    if not text:
        return False
    if text not in BOOLEANS:
        raise JwtError(INVALID_PARAMETER_VALUE, f"{name}={env.get(name)!r}: must be on or off")
    return BOOLEANS[text]


class Config:
    """The JWKS settings of the postmaster's environment, checked."""

    __slots__ = ("url", "refresh_min", "ca_file", "allow_http", "secret", "issuer")

    def __init__(self, url, refresh_min=DEFAULT_REFRESH_MIN, ca_file=None, allow_http=False,
                 secret=None, issuer=None):
        self.url = url
        self.refresh_min = refresh_min
        self.ca_file = ca_file
        self.allow_http = allow_http
        self.secret = secret      # bytes: authenticates the state files; None: owner/mode only
        self.issuer = issuer      # an entry of PG_SESSION_JWT_ISSUERS; None: PG_SESSION_JWT_JWKS_URL

    @property
    def url_name(self):
        """What messages call the URL's setting."""
        return URL_VARIABLE if self.issuer is None else f"jwks_url of issuer {self.issuer!r}"

    @property
    def ca_name(self):
        return CA_VARIABLE if self.issuer is None else f"ca_file of issuer {self.issuer!r}"

    @property
    def label(self):
        """What messages call the key set."""
        return (f"the key set from {URL_VARIABLE}" if self.issuer is None
                else f"the key set of issuer {self.issuer!r}")

    def file_names(self):
        """(cache, lock) file names: today's for PG_SESSION_JWT_JWKS_URL, one pair per issuer
        of PG_SESSION_JWT_ISSUERS, so that each issuer is cached and rate-limited alone."""
        if self.issuer is None:
            return CACHE_NAME, LOCK_NAME
        import hashlib

        tag = hashlib.sha256(self.issuer.encode("utf-8")).hexdigest()[:16]
        return f"pg-session-jwt-jwks-{tag}.json", f"pg-session-jwt-jwks-{tag}.lock"

    @classmethod
    def from_env(cls, env=None):
        """The Config of `env` (default os.environ), or None when no URL is set."""
        env = os.environ if env is None else env
        url = (env.get(URL_VARIABLE) or "").strip()
        if not url:
            return None
        allow_http = flag(env, HTTP_VARIABLE)
        check_url(url, allow_http)
        text = (env.get(REFRESH_VARIABLE) or "").strip()
        refresh_min = DEFAULT_REFRESH_MIN
        if text:
            if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_AGE:
                raise JwtError(INVALID_PARAMETER_VALUE, f"{REFRESH_VARIABLE}={text!r}: must be a "
                               f"whole number of seconds from 1 to {MAX_AGE}, e.g. 60")
            refresh_min = int(text)
        ca_file = (env.get(CA_VARIABLE) or "").strip() or None
        if ca_file is not None and not os.path.isfile(ca_file):
            raise JwtError(INVALID_PARAMETER_VALUE, f"{CA_VARIABLE}={ca_file}: no such file; "
                           "mount the PEM file with the CA certificate(s) there")
        return cls(url, refresh_min, ca_file, allow_http, secret_of(env))


def secret_of(env):
    """PG_SESSION_JWT_JWKS_SECRET as bytes (None when unset); JwtError when too short."""
    secret = (env.get(SECRET_VARIABLE) or "").strip() or None
    if secret is not None and len(secret) < MIN_SECRET_CHARS:
        raise JwtError(INVALID_PARAMETER_VALUE, f"{SECRET_VARIABLE} is too short: use at least "
                       f"{MIN_SECRET_CHARS} random characters (or leave it unset: the "
                       "entrypoint makes one)")
    return None if secret is None else secret.encode("utf-8")


def check_url(url, allow_http, name=URL_VARIABLE, http_name=HTTP_VARIABLE + "=on"):
    """Refuse URLs the fetcher must not follow; JwtError naming the setting and the fix."""
    from urllib.parse import urlsplit

    def refuse(reason):
        raise JwtError(INVALID_PARAMETER_VALUE, f"{name}: {reason}")

    if not isinstance(url, str):
        refuse("must be a string: the https:// URL of the issuer's JWK Set")

    if len(url) > 2048 or any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        refuse("must be one URL without spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        refuse(f"not a valid URL ({exc})")
    if parts.scheme == "http":
        if not allow_http:
            refuse("http:// is refused (anyone on the path could swap the keys): use the "
                   f"issuer's https:// URL, or set {http_name} for a development stack")
    elif parts.scheme != "https":
        refuse(f"scheme {parts.scheme or '(none)'!r} is not supported: give the https:// URL "
               "of the issuer's JWK Set, e.g. https://issuer.example/.well-known/jwks.json")
    if not parts.hostname:
        refuse("has no host name")


def max_age(headers, now, refresh_min):
    """Seconds the fetched document may be used: Cache-Control max-age, else Expires, within
    [refresh_min, MAX_AGE]; DEFAULT_MAX_AGE when the response says nothing."""
    seconds = None
    cache_control = headers.get("Cache-Control") or ""
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            seconds = 0
            break
        if name == "max-age":
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit():
                seconds = int(value)
    if seconds is None and headers.get("Expires"):
        from email.utils import parsedate_to_datetime

        try:
            expires = parsedate_to_datetime(headers["Expires"]).timestamp()
            seconds = max(0, int(expires - now))
        except (TypeError, ValueError, OverflowError):
            seconds = 0  # RFC 9111 5.3: an invalid Expires means already expired
    if seconds is None:
        seconds = DEFAULT_MAX_AGE
    return min(max(seconds, refresh_min), MAX_AGE)


class FetchError(Exception):
    """A fetch that did not give a usable document; `unreachable` when retrying may help."""

    def __init__(self, message, unreachable=False):
        super().__init__(message)
        self.message = message
        self.unreachable = unreachable


def _read_by(response, deadline):
    """The body of `response`, at most MAX_DOCUMENT_BYTES + 1 bytes, read by `deadline`.

    The socket's timeout bounds each read, not the whole: an issuer that sends a byte every
    few seconds would otherwise hold the backend that refreshes (which no statement_timeout
    or cancel can interrupt while Python runs) for as long as it likes."""
    chunks, size = [], 0
    while size <= MAX_DOCUMENT_BYTES:
        if time.monotonic() > deadline:
            raise FetchError(f"the issuer did not send its document within {TIMEOUT} s",
                             unreachable=True)
        chunk = response.read1(min(16384, MAX_DOCUMENT_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def fetch(config):
    """(document text, headers) from config.url, certificate verified; FetchError otherwise.

    Redirects are refused: a redirect could leave https or the issuer's host."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context()
    if config.ca_file:
        try:
            context.load_verify_locations(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise FetchError(f"{config.ca_name}={config.ca_file} is not a readable PEM file of CA "
                             f"certificates ({exc})") from None

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            raise FetchError(f"the issuer answered {code} redirecting to {newurl}: set "
                             f"{config.url_name} to the final URL")

    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect)
    request = urllib.request.Request(config.url, headers={
        "Accept": "application/jwk-set+json, application/json",
        "User-Agent": "pg_session_jwt"})
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            body = _read_by(response, time.monotonic() + TIMEOUT)
            headers = dict(response.headers.items())
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError(f"the issuer answered HTTP {exc.code} {exc.reason}",
                         unreachable=exc.code >= 500 or exc.code == 429) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise FetchError(f"TLS certificate not trusted ({reason.verify_message}): give the "
                             f"issuer's CA in {config.ca_name}, or fix the URL's host name") from None
        raise FetchError(f"cannot reach the issuer ({reason})", unreachable=True) from None
    except (OSError, ValueError) as exc:  # timeouts while reading, broken connections
        raise FetchError(f"cannot reach the issuer ({exc})", unreachable=True) from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise FetchError(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return body.decode("utf-8"), headers
    except UnicodeDecodeError:
        raise FetchError("the document is not UTF-8 text") from None


def validate(text, label=keys.LABEL):
    """The KeySet of a fetched document; FetchError when it is not a usable public JWK Set."""
    try:
        keyset = keys.parse(text, label)
    except JwtError as exc:
        raise FetchError("the document is not a usable JWK Set: "
                         + exc.message.replace(f"{label} is unusable: ", "")) from None
    return keyset


def kids(keyset):
    return sorted(str(key.kid) for key in keyset.keys)


def described(keyset):
    """The kids of a set and, when it has any, the keys it skips, for one LOG line."""
    text = ", ".join(kids(keyset))
    if keyset.skipped:
        text += f"; skipped {keyset.skipped_text()}"
    return text


class Document:
    """One fetched document as kept in the cache file."""

    __slots__ = ("url", "jwks", "fetched", "max_age")

    def __init__(self, url, jwks, fetched, max_age):
        self.url, self.jwks, self.fetched, self.max_age = url, jwks, fetched, max_age

    @property
    def expires(self):
        return self.fetched + self.max_age

    def to_json(self, secret=None):
        value = {"url": self.url, "fetched": self.fetched, "max_age": self.max_age,
                 "jwks": self.jwks}
        if secret is not None:
            value["mac"] = _mac(secret, value)
        return json_dumps(value)

    @classmethod
    def from_json(cls, text, secret=None):
        """The document of the file's `text`; Unauthenticated when `secret` is given and the
        file's MAC is missing or wrong, ValueError naming what is wrong with any other text."""
        value = json_loads(text)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        if secret is not None:
            import hmac  # only when a file changed, in JWKS mode: not on a new backend's path

            mac = value.get("mac")
            if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(secret, value)):
                raise Unauthenticated
        url, jwks, fetched, age = (value.get(name) for name in ("url", "jwks", "fetched",
                                                                 "max_age"))
        if not isinstance(url, str) or not isinstance(jwks, str):
            raise ValueError("no url or jwks text")
        if not _is_time(fetched) or type(age) is not int or not 0 <= age <= MAX_AGE:
            raise ValueError("no valid fetch time or lifetime")
        return cls(url, jwks, float(fetched), age)


class Unauthenticated(ValueError):
    """A state file without a valid MAC under the configured secret."""


# 10000-01-01: later times are not timestamps Python or PostgreSQL can show.
_TIME_LIMIT = 253_402_300_800


def _is_time(value):
    """A plausible Unix time: a finite number (not a bool) before the year 10000."""
    return type(value) in (int, float) and 0 <= value < _TIME_LIMIT


def _mac(secret, value):
    """HMAC-SHA256 under `secret` of the document's fields, in a fixed encoding."""
    import hashlib
    import hmac

    fields = json_dumps([value.get("url"), value.get("fetched"), value.get("max_age"),
                         value.get("jwks")])
    return hmac.new(secret, fields.encode("utf-8"), hashlib.sha256).hexdigest()


def write_atomically(path, text, mode=0o644):
    """Replace `path` by `text` (with `mode`) so that a reader sees the old file or the new
    one, never half. Also what the entrypoint's configuration check (runtime/config.py)
    writes its postgresql.conf fragment with."""
    import tempfile  # on a fetch only, not on a new backend's path

    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


MAX_STATE_BYTES = 8 * MAX_DOCUMENT_BYTES   # a cache file holds the document as JSON text
MAX_LOCK_BYTES = 65536
MAX_ERROR_CHARS = 500


class Source:
    """The current key set of a JWKS URL for one process, refreshed through the shared file.

    `clock`, `fetcher` and `directory` are replaceable for tests; `log` receives one line per
    change or failure seen by the process that fetched.

    The state files are written by the server only, but anyone who can write as the server's
    user (COPY TO with pg_write_server_files) can put anything there. Whatever they hold,
    a file that is not exactly what the server writes (and, with a secret, authenticated by
    it) counts as absent: it is logged once per content by the process that reads it, a
    process that holds a good set writes that set back, and a process without one may fetch
    at once. Nothing in these files ever becomes an exception for a caller."""

    def __init__(self, config, directory=RUN_DIR, fetcher=fetch, clock=time.time, log=None):
        self.config = config
        cache_name, lock_name = config.file_names()
        self.cache_path = os.path.join(directory, cache_name)
        self.lock_path = os.path.join(directory, lock_name)
        self.fetcher = fetcher
        self.clock = clock
        self.log = log
        self.keyset = None       # the KeySet in use; replaced only when the document changes
        self.document = None
        self._stat = None        # (mtime_ns, size, inode) of the cache file last read
        self._not_before = 0.0   # no refresh attempt from this process before this time
        self._file_bad = False   # the cache file holds something this server did not write
        self._bad_lock = None    # the last unusable lock file content seen (logged once)

    # Reading the shared file.

    def reload(self):
        """Take the cache file's document if it changed since the last look; True if it did."""
        try:
            st = os.stat(self.cache_path)
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stat:
            return False
        self._stat = stamp
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            # The run directory is world-writable: trust only our own, unshared file.
            self._say(f"pg_session_jwt: ignoring {self.cache_path}: not owned by this server's "
                      "user or writable by others")
            return False
        try:
            document = self._read_cache(st.st_size)
        except Unauthenticated:
            return self._bad_file(f"not written by this server ({SECRET_VARIABLE} does not "
                                  "authenticate it)")
        except Exception as exc:  # noqa: BLE001 (any content at all: see the class docstring)
            return self._bad_file(f"not a key set cache file ({_reason(exc)})")
        if document.url != self.config.url:
            return False  # left by a start with another URL
        self._file_bad = False
        if self.document is not None and document.jwks == self.document.jwks:
            self.document = document  # same keys, newer fetch time: keep the parsed set
            return False
        try:
            keyset = validate(document.jwks, self.config.label)
        except FetchError as exc:
            return self._bad_file(exc.message)
        self.document, self.keyset = document, keyset
        return True

    def _read_cache(self, size):
        if size > MAX_STATE_BYTES:
            raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
        with open(self.cache_path, "rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
        if len(data) > MAX_STATE_BYTES:
            raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
        return Document.from_json(data.decode("utf-8"), self.config.secret)

    def _bad_file(self, reason):
        """The cache file is unusable: say so once (reload reads a file once per change),
        and put this process's good set back if it has one."""
        self._file_bad = True
        if self.document is None:
            self._say(f"pg_session_jwt: ignoring {self.cache_path}: {reason}")
            return False
        try:
            write_atomically(self.cache_path, self.document.to_json(self.config.secret))
            st = os.stat(self.cache_path)
            self._stat = (st.st_mtime_ns, st.st_size, st.st_ino)
            self._file_bad = False
            done = "wrote the key set in use back"
        except OSError as exc:
            done = f"cannot write it ({exc.strerror})"
        self._say(f"pg_session_jwt: ignoring {self.cache_path}: {reason}; {done} (kids "
                  f"{', '.join(kids(self.keyset))})")
        return False

    def current(self, now=None):
        """The KeySet to verify with now; JwtError 02000 when none was ever fetched."""
        now = self.clock() if now is None else now
        self.reload()
        if self.document is None or now >= self.document.expires:
            self.refresh(now)
        if self.keyset is None:
            failure = self.last_failure()
            failure = f"the last fetch failed: {failure[0]}" if failure else "not fetched"
            raise JwtError(NO_DATA, f"no key set from {self.config.url_name} ({self.config.url}) "
                           f"yet: {failure}; the server retries at most every "
                           f"{self.config.refresh_min} s")
        return self.keyset

    def unknown_kid(self, now=None):
        """A token named a kid the set lacks: refresh (rate-limited); True if the set changed."""
        now = self.clock() if now is None else now
        before = self.keyset
        self.reload()
        if self.keyset is before:
            self.refresh(now)
        return self.keyset is not before

    def status(self):
        """What auth.key_sets() shows of this source (the file is read, nothing fetched)."""
        self.reload()
        failure = self.last_failure()
        document = self.document
        return {"kids": kids(self.keyset) if self.keyset is not None else [],
                "skipped": list(self.keyset.skipped) if self.keyset is not None else [],
                "fetched_at": document.fetched if document is not None else None,
                "good_until": document.expires if document is not None else None,
                "last_failure": failure[0] if failure else None,
                "failed_at": failure[1] if failure else None}

    # Refreshing, by one process at a time, at most once per REFRESH_MIN server-wide.

    def refresh(self, now):
        """Fetch a new document if this process may; the result is in the file either way."""
        if now < self._not_before:
            return
        import fcntl

        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._say(f"pg_session_jwt: cannot open {self.lock_path} ({exc.strerror}): the key "
                      f"set from {self.config.url_name} cannot be refreshed")
            self._not_before = now + self.config.refresh_min
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                # Another process is fetching; its result appears in the file.
                self._not_before = now + 1
                return
            last = self._read_attempt(fd).get("attempted", 0.0)
            # A planted cache file took this process's keys away: it may fetch at once.
            planted = self._file_bad and self.document is None
            if now - last < self.config.refresh_min and last <= now and not planted:
                self._not_before = last + self.config.refresh_min
                self.reload()
                return
            self._fetch(fd, now)
            self._not_before = now + self.config.refresh_min
        finally:
            os.close(fd)  # releases the flock

    def fetch_document(self, fd, now):
        """Fetch and validate the issuer's document now, recording the attempt (and its
        failure) in the lock file `fd`; (Document, KeySet), or FetchError."""
        config = self.config
        self._write_attempt(fd, {"attempted": now})
        try:
            text, headers = self.fetcher(config)
            keyset = validate(text, config.label)
        except FetchError as exc:
            self._write_attempt(fd, {"attempted": now, "error": exc.message[:MAX_ERROR_CHARS]})
            raise
        return Document(config.url, text, now, max_age(headers, now, config.refresh_min)), keyset

    def _fetch(self, fd, now):
        config = self.config
        try:
            document, keyset = self.fetch_document(fd, now)
        except FetchError as exc:
            kept = ("no key set yet: tokens are refused until a fetch succeeds"
                    if self.document is None else
                    f"keeping the key set fetched {int(now - self.document.fetched)} s ago "
                    f"(kids {', '.join(kids(self.keyset))})")
            self._say(f"pg_session_jwt: could not refresh the key set from {config.url}: "
                      f"{exc.message}; {kept}; next attempt in {config.refresh_min} s at the "
                      "earliest")
            return
        old = self.keyset
        try:
            write_atomically(self.cache_path, document.to_json(self.config.secret))
            self.reload()
        except OSError as exc:
            # This process still uses what it fetched; the others fetch for themselves.
            self._say(f"pg_session_jwt: cannot write {self.cache_path} ({exc.strerror}): the "
                      "run directory must be writable by the server's user")
        if self.document is None or self.document.jwks != document.jwks:
            # Not read back (unwritable directory, or a file planted in between): this
            # process still uses what it fetched.
            self.keyset = keyset
        self.document = document
        whose = "" if config.issuer is None else f" (issuer {config.issuer!r})"
        if old is None:
            self._say(f"pg_session_jwt: fetched the key set from {config.url}{whose}: kids "
                      f"{described(self.keyset)}; next refresh in {document.max_age} s")
        elif self.keyset is not old:
            self._say(f"pg_session_jwt: the key set from {config.url}{whose} changed: kids "
                      f"{described(self.keyset)} (were {', '.join(kids(old))})")

    def last_failure(self):
        """(message, time) of the last failed fetch as the lock file records it, or None."""
        try:
            with open(self.lock_path, "rb") as fh:
                attempt = self._attempt(fh.read(MAX_LOCK_BYTES + 1))
        except OSError:
            return None
        error = attempt.get("error")
        return (error, attempt["attempted"]) if error else None

    # The lock file's content: the last attempt's time and failure, authenticated like the
    # cache file (its error text reaches callers' messages, its time the rate limit).

    def _read_attempt(self, fd):
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return self._attempt(os.read(fd, MAX_LOCK_BYTES + 1))
        except OSError:
            return {}

    def _attempt(self, data):
        """The attempt recorded in the lock file's bytes `data`; {} for anything else."""
        if not data:
            return {}
        try:
            if len(data) > MAX_LOCK_BYTES:
                raise ValueError(f"larger than {MAX_LOCK_BYTES} bytes")
            value = json_loads(data.decode("utf-8"))
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            if self.config.secret is not None:
                import hmac

                mac = value.get("mac")
                if not isinstance(mac, str) or not hmac.compare_digest(
                        mac, _lock_mac(self.config.secret, value)):
                    raise ValueError(f"not written by this server ({SECRET_VARIABLE} does not "
                                     "authenticate it)")
            attempted, error = value.get("attempted"), value.get("error")
            if not _is_time(attempted):
                raise ValueError("no valid attempt time")
            if error is not None and not (isinstance(error, str)
                                          and len(error) <= MAX_ERROR_CHARS):
                raise ValueError("an error that is not a short text")
        except Exception as exc:  # noqa: BLE001 (any content at all: see the class docstring)
            if data != self._bad_lock:
                self._bad_lock = data
                self._say(f"pg_session_jwt: ignoring the content of {self.lock_path}: "
                          f"{_reason(exc)}; it is rewritten at the next fetch")
            return {}
        return {"attempted": float(attempted), "error": error}

    def _write_attempt(self, fd, value):
        if self.config.secret is not None:
            value = {**value, "mac": _lock_mac(self.config.secret, value)}
        data = json_dumps(value).encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, data)

    def _say(self, message):
        if self.log is not None:
            self.log(message)


def _lock_mac(secret, value):
    import hashlib
    import hmac

    fields = json_dumps(["lock", value.get("attempted"), value.get("error")])
    return hmac.new(secret, fields.encode("utf-8"), hashlib.sha256).hexdigest()


def _reason(exc):
    """A short reason for an unusable state file, never quoting its content."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
    return text[:200]


# --- several issuers: PG_SESSION_JWT_ISSUERS ---------------------------------------------

ISSUERS_VARIABLE = "PG_SESSION_JWT_ISSUERS"
# Every member an entry may have; any other name is refused (a misspelt "audience" would
# otherwise leave the audience unchecked).
ISSUER_FIELDS = ("issuer", "jwks_url", "jwk", "audience", "allow_any_audience",
                 "audience_claim", "user_id_claim", "ca_file", "allow_http", "refresh_min")
MAX_ISSUERS = 64


class Issuer:
    """One trusted issuer: its exact `iss`, where its keys come from, and how its tokens
    name their audience and their user."""

    __slots__ = ("issuer", "config", "jwk", "audiences", "audience_claim", "user_id_claim",
                 "_keyset", "_source")

    def __init__(self, issuer, config=None, jwk=None, audiences=None, audience_claim="aud",
                 user_id_claim="sub"):
        self.issuer = issuer
        self.config = config            # Config of its jwks_url, or None with a static jwk
        self.jwk = jwk                  # the static key or set, JSON text
        self.audiences = audiences      # frozenset of accepted audiences; None: any
        self.audience_claim = audience_claim
        self.user_id_claim = user_id_claim
        self._keyset = None
        self._source = None

    @property
    def label(self):
        return f"the key set of issuer {self.issuer!r}"

    def keys(self, now, make_source):
        """The KeySet to verify this issuer's tokens with now."""
        if self.jwk is not None:
            if self._keyset is None:
                self._keyset = keys.parse(self.jwk, self.label)
            return self._keyset
        return self.source(make_source).current(now)

    def source(self, make_source):
        if self._source is None:
            self._source = make_source(self.config)
        return self._source

    def check_audience(self, claims):
        """Refuse claims whose audience claim names none of this issuer's audiences."""
        if self.audiences is None:
            return
        name = self.audience_claim
        value = claims.get(name)
        values = value if isinstance(value, list) else [value]
        if not any(isinstance(v, str) and v in self.audiences for v in values):
            missing = "is missing" if value is None else "does not match"
            raise JwtError(CHECK_VIOLATION, f"JWT audience ({name!r}) {missing} the audience "
                           f"of issuer {self.issuer!r} in {ISSUERS_VARIABLE}")


def issuers_from_env(env):
    """The Issuers of PG_SESSION_JWT_ISSUERS in `env`, or None when it is unset; JwtError
    naming the entry and the field when it is wrong."""
    text = (env.get(ISSUERS_VARIABLE) or "").strip()
    if not text:
        return None
    try:
        value = json_loads(text)
    except ValueError as exc:
        raise JwtError(INVALID_PARAMETER_VALUE, f"{ISSUERS_VARIABLE} is not valid JSON ({exc}): "
                       "give a JSON array of issuers, e.g. [{\"issuer\": \"https://id.example\", "
                       "\"jwks_url\": \"https://id.example/jwks.json\", \"audience\": \"app\"}]"
                       ) from None
    return parse_issuers(value, env, ISSUERS_VARIABLE)


def parse_issuers(value, env, where, where_of=None):
    """[Issuer] of the list `value` (from the variable or the YAML, named `where`; entry i
    named `where_of(i)`, by default where[i])."""
    def refuse(message):
        raise JwtError(INVALID_PARAMETER_VALUE, f"{where}: {message}")

    if not isinstance(value, list) or not value:
        refuse("must be a non-empty list of issuers (objects with \"issuer\" and \"jwks_url\" "
               "or \"jwk\")")
    if len(value) > MAX_ISSUERS:
        refuse(f"at most {MAX_ISSUERS} issuers")
    defaults = _defaults(env)
    out, seen = [], {}
    for i, entry in enumerate(value):
        issuer = _issuer_entry(entry, where_of(i) if where_of else f"{where}[{i}]", defaults)
        if issuer.issuer in seen:
            refuse(f"entries {seen[issuer.issuer]} and {i} have the same issuer "
                   f"{issuer.issuer!r}: give each issuer once (an issuer with several "
                   "audiences takes a list)")
        seen[issuer.issuer] = i
        out.append(issuer)
    return out


def _defaults(env):
    """Per-issuer defaults from today's single-issuer variables."""
    refresh = (env.get(REFRESH_VARIABLE) or "").strip()
    if refresh and not (refresh.isascii() and refresh.isdigit() and 1 <= int(refresh) <= MAX_AGE):
        raise JwtError(INVALID_PARAMETER_VALUE, f"{REFRESH_VARIABLE}={refresh!r}: must be a "
                       f"whole number of seconds from 1 to {MAX_AGE}, e.g. 60")
    return {"refresh_min": int(refresh) if refresh else DEFAULT_REFRESH_MIN,
            "ca_file": (env.get(CA_VARIABLE) or "").strip() or None,
            "allow_http": flag(env, HTTP_VARIABLE), "secret": secret_of(env)}


def _text(entry, name, at, default=None):
    value = entry.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value or value != value.strip() or any(
            ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise JwtError(INVALID_PARAMETER_VALUE, f"{at}: \"{name}\" must be a non-empty string "
                       "without spaces around it or control characters")
    return value


def _issuer_entry(entry, at, defaults):
    def refuse(message):
        raise JwtError(INVALID_PARAMETER_VALUE, f"{at}: {message}")

    if not isinstance(entry, dict):
        refuse("must be an object with \"issuer\" and \"jwks_url\" or \"jwk\"")
    issuer = _text(entry, "issuer", at)
    if issuer is None:
        refuse("\"issuer\" is required: the exact \"iss\" of this issuer's tokens")
    at = f"{at} (issuer {issuer!r})"
    unknown = sorted(str(name) for name in entry if name not in ISSUER_FIELDS)
    if unknown:
        refuse(f"unknown field {unknown[0]!r}; the fields are {', '.join(ISSUER_FIELDS)}")
    url, jwk = entry.get("jwks_url"), entry.get("jwk")
    if (url is None) == (jwk is None):
        refuse("give exactly one of \"jwks_url\" (the issuer's https:// JWK Set) and "
               "\"jwk\" (a static public key or set)")
    for name, kind in (("allow_any_audience", bool), ("allow_http", bool)):
        if name in entry and type(entry[name]) is not kind:
            refuse(f"\"{name}\" must be true or false")
    audience = entry.get("audience")
    if audience is not None:
        items = [audience] if isinstance(audience, str) else audience
        if not isinstance(items, list) or not items or not all(
                isinstance(a, str) and a and a == a.strip() for a in items):
            refuse("\"audience\" must be a string or a non-empty list of strings")
        audiences = frozenset(items)
    else:
        audiences = None
    if entry.get("allow_any_audience"):
        if audiences is not None:
            refuse("\"audience\" and \"allow_any_audience\" are both set: keep one")
    elif audiences is None and url is not None:
        refuse("\"audience\" is required with \"jwks_url\": an identity provider signs "
               "tokens for its tenant's other applications too; give this database's "
               "audience (or \"allow_any_audience\": true if the issuer signs tokens for "
               "nothing else)")
    audience_claim = _text(entry, "audience_claim", at, "aud")
    user_id_claim = _text(entry, "user_id_claim", at, "sub")
    if jwk is not None:
        for name in ("ca_file", "allow_http", "refresh_min"):
            if name in entry:
                refuse(f"\"{name}\" applies to \"jwks_url\" only")
        if isinstance(jwk, dict):
            jwk = json_dumps(jwk)
        if not isinstance(jwk, str):
            refuse("\"jwk\" must be a JWK or JWKS (an object, or its JSON text)")
        try:
            keys.parse(jwk, "its \"jwk\"")
        except JwtError as exc:
            refuse(exc.message)
        return Issuer(issuer, None, jwk, audiences, audience_claim, user_id_claim)
    allow_http = entry.get("allow_http", defaults["allow_http"])
    check_url(url, allow_http, f"{at}: \"jwks_url\"", "\"allow_http\": true")
    refresh = entry.get("refresh_min", defaults["refresh_min"])
    if type(refresh) is not int or not 1 <= refresh <= MAX_AGE:
        refuse(f"\"refresh_min\" must be a whole number of seconds from 1 to {MAX_AGE}")
    ca_file = _text(entry, "ca_file", at, defaults["ca_file"])
    if ca_file is not None and not os.path.isfile(ca_file):
        refuse(f"\"ca_file\" {ca_file}: no such file; mount the PEM file with the CA "
               "certificate(s) there")
    config = Config(url, refresh, ca_file, allow_http, defaults["secret"], issuer)
    return Issuer(issuer, config, None, audiences, audience_claim, user_id_claim)


def fetch_at_start(config, directory, out, err, warn_only):
    """Fetch one source's key set before the server starts; False when the start must be
    refused (a wrong URL, CA or document; with `warn_only`, never)."""
    source = Source(config, directory=directory)
    now = source.clock()
    source.reload()
    try:
        fd = os.open(source.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        err(f"pg-session-jwt: error: cannot write {source.lock_path} ({exc.strerror}): the "
            "run directory must be writable by the server's user")
        return False
    whose = "" if config.issuer is None else f" of issuer {config.issuer!r}"
    try:
        try:
            document, keyset = source.fetch_document(fd, now)
        except FetchError as exc:
            if exc.unreachable or warn_only:
                tokens = "every token is" if config.issuer is None else "its tokens are"
                kept = (f"Starting without keys: {tokens} refused until a fetch succeeds"
                        if source.keyset is None else
                        "Starting with the key set fetched at the previous start (kids "
                        f"{', '.join(kids(source.keyset))})")
                err(f"pg-session-jwt: WARNING: could not fetch the key set{whose} from "
                    f"{config.url}: {exc.message}. {kept}; the first backend that needs keys "
                    f"tries again, at most once every {config.refresh_min} s.")
                return True
            err(f"pg-session-jwt: error: {config.url_name}={config.url}: {exc.message}")
            return False
        write_atomically(source.cache_path, document.to_json(config.secret))
    finally:
        os.close(fd)
    out(f"pg-session-jwt: fetched the key set{whose} from {config.url} (kids "
        f"{described(keyset)}; refreshed after {document.max_age} s, or on an unknown kid, at "
        f"most every {config.refresh_min} s)")
    return True


def main(argv=None):
    """`python3 -m pg_session_jwt.jwks fetch [--dir DIR]`: the entrypoint's fetch at start.

    Exit 0 when the key sets are in their cache files, or when an issuer is unreachable (the
    server starts without its keys and refuses its tokens until a backend's fetch succeeds);
    exit 1, with a message naming the URL and the fix, when the configuration is wrong or,
    for PG_SESSION_JWT_JWKS_URL, the document is. With PG_SESSION_JWT_ISSUERS one issuer's
    bad document is a warning: it must not keep the server, and the other issuers, down.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python3 -m pg_session_jwt.jwks")
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("--dir", default=RUN_DIR, help="where the cache files are written")
    args = parser.parse_args(argv)

    def err(line):
        print(line, file=sys.stderr)

    try:
        issuers = issuers_from_env(os.environ)
        config = Config.from_env() if issuers is None else None
    except JwtError as exc:
        err(f"pg-session-jwt: error: {exc.message}")
        return 1
    configs = [config] if config is not None else [
        issuer.config for issuer in issuers or () if issuer.config is not None]
    ok = True
    for each in configs:
        ok = fetch_at_start(each, args.dir, print, err, warn_only=issuers is not None) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
