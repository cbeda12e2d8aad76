"""The compose stack's development token issuer (devtools/issuer.py), in process."""

import json
import os
import stat
import threading
import urllib.error
import urllib.request

import pytest
from jwcrypto import jwk, jws

from devtools import issuer as server
from devtools.jwt import generate_key
from runtime.errors import UserError


def payload(token, key):
    verifier = jws.JWS()
    verifier.deserialize(token)
    verifier.verify(key)
    return json.loads(verifier.payload)


def test_key_is_made_once_private_and_then_reused(tmp_path):
    key = server.load_or_create_key(tmp_path, "ES256")
    path = tmp_path / "private.jwk.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert key.get("alg") == "ES256"
    again = server.load_or_create_key(tmp_path, "EdDSA")  # an existing key wins
    assert again.thumbprint() == key.thumbprint()


def test_publish_writes_public_jwk_and_jwks(tmp_path, keys):
    server.publish(tmp_path, keys["EdDSA"])
    public = json.loads((tmp_path / "jwk.json").read_text())
    assert "d" not in public and public["kid"] == keys["EdDSA"].get("kid")
    assert json.loads((tmp_path / "jwks.json").read_text()) == {"keys": [public]}
    assert stat.S_IMODE(os.stat(tmp_path / "jwk.json").st_mode) == 0o644


def test_token_for_sub_ttl_and_extra_claims(keys):
    key = keys["EdDSA"]
    claims = payload(server.token_for(key, "sub=alice&ttl=2m&role=admin&n=3"), key)
    assert claims["sub"] == "alice" and claims["iss"] == server.ISSUER
    assert claims["exp"] - claims["iat"] == 120
    assert claims["role"] == "admin" and claims["n"] == 3


def test_token_for_default_ttl_and_increasing_jti(keys):
    key = keys["EdDSA"]
    first, second = (payload(server.token_for(key, "sub=bob"), key) for _ in range(2))
    assert first["exp"] - first["iat"] == server.DEFAULT_TTL
    assert second["jti"] > first["jti"]


@pytest.mark.parametrize("query,message", [
    ("", "missing sub"), ("sub=", "missing sub"), ("sub=a&ttl=later", "invalid ttl 'later'"),
    ("sub=a&=x", "invalid claim"),
])
def test_token_for_refuses_bad_queries(keys, query, message):
    with pytest.raises(UserError, match=message):
        server.token_for(keys["EdDSA"], query)


@pytest.fixture
def running(keys):
    httpd = server.ThreadingHTTPServer(("127.0.0.1", 0), server.make_handler(server.KeyRing(keys["EdDSA"])))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read().decode()


def test_http_endpoints(running, keys):
    key = keys["EdDSA"]
    status, headers, body = get(f"{running}/token?sub=alice")
    assert status == 200 and headers["X-Development-Only"]
    assert payload(body.strip(), key)["sub"] == "alice"
    status, headers, body = get(f"{running}/jwk")
    assert headers["Content-Type"] == "application/jwk+json"
    assert jwk.JWK.from_json(body).thumbprint() == key.thumbprint()
    status, _, body = get(f"{running}/.well-known/jwks.json")
    assert [k["kid"] for k in json.loads(body)["keys"]] == [key.get("kid")]
    assert get(f"{running}/healthz")[:1] == (200,)
    status, _, body = get(f"{running}/")
    assert status == 200 and "DEVELOPMENT" in body


def test_http_errors(running):
    status, _, body = get(f"{running}/token")
    assert status == 400 and body.startswith("error: missing sub")
    status, _, body = get(f"{running}/nope")
    assert status == 404 and "/token?sub=alice" in body


def post(url):
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def published_kids(base):
    status, headers, body = get(f"{base}/.well-known/jwks.json")
    assert status == 200 and headers["Cache-Control"] == f"public, max-age={server.JWKS_MAX_AGE}"
    return [k["kid"] for k in json.loads(body)["keys"]]


@pytest.fixture
def ring_server(tmp_path):
    clock = [1_800_000_000.0]
    key = generate_key("ES256")
    ring = server.KeyRing(key, tmp_path / "key", tmp_path / "public", clock=lambda: clock[0])
    (tmp_path / "key").mkdir()
    (tmp_path / "public").mkdir()
    httpd = server.ThreadingHTTPServer(("127.0.0.1", 0), server.make_handler(ring))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", ring, clock, tmp_path
    httpd.shutdown()
    httpd.server_close()


def test_rotate_retires_the_old_key_at_once_by_default(ring_server):
    base, ring, _, tmp_path = ring_server
    old = ring.key.get("kid")
    status, body = post(f"{base}/rotate")
    answer = json.loads(body)
    assert status == 200 and answer["retired"] == old and answer["published"] == [answer["kid"]]
    assert published_kids(base) == [answer["kid"]]
    token = get(f"{base}/token?sub=alice")[2].strip()
    assert jws.JWS.from_jose_token(token).jose_header["kid"] == answer["kid"]
    assert payload(token, ring.key)["sub"] == "alice"
    assert jwk.JWK.from_json((tmp_path / "key" / "private.jwk.json").read_text()).get("kid") \
        == answer["kid"]
    assert [k["kid"] for k in json.loads((tmp_path / "public" / "jwks.json").read_text())["keys"]] \
        == [answer["kid"]]


def test_rotate_with_grace_keeps_the_old_key_published_until_it_ends(ring_server):
    base, ring, clock, _ = ring_server
    old = ring.key.get("kid")
    status, body = post(f"{base}/rotate?grace=5m")
    new = json.loads(body)["kid"]
    assert published_kids(base) == [new, old]
    clock[0] += 299
    assert published_kids(base) == [new, old]
    clock[0] += 2
    assert published_kids(base) == [new]


@pytest.mark.parametrize("query, message", [("grace=soon", "invalid grace"),
                                            ("grace=2d", "over a day")])
def test_rotate_refuses_bad_grace(ring_server, query, message):
    base, ring, _, _ = ring_server
    old = ring.key.get("kid")
    status, body = post(f"{base}/rotate?{query}")
    assert status == 400 and message in body
    assert ring.key.get("kid") == old
    assert post(f"{base}/elsewhere")[0] == 404
