"""The identity provider's key set from PG_SESSION_JWT_JWKS_URL, shared by every backend.

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

Why the cache file is authenticated: the run directory and the file belong to the server's
user, and so does every file a role with pg_write_server_files writes with COPY TO. Owner
and mode cannot tell the server's own document from one such a role planted, and a planted
key set would let that role sign tokens for anyone. With a secret in the postmaster's
environment (out of reach of COPY TO), the file carries an HMAC-SHA256 of its document
under that secret and a backend takes no document without a valid one. Without a secret
(an operator that runs the image without its entrypoint and sets none) the file is
trusted by owner and mode alone, as before.

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
from .errors import INVALID_PARAMETER_VALUE, NO_DATA, JwtError
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

    __slots__ = ("url", "refresh_min", "ca_file", "allow_http", "secret")

    def __init__(self, url, refresh_min=DEFAULT_REFRESH_MIN, ca_file=None, allow_http=False,
                 secret=None):
        self.url = url
        self.refresh_min = refresh_min
        self.ca_file = ca_file
        self.allow_http = allow_http
        self.secret = secret      # bytes: authenticates the cache file; None: owner/mode only

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
        secret = (env.get(SECRET_VARIABLE) or "").strip() or None
        if secret is not None and len(secret) < MIN_SECRET_CHARS:
            raise JwtError(INVALID_PARAMETER_VALUE, f"{SECRET_VARIABLE} is too short: use at least "
                           f"{MIN_SECRET_CHARS} random characters (or leave it unset: the "
                           "entrypoint makes one)")
        return cls(url, refresh_min, ca_file, allow_http,
                   None if secret is None else secret.encode("utf-8"))


def check_url(url, allow_http):
    """Refuse URLs the fetcher must not follow; JwtError naming the variable and the fix."""
    from urllib.parse import urlsplit

    def refuse(reason):
        raise JwtError(INVALID_PARAMETER_VALUE, f"{URL_VARIABLE}: {reason}")

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
                   f"issuer's https:// URL, or set {HTTP_VARIABLE}=on for a development stack")
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
            raise FetchError(f"{CA_VARIABLE}={config.ca_file} is not a readable PEM file of CA "
                             f"certificates ({exc})") from None

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            raise FetchError(f"the issuer answered {code} redirecting to {newurl}: set "
                             f"{URL_VARIABLE} to the final URL")

    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect)
    request = urllib.request.Request(config.url, headers={
        "Accept": "application/jwk-set+json, application/json",
        "User-Agent": "pg_session_jwt"})
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
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
                             f"issuer's CA in {CA_VARIABLE}, or fix the URL's host name") from None
        raise FetchError(f"cannot reach the issuer ({reason})", unreachable=True) from None
    except (OSError, ValueError) as exc:  # timeouts while reading, broken connections
        raise FetchError(f"cannot reach the issuer ({exc})", unreachable=True) from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise FetchError(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return body.decode("utf-8"), headers
    except UnicodeDecodeError:
        raise FetchError("the document is not UTF-8 text") from None


def validate(text):
    """The KeySet of a fetched document; FetchError when it is not a usable public JWK Set."""
    try:
        keyset = keys.parse(text)
    except JwtError as exc:
        # keys.parse speaks of "pg_session_jwt.jwk"; here the document is the issuer's.
        raise FetchError("the document is not a usable JWK Set: "
                         + exc.message.replace("pg_session_jwt.jwk is unusable: ", "")) from None
    return keyset


def kids(keyset):
    return sorted(str(key.kid) for key in keyset.keys)


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
        """The document of the file's `text`; ValueError when `secret` is given and the
        file's MAC is missing or wrong."""
        value = json_loads(text)
        if secret is not None:
            import hmac  # only when a file changed, in JWKS mode: not on a new backend's path

            mac = value.get("mac")
            if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(secret, value)):
                raise Unauthenticated
        return cls(value["url"], value["jwks"], float(value["fetched"]), int(value["max_age"]))


class Unauthenticated(ValueError):
    """A cache file without a valid MAC under the configured secret."""


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


class Source:
    """The current key set of a JWKS URL for one process, refreshed through the shared file.

    `clock`, `fetcher` and `directory` are replaceable for tests; `log` receives one line per
    change or failure seen by the process that fetched."""

    def __init__(self, config, directory=RUN_DIR, fetcher=fetch, clock=time.time, log=None):
        self.config = config
        self.cache_path = os.path.join(directory, CACHE_NAME)
        self.lock_path = os.path.join(directory, LOCK_NAME)
        self.fetcher = fetcher
        self.clock = clock
        self.log = log
        self.keyset = None       # the KeySet in use; replaced only when the document changes
        self.document = None
        self._stat = None        # (mtime_ns, size, inode) of the cache file last read
        self._not_before = 0.0   # no refresh attempt from this process before this time

    # Reading the shared file.

    def reload(self):
        """Take the cache file's document if it changed since the last look; True if it did."""
        try:
            st = os.stat(self.cache_path)
        except FileNotFoundError:
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
            with open(self.cache_path, encoding="utf-8") as fh:
                document = Document.from_json(fh.read(), self.config.secret)
        except Unauthenticated:
            self._say(f"pg_session_jwt: ignoring {self.cache_path}: not written by this "
                      f"server ({SECRET_VARIABLE} does not authenticate it)")
            return False
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        if document.url != self.config.url:
            return False  # left by a start with another URL
        if self.document is not None and document.jwks == self.document.jwks:
            self.document = document  # same keys, newer fetch time: keep the parsed set
            return False
        try:
            keyset = validate(document.jwks)
        except FetchError:
            return False
        self.document, self.keyset = document, keyset
        return True

    def current(self, now=None):
        """The KeySet to verify with now; JwtError 02000 when none was ever fetched."""
        now = self.clock() if now is None else now
        self.reload()
        if self.document is None or now >= self.document.expires:
            self.refresh(now)
        if self.keyset is None:
            raise JwtError(NO_DATA, f"no key set from {URL_VARIABLE} ({self.config.url}) yet: "
                           f"{self.last_failure() or 'not fetched'}; the server retries at most "
                           f"every {self.config.refresh_min} s")
        return self.keyset

    def unknown_kid(self, now=None):
        """A token named a kid the set lacks: refresh (rate-limited); True if the set changed."""
        now = self.clock() if now is None else now
        before = self.keyset
        self.reload()
        if self.keyset is before:
            self.refresh(now)
        return self.keyset is not before

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
                      f"set from {URL_VARIABLE} cannot be refreshed")
            self._not_before = now + self.config.refresh_min
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                # Another process is fetching; its result appears in the file.
                self._not_before = now + 1
                return
            attempt = _read_attempt(fd)
            last = attempt.get("attempted", 0.0)
            if now - last < self.config.refresh_min and last <= now:
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
        _write_attempt(fd, {"attempted": now})
        try:
            text, headers = self.fetcher(config)
            keyset = validate(text)
        except FetchError as exc:
            _write_attempt(fd, {"attempted": now, "error": exc.message})
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
            if old is None or document.jwks != self.document.jwks:
                self.keyset = keyset
            self.document = document
        if old is None:
            self._say(f"pg_session_jwt: fetched the key set from {config.url}: kids "
                      f"{', '.join(kids(keyset))}; next refresh in {document.max_age} s")
        elif self.keyset is not old:
            self._say(f"pg_session_jwt: the key set from {config.url} changed: kids "
                      f"{', '.join(kids(keyset))} (were {', '.join(kids(old))})")

    def last_failure(self):
        try:
            with open(self.lock_path, encoding="utf-8") as fh:
                attempt = json_loads(fh.read() or "{}")
        except (OSError, ValueError):
            return None
        error = attempt.get("error") if isinstance(attempt, dict) else None
        return f"the last fetch failed: {error}" if error else None

    def _say(self, message):
        if self.log is not None:
            self.log(message)


def _read_attempt(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        value = json_loads(os.read(fd, 65536).decode("utf-8") or "{}")
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_attempt(fd, value):
    data = json_dumps(value).encode()
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)


def main(argv=None):
    """`python3 -m pg_session_jwt.jwks fetch [--dir DIR]`: the entrypoint's fetch at start.

    Exit 0 when the key set is in the cache file, or when the issuer is unreachable (the
    server starts without keys and refuses tokens until a backend's fetch succeeds); exit 1,
    with a message naming the URL and the fix, when the configuration or the document is wrong.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python3 -m pg_session_jwt.jwks")
    parser.add_argument("command", choices=["fetch"])
    parser.add_argument("--dir", default=RUN_DIR, help="where the cache file is written")
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
    except JwtError as exc:
        print(f"pg-session-jwt: error: {exc.message}", file=sys.stderr)
        return 1
    if config is None:
        return 0
    lines = []
    source = Source(config, directory=args.dir, log=lines.append)
    now = source.clock()
    source.reload()
    try:
        fd = os.open(source.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        print(f"pg-session-jwt: error: cannot write {source.lock_path} ({exc.strerror}): the "
              "run directory must be writable by the server's user", file=sys.stderr)
        return 1
    try:
        try:
            document, keyset = source.fetch_document(fd, now)
        except FetchError as exc:
            if exc.unreachable:
                kept = ("Starting without keys: every token is refused until a fetch succeeds"
                        if source.keyset is None else
                        "Starting with the key set fetched at the previous start (kids "
                        f"{', '.join(kids(source.keyset))})")
                print(f"pg-session-jwt: WARNING: could not fetch the key set from {config.url}: "
                      f"{exc.message}. {kept}; the first backend that needs keys tries again, "
                      f"at most once every {config.refresh_min} s.", file=sys.stderr)
                return 0
            print(f"pg-session-jwt: error: {URL_VARIABLE}={config.url}: {exc.message}",
                  file=sys.stderr)
            return 1
        write_atomically(source.cache_path, document.to_json(config.secret))
    finally:
        os.close(fd)
    print(f"pg-session-jwt: fetched the key set from {config.url} (kids "
          f"{', '.join(kids(keyset))}; refreshed after {document.max_age} s, or on an unknown "
          "kid, at most every " f"{config.refresh_min} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
