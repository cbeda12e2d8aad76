"""The JWKS state files hold whatever anyone who writes as the server's user put there
(COPY ... TO with pg_write_server_files): any content of the cache and lock files counts
as absent or unauthenticated, is logged once, never reaches a caller as anything but the
documented refusals, and never costs a backend the good key set it holds."""

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_session_jwt import jwks, pl
from pg_session_jwt.errors import JwtError

from devtools.jwt import generate_key
from tests.support.jwks_fakes import URL, Clock, Issuer, kids

SECRET = b"s" * 32


@pytest.fixture(scope="module")
def key():
    return generate_key("EdDSA")


def source(directory, issuer, clock, secret, log=None, name=None):
    config = jwks.Config(URL, 60, secret=secret, issuer=name)
    return jwks.Source(config, directory=str(directory), fetcher=issuer, clock=clock, log=log)


def json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=30))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["attempted", "error", "mac", "url", "jwks", "fetched",
                                         "max_age", "keys"]), inner, max_size=6)),
        max_leaves=15)


def contents():
    """What COPY ... TO could leave in a file: JSON of any shape, bytes, nothing, a lot."""
    return st.one_of(
        json_values().map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.just(b""), st.just(b"\xff\xfe{"), st.just(b"[" * 100000),
        st.just(b'{"attempted": "x"}'), st.just(b'{"attempted": 1e308, "error": 7}'),
        st.just(b'{"attempted": 1099511627775, "error": "x"}'),
        st.builds(lambda n: b'{"url": "' + URL.encode() + b'", "jwks": "' + b"A" * n + b'"}',
                  st.integers(0, 3)))


@pytest.mark.parametrize("secret", [SECRET, None], ids=["secret", "no-secret"])
@pytest.mark.parametrize("which", ["cache", "lock"])
def test_any_content_of_a_state_file_is_harmless(tmp_path_factory, key, secret, which):
    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(contents(), st.integers(0, 200))
    def check(content, later):
        directory = tmp_path_factory.mktemp("run")
        clock, issuer, lines = Clock(), Issuer(key), []
        holder = source(directory, issuer, clock, secret, lines.append)
        good = holder.current()
        path = holder.cache_path if which == "cache" else holder.lock_path
        with open(path, "wb") as fh:
            fh.write(content)
        os.chmod(path, 0o644 if which == "cache" else 0o600)
        clock.now += later
        # The backend that holds the good set keeps it, whatever the file says ...
        assert kids(holder.current()) == kids(good)
        assert holder.unknown_kid() in (True, False)
        assert kids(holder.keyset) == kids(good)
        # ... and a new backend gets it too (from the file, or by fetching it again).
        fresh = source(directory, issuer, clock, secret, lines.append)
        try:
            assert kids(fresh.current()) == kids(good)
        except JwtError as exc:  # only the documented refusal: no set yet, said why
            assert exc.sqlstate == "02000", exc.message
        # ... and what auth.key_sets() shows of it is always a row PostgreSQL can store.
        for status in (fresh.status(), holder.status()):
            for name in ("fetched_at", "good_until", "failed_at"):
                pl._timestamp(status[name])

    check()


def test_the_lock_file_of_the_security_review(tmp_path, key):
    """{"attempted": "x"} in the lock file made every new connection fail with TypeError."""
    lines = []
    first = source(tmp_path, Issuer(key), Clock(), SECRET, lines.append)
    first.current()
    (tmp_path / jwks.LOCK_NAME).write_text('{"attempted": "x"}')
    clock = Clock(Clock().now + 3600)
    fresh = source(tmp_path, Issuer(key), clock, SECRET, lines.append)
    assert kids(fresh.current()) == {key.get("kid")}
    bad = [line for line in lines if "ignoring the content of" in line]
    assert len(bad) == 1 and "not written by this server" in bad[0]


def test_a_planted_error_never_reaches_a_caller(tmp_path, key):
    issuer = Issuer(key)
    issuer.failure = jwks.FetchError("timed out", unreachable=True)
    clock = Clock()
    with pytest.raises(JwtError) as info:
        source(tmp_path, issuer, clock, SECRET).current()
    assert "timed out" in info.value.message
    (tmp_path / jwks.LOCK_NAME).write_text(json.dumps({"attempted": clock.now,
                                                       "error": "call 555-EVIL"}))
    with pytest.raises(JwtError) as info:
        source(tmp_path, issuer, clock, SECRET).current()
    assert "EVIL" not in info.value.message


def test_a_clobbered_cache_file_is_written_back_by_a_backend_holding_the_set(tmp_path, key):
    lines = []
    clock = Clock()
    holder = source(tmp_path, Issuer(key), clock, SECRET, lines.append)
    holder.current()
    (tmp_path / jwks.CACHE_NAME).write_text('{"url": 1}')
    os.chmod(tmp_path / jwks.CACHE_NAME, 0o644)
    holder.current()
    assert any("wrote the key set in use back" in line for line in lines)
    issuer = Issuer()
    reader = source(tmp_path, issuer, clock, SECRET)
    assert kids(reader.current()) == {key.get("kid")} and issuer.requests == 0


def test_each_issuer_has_its_own_state_files(tmp_path, key):
    other = generate_key("EdDSA")
    clock = Clock()
    a = source(tmp_path, Issuer(key), clock, SECRET, name="https://a.example")
    b = source(tmp_path, Issuer(other), clock, SECRET, name="https://b.example")
    assert kids(a.current()) == {key.get("kid")} and kids(b.current()) == {other.get("kid")}
    assert len({a.cache_path, b.cache_path, a.lock_path, b.lock_path}) == 4
    with open(a.lock_path, "w") as fh:
        fh.write("garbage")
    assert kids(b.current()) == {other.get("kid")}
