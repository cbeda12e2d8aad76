"""Compact JWS verification: every algorithm, and hostile tokens refused with a SQLSTATE."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jwk
from pg_session_jwt import keys, token
from pg_session_jwt.errors import JwtError

from devtools.jwt import ALGORITHMS, generate_key, mint, public_jwk
from tests.support.jws import b64, claims, sign, unsigned

LIMIT = 16384


def keyset(key):
    return keys.parse(public_jwk(key))


def refused(text, keyset_, sqlstate, phrase, limit=LIMIT):
    with pytest.raises(JwtError) as info:
        token.verify(text, keyset_, limit)
    assert info.value.sqlstate == sqlstate
    assert phrase in info.value.message
    return info.value.message


@pytest.fixture(scope="module")
def ed():
    return generate_key("EdDSA")


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_each_algorithm_verifies_tokens_minted_by_jwcrypto(signing_keys, alg):
    key = signing_keys[alg]
    payload, text = token.verify(mint(key, sub="alice"), keyset(key), LIMIT)
    assert payload["sub"] == "alice" and json.loads(text) == payload


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_each_algorithm_refuses_a_signature_by_another_key(alg):
    ours, theirs = generate_key(alg, kid="k"), generate_key(alg, kid="k")
    refused(mint(theirs, sub="mallory"), keyset(ours), "23514", "invalid JWT signature")


def test_rsa_key_verifies_pss_and_pkcs1_when_it_does_not_pin_alg():
    key = generate_key("RS256")
    unpinned = json.loads(public_jwk(key))
    del unpinned["alg"]
    ks = keys.parse(json.dumps(unpinned))
    for alg in ("RS256", "RS512", "PS256", "PS384"):
        assert token.verify(sign(key, claims(), alg=alg), ks, LIMIT)[0]["sub"] == "alice"


def test_key_alg_member_is_enforced():
    key = generate_key("RS256")
    refused(sign(key, claims(), alg="PS256"), keyset(key), "23514", "does not match the key")


def test_jwks_rotation_picks_the_key_named_by_kid():
    old, new = generate_key("ES256", kid="old"), generate_key("EdDSA", kid="new")
    ks = keys.parse(json.dumps({"keys": [json.loads(public_jwk(k)) for k in (old, new)]}))
    assert token.verify(mint(old, sub="a"), ks, LIMIT)[0]["sub"] == "a"
    assert token.verify(mint(new, sub="b"), ks, LIMIT)[0]["sub"] == "b"
    stranger = generate_key("EdDSA", kid="stranger")
    refused(mint(stranger, sub="m"), ks, "23514", "matches no key")
    # A token that names a known kid but is signed by another key.
    refused(mint(stranger, sub="m", header={"kid": "new"}), ks, "23514", "invalid JWT signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_case_is_refused(ed, alg):
    text = unsigned({"alg": alg, "typ": "JWT"}, claims())
    refused(text, keyset(ed), "42804", "'none' is refused")
    refused(text + "AAAA", keyset(ed), "42804", "'none' is refused")


@pytest.mark.parametrize("public_form", ["jwk", "pem"])
def test_hs256_signed_with_the_public_key_bytes_is_refused(public_form):
    rsa = generate_key("RS256")
    secret = public_jwk(rsa).encode() if public_form == "jwk" else rsa.export_to_pem()
    hmac_key = jwk.JWK(kty="oct", k=b64(secret))
    text = sign(hmac_key, claims(), alg="HS256")
    refused(text, keyset(rsa), "42804", "'HS256' is not supported")


@pytest.mark.parametrize("alg", ["HS256", "HS512", "RSA-OAEP", "ES256K", "Ed448", "", "x" * 100])
def test_other_algorithms_are_refused(ed, alg):
    message = refused(unsigned({"alg": alg}, claims(), b"sig"), keyset(ed), "42804", "not supported")
    assert "x" * 100 not in message


def test_alg_not_matching_the_key_type_is_refused():
    es, ed = generate_key("ES256", kid="k"), generate_key("EdDSA", kid="k")
    refused(mint(es, sub="a"), keyset(ed), "23514", "does not match the key")


@pytest.mark.parametrize("count", [1, 2, 4, 6])
def test_wrong_number_of_parts_is_refused(ed, count):
    parts = mint(ed, sub="a").split(".") + ["AAAA"] * 3
    refused(".".join(parts[:count]), keyset(ed), "42804", "invalid JWT encoding")


def test_five_parts_jwe_is_refused_before_decoding(ed):
    jwe_like = ".".join(["eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ", "", "!!!", "@@@", "###"])
    refused(jwe_like, keyset(ed), "42804", "(JWE) are not supported")


@pytest.mark.parametrize("mutate", [
    lambda h, p, s: (h + "=", p, s),                       # padding
    lambda h, p, s: (h, p + "==", s),
    lambda h, p, s: (h, p, s + "="),
    lambda h, p, s: (h, " " + p, s),                       # whitespace
    lambda h, p, s: (h, p, s[:-1] + "\n" + s[-1]),
    lambda h, p, s: (h.replace("_", "/").replace("-", "+") + "+/", p, s),   # standard alphabet
    lambda h, p, s: (h, p, s + "AAA"),                     # impossible length
])
def test_non_canonical_base64_is_refused(ed, mutate):
    text = ".".join(mutate(*mint(ed, sub="a").split(".")))
    refused(text, keyset(ed), "42804", "invalid JWT encoding")


def test_non_zero_trailing_bits_are_refused(ed):
    h, p, s = mint(ed, sub="a").split(".")
    # Ed25519 signatures are 64 bytes: 86 characters, the last one carrying 2 spare bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(s[-1]) | 1]
    assert twin != s[-1]
    refused(f"{h}.{p}.{s[:-1]}{twin}", keyset(ed), "42804", "not canonical")


def test_non_ascii_token_is_refused(ed):
    refused(mint(ed, sub="a") + "é", keyset(ed), "42804", "invalid JWT encoding")


@pytest.mark.parametrize("header", [b'{"alg": "EdDSA"', b"\xff\xfe", b"[1]", b'"EdDSA"',
                                    b'{"alg": "EdDSA", "alg": "none"}', b"[" * 50_000])
def test_unparsable_header_is_refused(ed, header):
    refused(unsigned(header, claims(), b"x" * 64), keyset(ed), "42804",
            "could not parse JWT component (header)", limit=10**6)


@pytest.mark.parametrize("payload", [
    b"\xff\xfe{}", b'{"sub": "a", "sub": "b"}', b"[1]", b"null", b'{"exp": NaN}',
    b'{"exp": 1e400}', b'{"exp": Infinity}', b"[" * 5000 + b"]" * 5000,
])
def test_signed_but_unparsable_payload_is_refused(ed, payload):
    refused(sign(ed, payload), keyset(ed), "42804", "could not parse JWT component (payload)")


def test_deeply_nested_payload_is_refused_not_crashing(ed):
    deep = b"[" * 200_000 + b"]" * 200_000
    refused(sign(ed, deep), keyset(ed), "42804", "could not parse JWT component", limit=10**7)


def test_oversized_token_is_refused_before_parsing(ed):
    big = mint(ed, claims={"pad": "x" * 20_000}, sub="a")
    refused(big, keyset(ed), "54000", "max_token_bytes")
    refused("!" * (LIMIT + 1), keyset(ed), "54000", "max_token_bytes")
    assert token.verify(big, keyset(ed), 10**6)[0]["sub"] == "a"


def test_crit_header_is_refused_even_when_signed(ed):
    text = sign(ed, claims(), header={"alg": "EdDSA", "crit": ["exp"], "exp": 1})
    refused(text, keyset(ed), "42804", "'crit' is refused")


@pytest.mark.parametrize("name, value", [
    ("jwk", {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43}),
    ("jku", "https://attacker.example/jwks.json"),
    ("x5u", "https://attacker.example/cert.pem"),
    ("x5c", ["MIIB"]),
])
def test_embedded_key_headers_are_refused_even_when_signed(name, value):
    attacker = generate_key("EdDSA")
    header = {"alg": "EdDSA", name: value}
    if name == "jwk":
        header[name] = json.loads(public_jwk(attacker))
    refused(sign(attacker, claims(), header=header), keyset(generate_key("EdDSA")), "42804",
            f"{name} refused")


def test_kid_must_be_a_string(ed):
    refused(sign(ed, claims(), header={"alg": "EdDSA", "kid": 1}), keyset(ed), "42804", "'kid'")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_with_a_jwt_error(ed, text):
    with pytest.raises(JwtError):
        token.verify(text, keyset(ed), LIMIT)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_one_character_change_is_refused(ed, data):
    text = mint(ed, sub="alice")
    ks = keyset(ed)
    i = data.draw(st.integers(0, len(text) - 1))
    c = data.draw(st.characters(codec="utf-8").filter(lambda c: c != text[i]))
    with pytest.raises(JwtError):
        token.verify(text[:i] + c + text[i + 1:], ks, LIMIT)


# --- the remembered header: a shortcut that must never change a decision ------------------

def test_a_repeated_header_still_needs_a_valid_signature(ed):
    header = {"alg": "EdDSA", "typ": "JWT", "kid": ed.get("kid")}
    good = sign(ed, claims(), header=header)
    token.verify(good, keyset(ed), LIMIT)            # remembers this header's text
    forger = generate_key("EdDSA", kid=ed.get("kid"))
    forged = sign(forger, claims(sub="mallory"), header=header, alg="EdDSA")
    assert forged.split(".")[0] == good.split(".")[0]
    refused(forged, keyset(ed), "23514", "invalid JWT signature")


def test_a_repeated_header_still_selects_its_key_in_each_key_set(ed):
    header = {"alg": "EdDSA", "kid": "only-in-the-first-set"}
    first = generate_key("EdDSA", kid="only-in-the-first-set")
    token.verify(sign(first, claims(), header=header), keyset(first), LIMIT)
    other = keys.parse(json.dumps({"keys": [json.loads(public_jwk(generate_key("EdDSA", kid="a"))),
                                            json.loads(public_jwk(generate_key("EdDSA", kid="b")))]}))
    refused(sign(first, claims(), header=header), other, "23514", "matches no key")


@pytest.mark.parametrize("header", [{"alg": "EdDSA", "crit": ["exp"]}, {"alg": "none"},
                                    {"alg": "EdDSA", "jku": "https://elsewhere/jwks"}])
def test_a_refused_header_is_refused_every_time(ed, header):
    good = sign(ed, claims(), header={"alg": "EdDSA"})
    token.verify(good, keyset(ed), LIMIT)
    for _ in range(2):
        with pytest.raises(JwtError) as info:
            token.verify(sign(ed, claims(), header=header, alg="EdDSA"), keyset(ed), LIMIT)
        assert info.value.sqlstate == "42804"


def test_another_spelling_of_an_accepted_header_is_checked_in_full(ed):
    token.verify(sign(ed, claims(), header='{"alg":"EdDSA"}'), keyset(ed), LIMIT)
    refused(sign(ed, claims(), header='{"alg":"EdDSA","alg":"EdDSA"}', alg="EdDSA"), keyset(ed),
            "42804", "duplicate")
