"""A raw token a gateway keeps in pg_session_jwt.jwt is checked against the key set in
effect once per transaction, not only when first seen: after a rotation retires its key,
it stops giving an identity on connections that had verified it (the getters' per-row
cache would otherwise keep it for the connection's life)."""

import pytest
from pg_session_jwt import keys, pl
from pg_session_jwt.session import Backend

from devtools.jwt import generate_key, mint, public_jwk
from tests.support.jws import FakePlpy, PlpyError


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    monkeypatch.setattr(pl, "state", Backend())
    stamp = {"xact": 1}
    monkeypatch.setattr(pl, "transaction_stamp", lambda: stamp["xact"])
    return stamp


def test_a_raw_token_is_verified_again_once_per_transaction(clock, monkeypatch):
    key = generate_key("EdDSA")
    plpy, token = FakePlpy.for_key(key, require_jti="off"), mint(key, sub="alice")
    calls = []
    verify = Backend.verify
    monkeypatch.setattr(Backend, "verify", lambda self, *a: calls.append(1) or verify(self, *a))
    for _ in range(3):   # rows of one query
        assert pl.user_id(plpy, token, None) == "alice"
    assert len(calls) == 1
    clock["xact"] = 2
    assert pl.user_id(plpy, token, None) == "alice"
    assert len(calls) == 2


def test_a_raw_token_of_a_retired_key_stops_at_the_next_transaction(clock):
    key = generate_key("EdDSA")
    plpy, token = FakePlpy.for_key(key), mint(key, sub="alice")
    assert pl.user_id(plpy, token, None) == "alice"
    # What a JWKS refresh does: the backend's key set is replaced by one without that key.
    pl.state._keys = keys.parse(public_jwk(generate_key("EdDSA", kid=key.get("kid"))))
    clock["xact"] = 2
    with pytest.raises(PlpyError) as info:
        pl.user_id(plpy, token, None)
    assert info.value.sqlstate == "23514"
