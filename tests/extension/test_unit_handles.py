"""What jwt_session_init leaves in pg_session_jwt.jwt (0.3.0): a handle that only this
backend maps to the session, bound to its transaction when transaction-scoped; raw
tokens a gateway sets are still verified, once per transaction against the key set in
effect; session_scope and uuid rules."""

import pytest
from pg_session_jwt import keys, pl
from pg_session_jwt.session import (
    HANDLE_BYTES,
    HANDLE_PREFIX,
    MAX_HANDLES,
    RANDOM_BATCH,
    Backend,
)

from devtools.jwt import generate_key, mint, public_jwk
from tests.support.jws import FakePlpy, PlpyError

pytestmark = pytest.mark.usefixtures("backend")  # each test is a new server process


def start(plpy, token, local=False):
    failure, handle = pl.start(plpy, token, local)
    assert failure is None, handle
    return handle


def refused(sqlstate, phrase, fn, *args):
    with pytest.raises(PlpyError) as info:
        fn(*args)
    assert info.value.sqlstate == sqlstate and phrase in info.value.message, info.value.message


def test_the_setting_gets_a_handle_not_the_token(key):
    plpy = FakePlpy.for_key(key)
    token = mint(key, sub="alice")
    handle = start(plpy, token)
    assert handle.startswith(HANDLE_PREFIX) and "." not in handle
    assert token not in handle and token.split(".")[1] not in handle
    assert pl.user_id(plpy, handle, None) == "alice"
    assert start(plpy, token) != handle, "every call makes a new handle"


def test_a_handle_from_another_backend_gives_no_identity(key, monkeypatch):
    handle = start(FakePlpy.for_key(key), mint(key, sub="alice"))
    monkeypatch.setattr(pl, "state", Backend())  # another connection
    refused("23514", "does not know", pl.user_id, FakePlpy.for_key(key), handle, None)


def test_a_transaction_scoped_handle_dies_with_its_transaction(key, backend):
    plpy = FakePlpy.for_key(key)
    handle = start(plpy, mint(key, sub="alice"), local=True)
    assert pl.user_id(plpy, handle, None) == "alice"
    backend["xact"] = 2   # COMMIT; the value is SET again in the next transaction
    refused("23514", "another transaction", pl.user_id, plpy, handle, None)
    refused("23514", "another transaction", pl.session, plpy, handle, None)
    backend["xact"] = 3   # and stays dead, cache hit or not
    refused("23514", "another transaction", pl.uid, plpy, handle, None)


def test_a_session_scoped_handle_lives_on_and_earlier_ones_survive_a_rollback(key):
    plpy = FakePlpy.for_key(key)
    first = start(plpy, mint(key, sub="alice"))
    second = start(plpy, mint(key, sub="bob"))
    # ROLLBACK of the second jwt_session_init puts `first` back in the setting.
    assert pl.user_id(plpy, first, None) == "alice"
    assert pl.user_id(plpy, second, None) == "bob"


def test_handles_take_fresh_random_bytes_across_batches(key, backend, monkeypatch):
    """Random bytes come from the kernel in batches; no handle may repeat or share its bytes
    with another, within a batch or across the refill."""
    plpy = FakePlpy.for_key(key)
    token = mint(key, sub="alice")
    handles = []
    for number in range(2 * RANDOM_BATCH + 3):
        backend["xact"] = number // 3
        handles.append(start(plpy, token, local=number % 2 == 0))
    randoms = [h[len(HANDLE_PREFIX):] for h in handles]
    assert all(len(r) == 2 * HANDLE_BYTES for r in randoms)
    assert len(set(randoms)) == len(randoms)
    monkeypatch.setattr(pl, "state", Backend())   # another connection
    theirs = {start(plpy, token)[len(HANDLE_PREFIX):] for _ in range(RANDOM_BATCH + 1)}
    assert not theirs & set(randoms), "two backends made the same handle"


def test_a_new_transaction_forgets_the_last_ones_handles(key, backend):
    plpy = FakePlpy.for_key(key)
    old = [start(plpy, mint(key, sub=f"u{i}"), local=True) for i in range(3)]
    backend["xact"] = 2
    start(plpy, mint(key, sub="next"), local=True)
    for handle in old:
        refused("23514", "does not know", pl.user_id, plpy, handle, None)


@pytest.mark.parametrize("local", [False, True], ids=["session", "transaction"])
def test_handles_are_bounded_in_either_scope(key, local):
    plpy = FakePlpy.for_key(key)
    jwt = mint(key, sub="u")
    handles = [start(plpy, jwt, local=local) for _ in range(MAX_HANDLES * 100)]
    # One transaction calling jwt_session_init without end keeps only the last few.
    assert len(pl.state._local_handles if local else pl.state._session_handles) == MAX_HANDLES
    assert pl.user_id(plpy, handles[-1], None) == "u"
    assert pl.user_id(plpy, handles[-MAX_HANDLES], None) == "u"
    refused("23514", "does not know", pl.user_id, plpy, handles[-MAX_HANDLES - 1], None)


def test_a_raw_token_in_the_setting_is_verified_and_used(key):
    plpy = FakePlpy.for_key(key)
    token = mint(key, sub="gateway-user")
    assert pl.user_id(plpy, token, None) == "gateway-user"
    forged = mint(generate_key("EdDSA", kid=key.get("kid")), sub="mallory")
    refused("23514", "invalid JWT signature", pl.user_id, plpy, forged, None)


def test_an_older_raw_token_fails_its_jti_after_a_newer_one(key):
    plpy = FakePlpy.for_key(key)
    older, newer = mint(key, sub="old"), mint(key, sub="new")
    assert pl.user_id(plpy, older, None) == "old"
    start(plpy, newer)
    refused("23514", "monotonically", pl.user_id, plpy, older, None)


def test_session_scope_transaction_refuses_session_scoped_sessions(key):
    plpy = FakePlpy.for_key(key, session_scope="transaction")
    failure, message = pl.start(plpy, mint(key, sub="alice"), False)
    assert failure == "42501" and "pg_session_jwt.session_scope" in message
    assert pl.user_id(plpy, start(plpy, mint(key, sub="alice"), local=True), None) == "alice"


@pytest.mark.parametrize("sub, uid", [
    ("{11111111-1111-1111-1111-111111111111", None),            # unbalanced brace
    ("11111111-1111-1111-1111-111111111111}", None),
    ("{11111111-1111-1111-1111-111111111111}", "{11111111-1111-1111-1111-111111111111}"),
    ("1111-1111-1111-1111-1111-1111-1111-1111", "1111-1111-1111-1111-1111-1111-1111-1111"),
    ("111111111111111111111111111111-11", None),                 # hyphen inside a group
    ("11111111-1111-1111-1111-111111111111-", None),
    ("-11111111111111111111111111111111", None),
    ("11111111-1111-1111-1111-11111111111", None),
    ("１1111111-1111-1111-1111-111111111111", None),             # a non-ASCII digit
])
def test_uid_is_what_postgresql_uuid_input_accepts(key, sub, uid):
    plpy = FakePlpy.for_key(key)
    assert pl.uid(plpy, start(plpy, mint(key, sub=sub)), None) == uid


def test_claims_postgresql_cannot_store_are_refused_at_session_init(key):
    from tests.support.jws import sign

    plpy = FakePlpy.for_key(key)
    token = sign(key, '{"sub": "a\\u0000b", "jti": 1000000000000000}')
    failure, message = pl.start(plpy, token, False)
    assert failure == "42804" and "lone surrogate" in message


@pytest.mark.parametrize("token, local, phrase", [
    (None, False, "the token is NULL"), ("x.y.z", None, '"local" is NULL')])
def test_a_null_argument_is_refused_before_anything_else(key, token, local, phrase):
    failure, message = pl.start(FakePlpy.for_key(key), token, local)
    assert failure == "22004" and phrase in message
    assert pl.state.current is None, "a refused start left a session behind"


def test_under_transaction_scope_only_the_startup_packets_raw_token_is_used(key):
    """A raw token SET (or SET LOCAL: the extension cannot tell them apart) would outlive its
    client on a pooled connection; the one in the startup packet belongs to the connection."""
    startup = mint(key, sub="gateway-user")
    plpy = FakePlpy.for_key(key, session_scope="transaction", jwt=startup)
    assert pl.user_id(plpy, startup, None) == "gateway-user"
    refused("42501", "session_scope is 'transaction'", pl.user_id, plpy, mint(key, sub="mallory"), None)
    assert pl.user_id(plpy, start(plpy, mint(key, sub="alice"), local=True), None) == "alice"


def test_under_session_scope_a_set_raw_token_is_verified_and_used(key):
    plpy = FakePlpy.for_key(key)
    assert pl.user_id(plpy, mint(key, sub="gateway-user"), None) == "gateway-user"


# A raw token a gateway keeps in pg_session_jwt.jwt is checked against the key set in effect
# once per transaction, not only when first seen: after a rotation retires its key, it stops
# giving an identity on connections that had verified it (the getters' per-row cache would
# otherwise keep it for the connection's life).

def test_a_raw_token_is_verified_again_once_per_transaction(backend, monkeypatch):
    key = generate_key("EdDSA")
    plpy, token = FakePlpy.for_key(key, require_jti="off"), mint(key, sub="alice")
    calls = []
    verify = Backend.verify
    monkeypatch.setattr(Backend, "verify", lambda self, *a: calls.append(1) or verify(self, *a))
    for _ in range(3):   # rows of one query
        assert pl.user_id(plpy, token, None) == "alice"
    assert len(calls) == 1
    backend["xact"] = 2
    assert pl.user_id(plpy, token, None) == "alice"
    assert len(calls) == 2


def test_a_raw_token_of_a_retired_key_stops_at_the_next_transaction(backend):
    key = generate_key("EdDSA")
    plpy, token = FakePlpy.for_key(key), mint(key, sub="alice")
    assert pl.user_id(plpy, token, None) == "alice"
    # What a JWKS refresh does: the backend's key set is replaced by one without that key.
    pl.state._keys = keys.parse(public_jwk(generate_key("EdDSA", kid=key.get("kid"))))
    backend["xact"] = 2
    with pytest.raises(PlpyError) as info:
        pl.user_id(plpy, token, None)
    assert info.value.sqlstate == "23514"
