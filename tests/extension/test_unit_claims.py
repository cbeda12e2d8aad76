"""Claim checks: integer jti/nbf/exp in 64-bit range, leeway, strictly increasing jti, iss/aud."""

import pytest
from pg_session_jwt import claims
from pg_session_jwt.errors import JwtError
from pg_session_jwt.session import Settings

NOW = 1_800_000_000


def check(payload, last_jti=0, **settings):
    return claims.check(payload, Settings(**settings), NOW, last_jti)


def refused(payload, sqlstate, phrase, **kwargs):
    with pytest.raises(JwtError) as info:
        check(payload, **kwargs)
    assert info.value.sqlstate == sqlstate
    assert phrase in info.value.message


def test_good_claims_return_the_jti():
    assert check({"jti": 5, "nbf": NOW, "exp": NOW + 1}) == 5


@pytest.mark.parametrize("jti", [None, "5", 5.0, True, False, [5], 2**63, -2**63 - 1])
def test_jti_missing_or_not_an_integer(jti):
    payload = {} if jti is None else {"jti": jti}
    refused(payload, "42804", "JWT payload must contain a valid 'jti' (JWT ID)")


@pytest.mark.parametrize("jti", [4, 5])
def test_jti_must_increase_strictly(jti):
    refused({"jti": jti}, "23514", "Token ID must be strictly monotonically increasing.", last_jti=5)


def test_first_jti_must_be_positive_as_in_the_original():
    refused({"jti": 0}, "23514", "strictly monotonically increasing")


def test_require_jti_off_ignores_jti_entirely():
    assert check({}, require_jti=False) is None
    assert check({"jti": "not-an-int"}, last_jti=10, require_jti=False) is None
    assert check({"jti": 1}, last_jti=10, require_jti=False) is None


@pytest.mark.parametrize("name, label", [("exp", "'exp' (Expiration)"), ("nbf", "'nbf' (Not Before)")])
@pytest.mark.parametrize("value", ["1800000000", True, None, 1.8e9, 1800000000.0, {}, 2**63])
def test_exp_and_nbf_must_be_integers(name, label, value):
    refused({"jti": 1, name: value}, "42804", f"{label} must be an integer")


def test_nbf_in_the_future_beyond_leeway():
    assert check({"jti": 1, "nbf": NOW + 60}) == 1
    refused({"jti": 1, "nbf": NOW + 61}, "23514", "Token used before it is ready")
    refused({"jti": 1, "nbf": NOW + 1}, "23514", "Token used before it is ready", leeway=0)


def test_exp_in_the_past_beyond_leeway():
    assert check({"jti": 1, "exp": NOW - 60}) == 1
    refused({"jti": 1, "exp": NOW - 61}, "23514", "Token used after it has expired")
    refused({"jti": 1, "exp": NOW - 1}, "23514", "Token used after it has expired", leeway=0)


def test_expiry_includes_leeway():
    assert claims.expires({"exp": NOW}, 60) == NOW + 60
    assert claims.expires({}, 60) is None


@pytest.mark.parametrize("aud", ["app", ["other", "app"]])
def test_audience_accepted(aud):
    assert check({"jti": 1, "aud": aud}, audience="app") == 1


@pytest.mark.parametrize("aud", [None, "other", ["other"], 7, "APP"])
def test_audience_refused(aud):
    payload = {"jti": 1} if aud is None else {"jti": 1, "aud": aud}
    refused(payload, "23514", "pg_session_jwt.audience", audience="app")


def test_issuer():
    assert check({"jti": 1, "iss": "https://issuer"}, issuer="https://issuer") == 1
    refused({"jti": 1, "iss": "https://evil"}, "23514", "pg_session_jwt.issuer", issuer="https://issuer")
    refused({"jti": 1}, "23514", "pg_session_jwt.issuer", issuer="https://issuer")


def test_no_audience_or_issuer_configured_ignores_the_claims():
    assert check({"jti": 1, "aud": 7, "iss": ["x"]}) == 1
