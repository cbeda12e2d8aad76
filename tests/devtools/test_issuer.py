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
    httpd = server.ThreadingHTTPServer(("127.0.0.1", 0), server.make_handler(keys["EdDSA"]))
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
