"""The verified-token cache: bounds in entries and bytes, time checks on every hit, and the
jti rule (with require_jti on, only the current token may skip verification)."""

import pytest
from pg_session_jwt import cache, pl, token
from pg_session_jwt.errors import JwtError
from pg_session_jwt.session import Backend, Session

from devtools.jwt import mint
from tests.support.jws import FakePlpy

NOW = 1_800_000_000


def session(text, exp=None, claims_json="{}"):
    return Session(text, {"sub": "x"}, claims_json, exp, True)


def test_eviction_by_count_is_least_recently_used():
    lru = cache.VerifiedCache(max_entries=3)
    keyset = object()
    for name in "abc":
        lru.put(name, session(name), keyset, None)
    assert lru.get("a", keyset, NOW, 60) is not None  # a is now the most recent
    lru.put("d", session("d"), keyset, None)
    assert len(lru) == 3
    assert lru.get("b", keyset, NOW, 60) is None
    assert [lru.get(n, keyset, NOW, 60) is not None for n in "acd"] == [True, True, True]


def test_eviction_by_bytes():
    lru = cache.VerifiedCache(max_entries=100, max_bytes=1000)
    keyset = object()
    for i in range(10):
        lru.put(f"{i:03d}" + "t" * 197, session(str(i), claims_json="c" * 100), keyset, None)
        assert lru.bytes <= 1000
    assert len(lru) == 3  # 300 bytes each
    assert lru.get("009" + "t" * 197, keyset, NOW, 60) is not None
    assert lru.get("000" + "t" * 197, keyset, NOW, 60) is None
    lru.put("x" * 2000, session("big"), keyset, None)  # larger than the whole cache: not kept
    assert len(lru) == 3 and lru.get("x" * 2000, keyset, NOW, 60) is None


def test_the_byte_bound_counts_utf8_bytes_not_characters():
    lru = cache.VerifiedCache(max_entries=100, max_bytes=1000)
    keyset = object()
    for i in range(4):
        # 100 characters of claims, 400 bytes in UTF-8: two entries fit, not three
        lru.put(f"t{i}" + "t" * 98, session(str(i), claims_json="\U0001F600" * 100), keyset, None)
        assert lru.bytes <= 1000
    assert len(lru) == 2


def test_hit_rechecks_exp_with_the_leeway_and_drops_the_entry():
    lru = cache.VerifiedCache()
    keyset = object()
    lru.put("t", session("t", exp=NOW + 60), keyset, None)  # exp + leeway, as Session keeps it
    assert lru.get("t", keyset, NOW + 60, 60) is not None
    with pytest.raises(JwtError) as info:
        lru.get("t", keyset, NOW + 61, 60)
    assert info.value.sqlstate == "23514" and "expired" in info.value.message
    assert len(lru) == 0 and lru.bytes == 0


def test_hit_rechecks_nbf_with_the_leeway():
    lru = cache.VerifiedCache()
    keyset = object()
    lru.put("t", session("t"), keyset, NOW + 100)
    with pytest.raises(JwtError) as info:
        lru.get("t", keyset, NOW, 60)  # the clock went back after verification
    assert "before it is ready" in info.value.message
    assert lru.get("t", keyset, NOW + 40, 60) is not None


def test_a_token_verified_under_another_key_set_misses():
    lru = cache.VerifiedCache()
    old, new = object(), object()
    lru.put("t", session("t"), old, None)
    assert lru.get("t", new, NOW, 60) is None
    assert len(lru) == 0


def count_verifications(monkeypatch):
    calls = []
    real = token.verify

    def counted(*args):
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(token, "verify", counted)
    return calls


def test_pooled_reuse_verifies_each_token_once(monkeypatch, key, backend):
    monkeypatch.setattr(pl, "state", Backend({}))
    plpy = FakePlpy.for_key(key, require_jti="off")
    calls = count_verifications(monkeypatch)
    tokens = [mint(key, sub=f"user{i}") for i in range(8)]
    for _ in range(5):
        for jwt in tokens:
            assert pl.verify(plpy, jwt) == jwt
            assert pl.user_id(plpy, jwt, None) == f"user{tokens.index(jwt)}"
    assert sorted(calls) == sorted(tokens)


def test_with_require_jti_only_the_current_token_skips_verification(monkeypatch, key, backend):
    monkeypatch.setattr(pl, "state", Backend({}))
    plpy = FakePlpy.for_key(key, require_jti="on")
    calls = count_verifications(monkeypatch)
    first, second = mint(key, sub="a"), mint(key, sub="b")  # increasing jti
    pl.verify(plpy, first)
    pl.verify(plpy, first)
    pl.verify(plpy, second)
    assert calls == [first, second]
    failure = pl.check(plpy, first)  # re-presented after a newer one: verified, refused
    assert failure is not None and failure[0] == "23514" and "monotonically" in failure[1]
    assert calls == [first, second, first]
    assert len(pl.state.cache) == 0


def test_expired_cached_token_is_refused(monkeypatch, key, backend):
    monkeypatch.setattr(pl, "state", Backend({}))
    plpy = FakePlpy.for_key(key, require_jti="off", leeway="0")
    now = [NOW]
    monkeypatch.setattr(pl, "time", lambda: now[0])
    jwt = mint(key, sub="a", ttl=30, claims={"iat": NOW, "exp": NOW + 30})
    other = mint(key, sub="b", claims={"iat": NOW, "exp": NOW + 3600})
    assert pl.check(plpy, jwt) is None
    assert pl.check(plpy, other) is None  # jwt is now only in the cache
    now[0] = NOW + 31
    failure = pl.check(plpy, jwt)
    assert failure is not None and "expired" in failure[1]
