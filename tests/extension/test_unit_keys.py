"""pg_session_jwt.jwk parsing: public asymmetric keys only, JWKS with kid selection."""

import json

import pytest
from jwcrypto import jwk
from pg_session_jwt import keys
from pg_session_jwt.errors import JwtError

from devtools.jwt import ALGORITHMS, generate_key, public_jwk


def refused(text, sqlstate="42804"):
    with pytest.raises(JwtError) as info:
        keys.parse(text)
    assert info.value.sqlstate == sqlstate
    return info.value.message


def public(key, **changes):
    value = json.loads(public_jwk(key))
    value.update(changes)
    return {k: v for k, v in value.items() if v is not None}


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_each_algorithm_key_parses_to_its_own_alg(signing_keys, alg):
    keyset = keys.parse(public_jwk(signing_keys[alg]))
    assert list(keyset.keys[0].verifiers) == [alg]


def test_key_without_alg_allows_every_algorithm_of_its_type(signing_keys):
    rsa = keys.parse(json.dumps(public(signing_keys["RS256"], alg=None))).keys[0]
    assert set(rsa.verifiers) == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    okp = keys.parse(json.dumps(public(signing_keys["EdDSA"], alg=None))).keys[0]
    assert set(okp.verifiers) == {"EdDSA", "Ed25519"}
    ec = keys.parse(json.dumps(public(signing_keys["ES384"], alg=None))).keys[0]
    assert set(ec.verifiers) == {"ES384"}


def test_symmetric_key_is_refused_with_the_reason():
    secret = jwk.JWK.generate(kty="oct", size=256)
    message = refused(secret.export())
    assert "symmetric" in message and "oct" in message
    assert secret.get("k") not in message


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_private_key_is_refused_without_echoing_it(signing_keys, alg):
    private = json.loads(signing_keys[alg].export_private())
    message = refused(json.dumps(private))
    assert "private" in message
    for name in ("d", "p", "q", "x", "n"):
        if name in private:
            assert private[name] not in message


def test_rsa_under_2048_bits_is_refused():
    small = jwk.JWK.generate(kty="RSA", size=1024)
    assert "2048" in refused(small.export_public())


@pytest.mark.parametrize("changes, phrase", [
    ({"use": "enc"}, '"use"'),
    ({"key_ops": ["encrypt"]}, "key_ops"),
    ({"key_ops": "verify"}, "key_ops"),
    ({"alg": "RS256"}, "cannot verify"),     # an Ed25519 key claiming RS256
    ({"alg": "HS256"}, "cannot verify"),
    ({"kid": 7}, "kid"),
    ({"crv": "Ed448"}, "Ed25519"),
    ({"kty": "XYZ"}, "kty"),
    ({"x": "AAAA"}, "32 bytes"),
    ({"x": "not base64!"}, "base64url"),
    ({"x": None}, '"x"'),
])
def test_unusable_okp_key_members(signing_keys, changes, phrase):
    assert phrase in refused(json.dumps(public(signing_keys["EdDSA"], **changes)))


def test_ec_point_off_the_curve_is_refused(signing_keys):
    key = public(signing_keys["ES256"])
    key["y"] = key["x"]
    assert "not a valid EC public key" in refused(json.dumps(key))


@pytest.mark.parametrize("changes, phrase", [
    ({"x": "AAAA"}, "bytes each"),
    ({"crv": "P-192"}, "P-256, P-384 or P-521"),
    ({"y": None}, '"y"'),
])
def test_unusable_ec_key_members(signing_keys, changes, phrase):
    assert phrase in refused(json.dumps(public(signing_keys["ES256"], **changes)))


def test_ec_key_alg_must_match_its_curve(signing_keys):
    assert "cannot verify" in refused(json.dumps(public(signing_keys["ES256"], alg="ES384")))


@pytest.mark.parametrize("text, phrase", [
    ("", "not valid JSON"),
    ("not json", "not valid JSON"),
    ("[]", "JSON object"),
    ('{"keys": []}', "non-empty"),
    ('{"keys": [1]}', "not a JSON object"),
])
def test_unusable_setting_text(text, phrase):
    assert phrase in refused(text)


def test_jwks_selects_by_kid():
    old, new = generate_key("ES256", kid="2025"), generate_key("EdDSA", kid="2026")
    keyset = keys.parse(json.dumps({"keys": [public(old), public(new)]}))
    assert list(keyset.select("2025").verifiers) == ["ES256"]
    assert list(keyset.select("2026").verifiers) == ["EdDSA"]
    with pytest.raises(JwtError) as info:
        keyset.select("2024")
    assert info.value.sqlstate == "23514" and "'2024'" in info.value.message
    with pytest.raises(JwtError) as info:
        keyset.select(None)
    assert info.value.sqlstate == "23514" and "kid" in info.value.message


def test_jwks_needs_distinct_kids():
    a, b = generate_key("EdDSA", kid="same"), generate_key("EdDSA", kid="same")
    assert "same \"kid\"" in refused(json.dumps({"keys": [public(a), public(b)]}))
    assert "needs a \"kid\"" in refused(json.dumps({"keys": [public(a), public(b, kid=None)]}))


def test_single_key_kid_rules(signing_keys):
    with_kid = keys.parse(json.dumps(public(signing_keys["EdDSA"], kid="k1")))
    assert with_kid.select("k1") is with_kid.select(None)
    with pytest.raises(JwtError):
        with_kid.select("k2")
    without_kid = keys.parse(json.dumps(public(signing_keys["EdDSA"], kid=None)))
    assert without_kid.select("anything") is without_kid.keys[0]
