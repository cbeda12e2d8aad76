"""The JWKS URL's refresh policy with a fake clock and a fake fetcher, over real files.

Several `Source` objects on one directory stand for several backends of one server.
"""

import json
import os

import pytest
from pg_session_jwt import jwks
from pg_session_jwt.errors import JwtError
from pg_session_jwt.session import Backend

from devtools.jwt import generate_key, public_jwk
from tests.support.jwks_fakes import URL, Clock, Issuer, kids
from tests.support.jws import sign

REAL_SOURCE = jwks.Source


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture(scope="module")
def old_key():
    return generate_key("EdDSA")


@pytest.fixture(scope="module")
def new_key():
    return generate_key("EdDSA")


def backend_source(tmp_path, issuer, clock, refresh_min=60, log=None):
    return jwks.Source(jwks.Config(URL, refresh_min), directory=str(tmp_path), fetcher=issuer,
                       clock=clock, log=log)


def test_first_use_fetches_and_other_backends_read_the_file(tmp_path, clock, old_key):
    issuer = Issuer(old_key)
    lines = []
    first = backend_source(tmp_path, issuer, clock, log=lines.append)
    assert kids(first.current()) == {old_key.get("kid")}
    second = backend_source(tmp_path, issuer, clock, log=lines.append)
    assert kids(second.current()) == {old_key.get("kid")}
    assert issuer.requests == 1
    assert len(lines) == 1 and "fetched the key set" in lines[0]
    mode = os.stat(tmp_path / jwks.CACHE_NAME).st_mode & 0o777
    assert mode == 0o644


def test_stale_document_is_refreshed_by_one_backend(tmp_path, clock, old_key, new_key):
    issuer = Issuer(old_key, headers={"Cache-Control": "public, max-age=120"})
    backends = [backend_source(tmp_path, issuer, clock) for _ in range(5)]
    for backend in backends:
        backend.current()
    assert issuer.requests == 1
    clock.now += 119
    for backend in backends:
        backend.current()
    assert issuer.requests == 1
    issuer.keys = [new_key]
    clock.now += 2
    for backend in backends:
        assert kids(backend.current()) == {new_key.get("kid")}
    assert issuer.requests == 2


def test_unknown_kid_refreshes_at_most_once_per_refresh_min(tmp_path, clock, old_key, new_key):
    issuer = Issuer(old_key)
    lines = []
    backends = [backend_source(tmp_path, issuer, clock, log=lines.append) for _ in range(3)]
    for backend in backends:
        backend.current()
    clock.now += 61
    issuer.keys = [old_key, new_key]
    assert backends[0].unknown_kid() is True
    assert kids(backends[0].keyset) == {old_key.get("kid"), new_key.get("kid")}
    # The others see the new file without fetching.
    assert backends[1].unknown_kid() is True
    assert len(backends[2].current().keys) == 2
    # Made-up kids: no further request within REFRESH_MIN, from any backend.
    for _ in range(20):
        for backend in backends:
            assert backend.unknown_kid() is False
        clock.now += 2
    assert issuer.requests == 2
    clock.now += 60
    assert backends[2].unknown_kid() is False  # fetched again: same document, no change
    assert issuer.requests == 3
    changed = [line for line in lines if "changed" in line]
    assert len(changed) == 1 and new_key.get("kid") in changed[0]


def test_failed_fetch_keeps_the_good_set_and_logs_once_per_attempt(tmp_path, clock, old_key):
    issuer = Issuer(old_key, headers={"Cache-Control": "max-age=60"})
    lines = []
    backends = [backend_source(tmp_path, issuer, clock, log=lines.append) for _ in range(4)]
    good = backends[0].current()
    issuer.failure = jwks.FetchError("cannot reach the issuer (refused)", unreachable=True)
    for _ in range(3600 // 10):  # an hour of traffic, every 10 s, on every backend
        clock.now += 10
        for backend in backends:
            assert kids(backend.current()) == kids(good)
    assert 55 <= issuer.requests <= 61  # one attempt per minute server-wide
    failures = [line for line in lines if "could not refresh" in line]
    assert len(failures) == issuer.requests - 1
    assert "keeping the key set fetched" in failures[-1]


@pytest.mark.parametrize("document, phrase", [
    ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "symmetric"),
    ("<html>login</html>", "not valid JSON"),
    ('{"keys": []}', "non-empty"),
])
def test_bad_document_never_replaces_a_good_set(tmp_path, clock, old_key, document, phrase):
    issuer = Issuer(old_key)
    lines = []
    source = backend_source(tmp_path, issuer, clock, log=lines.append)
    good = source.current()
    issuer.document = document
    clock.now += 700
    assert source.current() is good
    assert issuer.requests == 2
    assert phrase in lines[-1] and "keeping" in lines[-1]
    other = backend_source(tmp_path, issuer, clock)
    assert kids(other.current()) == kids(good)


def test_private_key_document_is_refused(tmp_path, clock, old_key):
    issuer = Issuer()
    issuer.document = json.dumps({"keys": [json.loads(old_key.export_private())]})
    source = backend_source(tmp_path, issuer, clock)
    with pytest.raises(JwtError) as info:
        source.current()
    assert info.value.sqlstate == "02000"
    assert "private key members" in info.value.message


def test_no_set_yet_says_why(tmp_path, clock):
    issuer = Issuer()
    issuer.failure = jwks.FetchError("cannot reach the issuer (timed out)", unreachable=True)
    source = backend_source(tmp_path, issuer, clock)
    with pytest.raises(JwtError) as info:
        source.current()
    assert "timed out" in info.value.message and URL in info.value.message


def test_a_file_from_another_url_or_owner_is_ignored(tmp_path, clock, old_key, new_key):
    path = tmp_path / jwks.CACHE_NAME
    other = jwks.Document("https://elsewhere.example/jwks", json.dumps(
        {"keys": [json.loads(public_jwk(new_key))]}), clock.now, 600)
    path.write_text(other.to_json())
    issuer = Issuer(old_key)
    assert kids(backend_source(tmp_path, issuer, clock).current()) == {old_key.get("kid")}
    assert issuer.requests == 1
    # Writable by others: someone else could have put their key there.
    mine = jwks.Document(URL, other.jwks, clock.now, 600)
    path.write_text(mine.to_json())
    os.chmod(path, 0o666)
    source = backend_source(tmp_path, Issuer(old_key), clock)
    assert source.reload() is False and source.keyset is None


@pytest.mark.parametrize("headers, expected", [
    ({"Cache-Control": "max-age=600"}, 600),
    ({"Cache-Control": "public, MAX-AGE=\"900\", must-revalidate"}, 900),
    ({"Cache-Control": "max-age=5"}, 60),            # below REFRESH_MIN
    ({"Cache-Control": "max-age=9999999"}, 86400),   # capped at a day
    ({"Cache-Control": "no-cache"}, 60),
    ({"Cache-Control": "no-store, max-age=600"}, 60),
    ({"Cache-Control": "max-age=abc"}, jwks.DEFAULT_MAX_AGE),
    ({}, jwks.DEFAULT_MAX_AGE),
    ({"Expires": "Thu, 15 Jan 2027 08:00:00 GMT"}, 1800),
    ({"Expires": "0"}, 60),
    ({"Cache-Control": "max-age=300", "Expires": "Thu, 15 Jan 2027 08:00:00 GMT"}, 300),
])
def test_cache_control(headers, expected):
    now = 1_800_000_000 - 1800 + 0  # 2027-01-15 08:00:00 UTC is 1800000000
    assert jwks.max_age(headers, now, 60) == expected


@pytest.mark.parametrize("env, phrase", [
    ({jwks.URL_VARIABLE: "http://issuer.example/jwks"}, "PG_SESSION_JWT_JWKS_ALLOW_HTTP=on"),
    ({jwks.URL_VARIABLE: "file:///etc/passwd"}, "scheme 'file'"),
    ({jwks.URL_VARIABLE: "issuer.example/jwks"}, "scheme '(none)'"),
    ({jwks.URL_VARIABLE: "https:///jwks"}, "no host name"),
    ({jwks.URL_VARIABLE: "https://issuer.example/a b"}, "without spaces"),
    ({jwks.URL_VARIABLE: "https://issuer.example:99999/"}, "not a valid URL"),
    ({jwks.URL_VARIABLE: URL, jwks.REFRESH_VARIABLE: "0"}, "from 1 to 86400"),
    ({jwks.URL_VARIABLE: URL, jwks.REFRESH_VARIABLE: "1m"}, "whole number of seconds"),
    ({jwks.URL_VARIABLE: URL, jwks.HTTP_VARIABLE: "maybe"}, "must be on or off"),
    ({jwks.URL_VARIABLE: URL, jwks.CA_VARIABLE: "/nonexistent/ca.pem"}, "no such file"),
])
def test_bad_configuration_names_the_variable_and_the_fix(env, phrase):
    with pytest.raises(JwtError) as info:
        jwks.Config.from_env(env)
    assert phrase in info.value.message
    assert "PG_SESSION_JWT_JWKS" in info.value.message


def test_configuration():
    assert jwks.Config.from_env({}) is None
    config = jwks.Config.from_env({jwks.URL_VARIABLE: "http://tokens:8080/jwks",
                                   jwks.HTTP_VARIABLE: "on", jwks.REFRESH_VARIABLE: "5"})
    assert (config.url, config.refresh_min, config.allow_http) == ("http://tokens:8080/jwks", 5, True)


# The backend's use of the source: defaults, the audience rule, rotation and the cache.

def settings(**values):
    base = {"jwk": None, "audience": "app", "issuer": None, "leeway": "60", "require_jti": None,
            "audit_log": "off", "max_token_bytes": "16384"}
    base.update(values)
    return base


def backend(tmp_path, issuer, clock, monkeypatch, values=None, **env):
    environ = {jwks.URL_VARIABLE: URL, **env}
    state = Backend(environ)
    def source(config, log=None):
        return REAL_SOURCE(config, directory=str(tmp_path), fetcher=issuer, clock=clock, log=log)

    monkeypatch.setattr(jwks, "Source", source)
    state.configure(values or settings())
    return state


def token(key, clock, **claims):
    body = {"sub": "alice", "aud": "app", "exp": int(clock.now) + 900, **claims}
    return sign(key, body, header={"alg": "EdDSA", "kid": key.get("kid")})


def test_jwks_url_turns_require_jti_off_unless_set(tmp_path, clock, monkeypatch, old_key):
    issuer = Issuer(old_key)
    assert backend(tmp_path, issuer, clock, monkeypatch).settings.require_jti is False
    state = backend(tmp_path, issuer, clock, monkeypatch, settings(require_jti="on"))
    assert state.settings.require_jti is True


def test_jwks_url_without_audience_is_refused(tmp_path, clock, monkeypatch, old_key):
    issuer = Issuer(old_key)
    state = backend(tmp_path, issuer, clock, monkeypatch, settings(audience=None))
    with pytest.raises(JwtError) as info:
        state.verify(token(old_key, clock), clock.now)
    assert "PG_SESSION_JWT_AUDIENCE" in info.value.message
    assert issuer.requests == 0
    state = backend(tmp_path, issuer, clock, monkeypatch, settings(audience=None),
                    PG_SESSION_JWT_ALLOW_ANY_AUDIENCE="on")
    assert state.verify(token(old_key, clock), clock.now).sub == "alice"


def test_rotation_through_the_backend(tmp_path, clock, monkeypatch, old_key, new_key):
    issuer = Issuer(old_key)
    state = backend(tmp_path, issuer, clock, monkeypatch)
    old_token = token(old_key, clock)
    assert state.verify(old_token, clock.now).sub == "alice"
    # The issuer rotates; a token of the new key triggers the refresh and is accepted.
    issuer.keys = [new_key]
    clock.now += 61
    new_token = token(new_key, clock, sub="bob")
    assert state.verify(new_token, clock.now).sub == "bob"
    # The retired key's token was cached, but under the old set: verified again, refused.
    with pytest.raises(JwtError) as info:
        state.verify(old_token, clock.now)
    assert "matches no key" in info.value.message


def test_made_up_kids_do_not_fetch_more_than_once_per_refresh_min(tmp_path, clock, monkeypatch,
                                                                  old_key):
    issuer = Issuer(old_key)
    state = backend(tmp_path, issuer, clock, monkeypatch)
    stranger = generate_key("EdDSA")
    for i in range(130):  # a made-up kid every second for 130 s
        with pytest.raises(JwtError) as info:
            state.verify(token(stranger, clock, jti=str(i)), clock.now)
        assert "matches no key" in info.value.message
        clock.now += 1
    assert issuer.requests == 3  # the first fetch, then one per REFRESH_MIN (60 s)


# The real fetcher and the entrypoint's command, against an HTTP server on 127.0.0.1.

@pytest.fixture()
def local_issuer(old_key):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = {"status": 200, "body": json.dumps({"keys": [json.loads(public_jwk(old_key))]}),
             "headers": {"Cache-Control": "max-age=120"}, "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            state["hits"] += 1
            body = state["body"].encode()
            self.send_response(state["status"])
            for name, value in state["headers"].items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
    yield state
    httpd.shutdown()
    httpd.server_close()


def run_main(monkeypatch, tmp_path, url, **env):
    for name in (jwks.URL_VARIABLE, jwks.HTTP_VARIABLE, jwks.REFRESH_VARIABLE, jwks.CA_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(jwks.URL_VARIABLE, url)
    monkeypatch.setenv(jwks.HTTP_VARIABLE, "on")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return jwks.main(["fetch", "--dir", str(tmp_path)])


def test_entrypoint_fetch_writes_the_cache_file(monkeypatch, tmp_path, capsys, local_issuer,
                                                 old_key):
    assert run_main(monkeypatch, tmp_path, local_issuer["url"]) == 0
    assert old_key.get("kid") in capsys.readouterr().out
    document = jwks.Document.from_json((tmp_path / jwks.CACHE_NAME).read_text())
    assert document.url == local_issuer["url"] and document.max_age == 120
    source = jwks.Source(jwks.Config(local_issuer["url"], allow_http=True), str(tmp_path))
    assert kids(source.current()) == {old_key.get("kid")}
    assert local_issuer["hits"] == 1


@pytest.mark.parametrize("status, body, headers, code, phrase", [
    (503, "busy", {}, 0, "Starting without keys"),
    (404, "no", {}, 1, "HTTP 404"),
    (302, "", {"Location": "https://elsewhere.example/jwks.json"}, 1, "redirecting"),
    (200, "<html>sign in</html>", {}, 1, "not a usable JWK Set"),
    (200, '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', {}, 1, "symmetric"),
])
def test_entrypoint_fetch_failures(monkeypatch, tmp_path, capsys, local_issuer, status, body,
                                   headers, code, phrase):
    local_issuer.update(status=status, body=body, headers=headers)
    assert run_main(monkeypatch, tmp_path, local_issuer["url"]) == code
    err = capsys.readouterr().err
    assert phrase in err and local_issuer["url"] in err
    assert not (tmp_path / jwks.CACHE_NAME).exists()


def test_entrypoint_fetch_keeps_the_previous_starts_set(monkeypatch, tmp_path, capsys,
                                                        local_issuer, old_key):
    assert run_main(monkeypatch, tmp_path, local_issuer["url"]) == 0
    local_issuer.update(status=500, body="down")
    assert run_main(monkeypatch, tmp_path, local_issuer["url"]) == 0
    assert "Starting with the key set fetched at the previous start" in capsys.readouterr().err
    source = jwks.Source(jwks.Config(local_issuer["url"], allow_http=True), str(tmp_path))
    assert kids(source.current()) == {old_key.get("kid")}


def test_unreachable_port_is_unreachable(monkeypatch, tmp_path, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert run_main(monkeypatch, tmp_path, f"http://127.0.0.1:{port}/jwks.json") == 0
    assert "cannot reach the issuer" in capsys.readouterr().err


def test_request_claims_are_not_trusted_with_a_jwks_url(tmp_path, clock, monkeypatch, old_key):
    state = backend(tmp_path, Issuer(old_key), clock, monkeypatch)
    assert state.lookup(None, '{"sub": "mallory"}', clock.now, lambda: 0) is None


def test_unwritable_run_directory_still_serves_this_backend(tmp_path, clock, old_key):
    issuer = Issuer(old_key)
    lines = []
    source = backend_source(tmp_path, issuer, clock, log=lines.append)
    source.cache_path = str(tmp_path / "missing-dir" / jwks.CACHE_NAME)
    assert kids(source.current()) == {old_key.get("kid")}
    assert "cannot write" in lines[0]


def test_an_issuer_that_sends_its_document_slowly_is_cut_off(monkeypatch):
    """Each read has the socket's timeout; the whole body has one too, so an issuer
    dribbling a byte at a time cannot hold the refreshing backend."""
    clock = [0.0]
    monkeypatch.setattr(jwks.time, "monotonic", lambda: clock[0])

    class Dribble:
        def read1(self, size):
            clock[0] += 1.0   # a byte a second, each read well within the socket timeout
            return b"{"

    with pytest.raises(jwks.FetchError, match=f"within {jwks.TIMEOUT} s"):
        jwks._read_by(Dribble(), clock[0] + jwks.TIMEOUT)

    class Whole:
        def __init__(self):
            self.parts = [b'{"keys": ', b"[]}"]

        def read1(self, size):
            return self.parts.pop(0) if self.parts else b""

    assert jwks._read_by(Whole(), clock[0] + jwks.TIMEOUT) == b'{"keys": []}'
