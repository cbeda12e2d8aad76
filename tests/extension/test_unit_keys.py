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


# --- sets as identity providers publish them: unusable keys skipped, with the reason -----

def _skipped_members(signing_keys):
    """Keys a provider publishes beside its signing keys, each with the reason it is skipped."""
    rsa, small = public(signing_keys["RS256"]), jwk.JWK.generate(kty="RSA", size=1024)
    return [
        ({**rsa, "kid": "enc", "use": "enc", "alg": "RSA-OAEP"}, "is an encryption key"),
        ({**rsa, "kid": "oaep", "alg": "RSA-OAEP-256"}, "is an encryption key"),
        ({**public(signing_keys["ES256"]), "kid": "ecdh", "alg": "ECDH-ES"}, "encryption key"),
        ({**rsa, "kid": "wrap", "use": "wrap"}, '"use" other than "sig"'),
        ({**rsa, "kid": "ops", "key_ops": ["encrypt"]}, '"key_ops" without "verify"'),
        ({**rsa, "kid": "hs", "alg": "HS256"}, "cannot verify"),
        ({"kty": "OKP", "crv": "Ed448", "x": "A" * 76, "kid": "ed448"}, "crv 'Ed448'"),
        ({"kty": "OKP", "crv": "X25519", "x": "A" * 43, "kid": "x25519"}, "crv 'X25519'"),
        ({"kty": "EC", "crv": "secp256k1", "x": "A" * 43, "y": "A" * 43, "kid": "k1"},
         "crv 'secp256k1'"),
        ({**json.loads(small.export_public()), "kid": "rsa1024"}, "at least 2048 bits"),
        ({"kty": "XYZ", "kid": "future"}, "kty 'XYZ'"),
        ({**rsa, "kid": "broken", "n": "not base64!"}, "base64url"),
    ]


def test_a_set_keeps_its_signing_keys_and_names_each_skipped_one(signing_keys):
    good = public(signing_keys["ES256"], kid="sig")
    # Members the extension does not use are ignored, as providers publish them.
    good.update({"x5c": ["MIIB"], "x5t": "abc", "x5t#S256": "def", "ext": True,
                 "issuer": "https://login.example/{tenantid}/v2.0", "cloud_instance_name": "x"})
    skipped = _skipped_members(signing_keys)
    keyset = keys.parse(json.dumps({"keys": [m for m, _ in skipped] + [good]}))
    assert [key.kid for key in keyset.keys] == ["sig"]
    assert [kid for kid, _ in keyset.skipped] == [m["kid"] for m, _ in skipped]
    for (kid, reason), (_, phrase) in zip(keyset.skipped, skipped, strict=True):
        assert phrase in reason, (kid, reason)
        assert f"kid {kid!r} {reason}" in keyset.skipped_text()


def test_a_token_naming_a_skipped_key_is_told_why(signing_keys):
    rsa = public(signing_keys["RS256"])
    keyset = keys.parse(json.dumps({"keys": [{**rsa, "kid": "enc", "use": "enc"},
                                             public(signing_keys["EdDSA"], kid="sig")]}))
    with pytest.raises(JwtError) as info:
        keyset.select("enc")
    assert not isinstance(info.value, keys.UnknownKid)
    assert "JWT 'kid' 'enc' is an encryption key" in info.value.message
    with pytest.raises(keys.UnknownKid):
        keyset.select("nobody")


def test_a_set_with_no_usable_key_left_is_refused_naming_every_reason(signing_keys):
    skipped = _skipped_members(signing_keys)
    message = refused(json.dumps({"keys": [m for m, _ in skipped]}))
    assert "no key of the JWKS can verify" in message
    for member, phrase in skipped:
        assert f"kid {member['kid']!r}" in message and phrase in message


@pytest.mark.parametrize("bad", ["oct", "private"])
def test_one_symmetric_or_private_key_refuses_the_whole_set(signing_keys, bad):
    secret = ({"kty": "oct", "k": "c2VjcmV0", "kid": "s"} if bad == "oct"
              else {**json.loads(signing_keys["ES256"].export_private()), "kid": "p"})
    good = public(signing_keys["EdDSA"], kid="sig")
    assert bad in refused(json.dumps({"keys": [good, secret]})).replace("symmetric", "oct")


def test_a_skipped_key_may_share_a_kid_with_a_signing_key(signing_keys):
    """Keycloak names its enc key separately, but a set may reuse a kid across uses."""
    rsa = public(signing_keys["RS256"], kid="same")
    keyset = keys.parse(json.dumps({"keys": [{**rsa, "use": "enc"}, rsa]}))
    assert keyset.select("same") is keyset.keys[0] and keyset.skipped == ()


# --- any document in: a usable set or a clean refusal, never an exception ------------------

def _json_values():
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                        st.sampled_from(["sig", "enc", "RSA", "EC", "OKP", "oct", "P-256",
                                         "Ed25519", "RS256", "RSA-OAEP", "verify", "AQAB"]))
    names = st.sampled_from(["kty", "use", "alg", "kid", "crv", "x", "y", "n", "e", "key_ops",
                             "d", "keys", "x5c", "issuer"])
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(names, st.text(max_size=5)),
                                                     inner, max_size=6)), max_leaves=20)


def _members(signing_keys):
    from hypothesis import strategies as st

    real = [public(k, kid=f"k{i}") for i, k in enumerate(signing_keys.values())]
    return st.one_of(st.sampled_from(real), _json_values(),
                     st.builds(lambda key, extra: {**key, **extra}, st.sampled_from(real),
                               st.dictionaries(st.sampled_from(["use", "alg", "key_ops", "kid",
                                                                "crv", "kty"]), _json_values(),
                                               max_size=2)))


def test_any_document_gives_a_usable_set_or_a_clean_refusal(signing_keys):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(_json_values(),
                     st.builds(lambda members: {"keys": members},
                               st.lists(_members(signing_keys), max_size=5))),
           st.booleans())
    def check(document, as_text):
        text = json.dumps(document) if as_text else json.dumps(document)[:-1]
        try:
            keyset = keys.parse(text)
        except JwtError as exc:
            assert exc.sqlstate == "42804" and exc.message.startswith("pg_session_jwt.jwk ")
            return
        assert keyset.keys and all(key.verifiers for key in keyset.keys)
        for key in keyset.keys:
            assert set(key.verifiers) <= keys.ALGORITHMS
        keyset.skipped_text()

    check()
