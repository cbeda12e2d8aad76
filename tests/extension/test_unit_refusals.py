"""Refusals you can see (pg_session_jwt/refusals.py), Supabase's getters and one identity
per statement, with a stand-in plpy: each kind of refused token gets its own reason code,
the LOG line names kid/iss/sub as documented and never the token."""

import json
import time

import pytest
from pg_session_jwt import pl, refusals, session

from devtools.jwt import generate_key, mint
from tests.support.jws import FakePlpy, PlpyError, claims, sign, unsigned

pytestmark = pytest.mark.usefixtures("backend")  # each test is a new server process


def refusal(plpy, jwt):
    """(sqlstate, log lines) of verifying `jwt` on connection `plpy`."""
    with pytest.raises(PlpyError) as info:
        pl.verify(plpy, jwt)
    return info.value.sqlstate, plpy.logs


def cases(key, other):
    """(reason, token, settings) for every kind of token refusal."""
    now = int(time.time())
    good_header = {"alg": "EdDSA", "kid": key.get("kid")}
    yield "too_long", mint(key, sub="a", claims={"pad": "x" * 300}), {"max_token_bytes": "200"}
    yield "encrypted", "a.b.c.d.e", {}
    yield "malformed", "only.two", {}
    yield "malformed", unsigned("not json", claims()), {}
    yield "bad_header", unsigned({"alg": "none", "kid": "k-none"}, claims()), {}
    yield "bad_header", unsigned({"alg": "EdDSA", "jwk": {}}, claims()), {}
    yield "unknown_kid", mint(key, sub="a", header={"kid": "retired-key"}), {}
    yield "wrong_alg", unsigned({"alg": "RS256", "kid": key.get("kid")}, claims(), b"x"), {}
    yield "bad_signature", mint(other, sub="mallory"), {}
    yield "bad_jti", mint(key, sub="a", claims={"jti": "text"}), {}
    yield "bad_claim", sign(key, claims(exp="soon"), good_header), {}
    yield "not_yet_valid", mint(key, sub="a", claims={"nbf": now + 3600}), {}
    yield "expired", mint(key, sub="late", claims={"exp": now - 3600}), {}
    yield "wrong_issuer", mint(key, sub="a", claims={"iss": "https://elsewhere"}), \
        {"issuer": "https://issuer"}
    yield "wrong_audience", mint(key, sub="a", claims={"aud": "other"}), {"audience": "app"}


@pytest.fixture
def other(key):
    """Someone else's key with the same kid: its tokens fail only the signature."""
    return generate_key("EdDSA", kid=key.get("kid"))


def test_every_kind_of_refused_token_has_its_own_reason(key, other):
    seen = set()
    for reason, jwt, settings in cases(key, other):
        pl.state = session.Backend()
        plpy = FakePlpy.for_key(key, log_refusals="on", **settings)
        _, logs = refusal(plpy, jwt)
        assert len(logs) == 1, (reason, logs)
        assert logs[0].startswith(f"pg_session_jwt: refused JWT: reason={reason} "), logs
        seen.add(reason)
        for part in jwt.split("."):
            assert len(part) < 8 or part not in logs[0], (reason, logs)
    # Not the fallback: every message above is one the table recognises.
    assert refusals.OTHER not in seen


def test_replayed_jti_is_its_own_reason(key):
    plpy = FakePlpy.for_key(key, log_refusals="on")
    first, second = mint(key, sub="a"), mint(key, sub="a")
    pl.verify(plpy, second)
    refusal(plpy, first)
    assert "reason=replayed_jti sqlstate=23514" in plpy.logs[0]


def test_sub_only_once_the_signature_verified(key, other):
    expired = mint(key, sub="late", claims={"exp": int(time.time()) - 3600, "iss": "https://i"})
    _, logs = refusal(FakePlpy.for_key(key, log_refusals="on"), expired)
    assert logs == [f'pg_session_jwt: refused JWT: reason=expired sqlstate=23514 '
                    f'kid="{key.get("kid")}" iss="https://i" sub="late"']
    pl.state = session.Backend()
    forged = mint(other, sub="mallory", claims={"iss": "https://i"})
    _, logs = refusal(FakePlpy.for_key(key, log_refusals="on"), forged)
    assert logs == [f'pg_session_jwt: refused JWT: reason=bad_signature sqlstate=23514 '
                    f'kid="{key.get("kid")}" iss="https://i"']


def test_logged_values_are_quoted_escaped_and_cut(key):
    kid = "k\n" + "x" * 100
    _, logs = refusal(FakePlpy.for_key(key, log_refusals="on"),
                      unsigned({"alg": "none", "kid": kid}, {"iss": "\u00e9vil\r"}))
    assert "\n" not in logs[0] and "\r" not in logs[0]
    assert 'kid="k\\n' + "x" * 62 + '..."' in logs[0] and 'iss="\\u00e9vil\\r"' in logs[0]


def test_an_oversized_token_is_not_parsed_for_the_log(key):
    jwt = mint(key, sub="a", claims={"pad": "x" * 300})
    _, logs = refusal(FakePlpy.for_key(key, log_refusals="on", max_token_bytes="200"), jwt)
    assert logs == ["pg_session_jwt: refused JWT: reason=too_long sqlstate=54000"]


def test_off_by_default_and_read_at_connection_start(key, other):
    plpy = FakePlpy.for_key(key)
    refusal(plpy, mint(other, sub="a"))
    plpy.settings["log_refusals"] = "on"   # what a later SET would change: nothing
    refusal(plpy, mint(other, sub="a"))
    assert plpy.logs == []


def test_session_scope_and_handle_refusals_are_logged(key, backend):
    plpy = FakePlpy.for_key(key, log_refusals="on", session_scope="transaction",
                            require_jti="off")
    jwt = mint(key, sub="alice")
    assert pl.start(plpy, jwt, False)[0] == "42501"
    handle = pl.start(plpy, jwt, True)[1]
    backend["xact"] = 2
    with pytest.raises(PlpyError):
        pl.user_id(plpy, handle, None)
    with pytest.raises(PlpyError):
        pl.user_id(plpy, "pg_session_jwt:" + "0" * 36, None)
    reasons = [line.split()[3] for line in plpy.logs]
    assert reasons == ["reason=session_scope", "reason=stale_handle", "reason=unknown_handle"]


def test_an_expired_session_is_logged_once_per_refusal(key, monkeypatch):
    plpy = FakePlpy.for_key(key, log_refusals="on", leeway="0")
    handle = pl.start(plpy, mint(key, sub="alice", ttl=5), False)[1]
    assert pl.user_id(plpy, handle, None) == "alice"
    later = time.time() + 10
    monkeypatch.setattr(pl, "time", lambda: later)
    with pytest.raises(PlpyError) as info:
        pl.user_id(plpy, handle, None)
    assert info.value.sqlstate == "23514"
    assert len(plpy.logs) == 1 and 'reason=expired' in plpy.logs[0] and 'sub="alice"' in plpy.logs[0]


def test_a_statement_that_began_in_time_keeps_its_session(key, monkeypatch):
    plpy = FakePlpy.for_key(key, leeway="0")
    now = time.time()
    handle = pl.start(plpy, mint(key, sub="alice", ttl=5), False)[1]
    monkeypatch.setattr(pl, "time", lambda: now + 10)
    monkeypatch.setattr(pl, "statement_start", lambda: now)          # began before exp
    assert pl.user_id(plpy, handle, None) == "alice"
    monkeypatch.setattr(pl, "statement_start", lambda: now + 9)      # the next statement
    with pytest.raises(PlpyError, match="expired"):
        pl.user_id(plpy, handle, None)


def test_outside_a_server_the_statement_starts_now():
    assert pl.statement_start() is None


# --- Supabase's getters ------------------------------------------------------------------

def test_role_and_email(key):
    plpy = FakePlpy.for_key(key)
    jwt = mint(key, sub="alice", claims={"role": "authenticated", "email": "alice@example.com"})
    assert pl.role(plpy, jwt, None) == "authenticated"
    assert pl.email(plpy, jwt, None) == "alice@example.com"
    bare = mint(key, sub="bob")
    assert (pl.role(plpy, bare, None), pl.email(plpy, bare, None)) == (None, None)
    assert (pl.role(plpy, None, None), pl.email(plpy, None, None)) == (None, None)


@pytest.mark.parametrize("name", ["role", "email"])
def test_a_verified_claim_that_is_not_text_is_42804(key, name):
    plpy = FakePlpy.for_key(key)
    jwt = mint(key, sub="alice", claims={name: ["admin"]})
    with pytest.raises(PlpyError, match=f"invalid {name} claim") as info:
        getattr(pl, name)(plpy, jwt, None)
    assert info.value.sqlstate == "42804"
    assert pl.user_id(plpy, jwt, None) == "alice"


def test_trusted_request_claims_give_role_and_email_as_text_only():
    plpy = FakePlpy(trust_request_claims="on")
    request = json.dumps({"sub": "a", "role": "anon", "email": 5})
    assert (pl.role(plpy, None, request), pl.email(plpy, None, request)) == ("anon", None)

