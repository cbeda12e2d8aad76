"""The SQL glue with a stand-in plpy: capture once, cache by exact token, errors as SQLSTATEs."""

import json
import subprocess
import sys
import time

import pytest
from pg_session_jwt import pl, token
from pg_session_jwt.session import Backend

from devtools.jwt import ALGORITHMS, generate_key, mint, public_jwk
from tests.support.jws import FakePlpy, PlpyError, claims, sign

GETTERS = (pl.session, pl.user_id, pl.uid, pl.organization, pl.organization_id)
ORG = "6f1c3b1e-8a5b-4e8e-9d7a-2f6c1b2a3d4e"
UID = "0b6f0f5e-0c4b-4f0c-8d1f-9a1f0b3c2d1e"


pytestmark = pytest.mark.usefixtures("backend")  # each test is a new server process


def raises(sqlstate, phrase, fn, *args):
    with pytest.raises(PlpyError) as info:
        fn(*args)
    assert info.value.sqlstate == sqlstate
    assert phrase in info.value.message
    return info.value.message


def test_init_without_a_key_is_02000():
    raises("02000", "Missing runtime parameter: pg_session_jwt.jwk", pl.init, FakePlpy())


def test_init_with_a_symmetric_key_is_42804():
    raises("42804", "symmetric", pl.init, FakePlpy('{"kty": "oct", "k": "c2VjcmV0"}'))


def test_session_and_getters(key):
    plpy = FakePlpy.for_key(key)
    pl.init(plpy)
    jwt = mint(key, sub=UID, claims={"o": {"id": ORG, "name": "acme"}})
    assert pl.verify(plpy, jwt) == jwt
    assert json.loads(pl.session(plpy, jwt, None))["sub"] == UID
    assert pl.user_id(plpy, jwt, None) == UID
    assert pl.uid(plpy, jwt, None) == UID
    assert json.loads(pl.organization(plpy, jwt, None)) == {"id": ORG, "name": "acme"}
    assert pl.organization_id(plpy, jwt, None) == ORG


@pytest.mark.parametrize("sub", ["alice", UID.upper().replace("-", ""), "{" + UID + "}", UID + "0"])
def test_uid_is_null_unless_sub_is_a_uuid(key, sub):
    plpy = FakePlpy.for_key(key)
    jwt = mint(key, sub=sub, claims={"o": "not an object"})
    assert pl.user_id(plpy, jwt, None) == sub
    is_uuid = sub != "alice" and not sub.endswith("0")
    assert pl.uid(plpy, jwt, None) == (sub if is_uuid else None)
    assert pl.organization(plpy, jwt, None) is None
    assert pl.organization_id(plpy, jwt, None) is None


def test_no_session_needs_no_capture(key):
    plpy = FakePlpy.for_key(key)
    assert pl.session(plpy, None, None) == "null"
    assert [g(plpy, "", "") for g in GETTERS[1:]] == [None] * 4
    assert plpy.captures == 0


def test_settings_are_captured_once_per_backend(key):
    plpy = FakePlpy.for_key(key)
    pl.init(plpy)
    pl.init(plpy)
    for _ in range(3):
        pl.user_id(plpy, pl.verify(plpy, mint(key, sub="a")), None)
    assert plpy.captures == 1


def test_getter_verifies_a_token_it_has_not_seen(key, monkeypatch):
    plpy = FakePlpy.for_key(key)
    forged = mint(generate_key("EdDSA", kid=key.get("kid")), sub="mallory")
    raises("23514", "invalid JWT signature", pl.user_id, plpy, forged, None)
    raises("42804", "invalid JWT encoding", pl.user_id, plpy, "a.b", None)


def test_cache_hit_does_not_verify_again(key, monkeypatch):
    plpy = FakePlpy.for_key(key)
    jwt = pl.verify(plpy, mint(key, sub="alice"))
    calls = []
    monkeypatch.setattr(token, "verify", lambda *a: calls.append(a))
    assert [pl.user_id(plpy, jwt, None) for _ in range(3)] == ["alice"] * 3
    assert calls == []


def test_cache_hit_checks_expiry(key, monkeypatch):
    plpy = FakePlpy.for_key(key, leeway="0")
    jwt = pl.verify(plpy, mint(key, sub="alice", ttl=5))
    assert pl.user_id(plpy, jwt, None) == "alice"
    monkeypatch.setattr(pl, "time", lambda: time.time() + 10)
    raises("23514", "Token used after it has expired", pl.user_id, plpy, jwt, None)
    raises("23514", "Token used after it has expired", pl.verify, plpy, jwt)


def test_jti_increasing_and_current_token_may_be_presented_again(key):
    plpy = FakePlpy.for_key(key)
    first, second = mint(key, sub="a"), mint(key, sub="b")
    pl.verify(plpy, first)
    pl.verify(plpy, second)
    pl.verify(plpy, second)
    assert pl.user_id(plpy, second, None) == "b"
    raises("23514", "Token ID must be strictly monotonically increasing.", pl.verify, plpy, first)
    raises("23514", "Token ID must be strictly monotonically increasing.", pl.user_id, plpy, first, None)


def test_require_jti_off_lets_tokens_without_jti_through(key):
    plpy = FakePlpy.for_key(key, require_jti="off")
    no_jti = sign(key, {"sub": "third-party", "exp": int(time.time()) + 60})
    assert pl.user_id(plpy, pl.verify(plpy, no_jti), None) == "third-party"


def test_missing_jti_is_42804_by_default(key):
    no_jti = sign(key, {"sub": "a"})
    raises("42804", "JWT payload must contain a valid 'jti' (JWT ID)",
           pl.verify, FakePlpy.for_key(key), no_jti)


@pytest.mark.parametrize("sub", [7, ["a"], {"id": 1}, True])
def test_non_string_sub_is_42804_from_user_id_only(key, sub):
    plpy = FakePlpy.for_key(key)
    jwt = pl.verify(plpy, sign(key, claims(sub=sub)))
    raises("42804", "invalid subject claim in the JWT", pl.user_id, plpy, jwt, None)
    assert json.loads(pl.session(plpy, jwt, None))["sub"] == sub
    assert pl.uid(plpy, jwt, None) is None


def test_audience_and_issuer_settings(key):
    plpy = FakePlpy.for_key(key, audience="app", issuer="https://issuer")
    good = mint(key, sub="a", claims={"aud": ["app"], "iss": "https://issuer"})
    assert pl.user_id(plpy, pl.verify(plpy, good), None) == "a"
    raises("23514", "audience", pl.verify, plpy, mint(key, sub="a", claims={"aud": "x", "iss": "https://issuer"}))
    raises("23514", "issuer", pl.verify, plpy, mint(key, sub="a", claims={"aud": "app"}))


@pytest.mark.parametrize("name, value", [("leeway", "1m"), ("leeway", "-5"), ("require_jti", "maybe"),
                                         ("audit_log", "2"), ("max_token_bytes", "16k")])
def test_invalid_settings_are_22023(key, name, value):
    raises("22023", f"pg_session_jwt.{name}", pl.init, FakePlpy.for_key(key, **{name: value}))


def test_max_token_bytes_setting(key):
    plpy = FakePlpy.for_key(key, max_token_bytes="200")
    raises("54000", "max_token_bytes", pl.verify, plpy, mint(key, sub="a"))


def test_audit_log_has_sub_and_aud_and_never_the_token(key):
    plpy = FakePlpy.for_key(key, audit_log="on")
    jwt = pl.verify(plpy, mint(key, sub="alice", claims={"aud": "app"}))
    pl.user_id(plpy, jwt, None)
    assert plpy.logs == ['pg_session_jwt: validated JWT for sub="alice" aud="app"']
    signature = jwt.rsplit(".", 1)[1]
    assert all(signature not in line and jwt.split(".")[1] not in line for line in plpy.logs)


def test_audit_log_off_logs_nothing(key):
    plpy = FakePlpy.for_key(key)
    pl.verify(plpy, mint(key, sub="alice"))
    assert plpy.logs == []


def test_without_a_key_request_jwt_claims_are_ignored_unless_trusted_at_connection_start():
    request = json.dumps({"sub": UID})
    assert pl.user_id(FakePlpy(), None, request) is None
    assert pl.session(FakePlpy(trust_request_claims="off"), None, request) == "null"


def test_without_a_key_trusted_request_jwt_claims_are_read():
    plpy = FakePlpy(trust_request_claims="on")
    request = json.dumps({"sub": UID, "o": {"id": ORG}, "role": "authenticated"})
    assert json.loads(pl.session(plpy, None, request))["role"] == "authenticated"
    assert pl.user_id(plpy, None, request) == UID
    assert pl.uid(plpy, None, request) == UID
    assert pl.organization_id(plpy, None, request) == ORG
    assert pl.user_id(plpy, None, '{"sub": 7}') is None


@pytest.mark.parametrize("request_claims", [None, "", "not json", '{"sub": "a", "sub": "b"}', "{"])
def test_without_a_key_bad_request_claims_are_no_session(request_claims):
    plpy = FakePlpy(trust_request_claims="on")
    assert pl.session(plpy, None, request_claims) == "null"
    assert pl.user_id(plpy, None, request_claims) is None


def test_with_a_key_request_jwt_claims_are_ignored(key):
    plpy = FakePlpy.for_key(key)
    assert pl.user_id(plpy, None, '{"sub": "mallory"}') is None
    assert pl.session(plpy, "", '{"sub": "mallory"}') == "null"


def test_without_a_key_a_token_yields_nothing(key):
    plpy = FakePlpy()
    jwt = mint(key, sub="alice")
    assert pl.user_id(plpy, jwt, None) is None
    raises("02000", "Missing runtime parameter", pl.verify, plpy, jwt)


def test_no_entry_point_even_tries_to_capture_in_parallel_mode(key, monkeypatch):
    plpy = FakePlpy.for_key(key)
    monkeypatch.setattr(pl, "in_parallel_mode", lambda: True)
    for getter in GETTERS:
        raises("55000", "parallel mode", getter, plpy, mint(key, sub="a"), None)
    # init() and jwt_session_init() are PARALLEL UNSAFE, yet run in parallel mode when a
    # PARALLEL SAFE function calls them: they must not reach SPI there either.
    raises("55000", "parallel mode", pl.init, plpy)
    assert pl.init_check(plpy)[0] == "55000"
    assert pl.start(plpy, mint(key, sub="a"), True)[0] == "55000"
    assert pl.check(plpy, mint(key, sub="a"))[0] == "55000"
    assert plpy.captures == 0 and pl.state.settings is None
    monkeypatch.setattr(pl, "in_parallel_mode", lambda: False)
    pl.init(plpy)
    assert plpy.captures == 1


def test_parallel_mode_is_false_outside_a_server():
    assert pl.in_parallel_mode() is False


class FakeServerSettings:
    """GetConfigOption and GetConfigOptionResetString of a server with `current` and
    `reset` values (bytes); asking for the reset value of a missing setting is an ERROR."""

    def __init__(self, current, reset):
        self.current, self.reset_values, self.asked = current, reset, []

    def get(self, name, missing_ok, restrict):
        assert missing_ok is True and restrict is False
        return self.current.get(name)

    def reset(self, name):
        self.asked.append(name)
        if name not in self.current:
            raise AssertionError("ERROR: unrecognized configuration parameter")
        return self.reset_values.get(name)


def test_reset_values_are_read_only_for_settings_that_exist(monkeypatch):
    server = FakeServerSettings(
        current={b"pg_session_jwt.jwk": b"set-by-session", b"pg_session_jwt.audience": b"",
                 b"pg_session_jwt.issuer": b"x"},
        reset={b"pg_session_jwt.jwk": b"from-startup", b"pg_session_jwt.audience": b"",
               b"pg_session_jwt.issuer": b"\xff\xfe"})
    monkeypatch.setattr(pl, "_reset_readers", (server.get, server.reset))
    assert pl.reset_value("pg_session_jwt.jwk") == "from-startup"
    assert pl.reset_value("pg_session_jwt.audience") == ""
    assert pl.reset_value("pg_session_jwt.leeway") is None
    assert pl.reset_value("pg_session_jwt.issuer") == "\ufffd\ufffd"
    assert b"pg_session_jwt.leeway" not in server.asked


def test_the_captured_settings_are_the_connection_start_rows_and_the_session_setting():
    from pg_session_jwt import settings

    names = {s.name for s in pl.CAPTURED}
    assert names == {s.name for s in settings.SETTINGS}
    assert {s.name for s in settings.SETTINGS if not s.connection_start} == {"jwt"}


def test_outside_a_server_no_setting_exists(monkeypatch):
    monkeypatch.setattr(pl, "_reset_readers", None)
    assert pl.reset_value("pg_session_jwt.jwk") is None


def test_errors_never_contain_the_key_or_the_token(key):
    plpy = FakePlpy.for_key(key, audience="app")
    public = json.loads(public_jwk(key))
    jwt = mint(key, sub="alice")
    for bad in (jwt, jwt[:-2], jwt + ".x.y", "x" * 20000):
        with pytest.raises(PlpyError) as info:
            pl.verify(plpy, bad)
        assert public["x"] not in info.value.message
        assert all(part not in info.value.message for part in bad.split(".") if len(part) > 8)


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_verification_never_imports_jwcrypto_or_cryptography(signing_keys, alg):
    """jwcrypto's CVEs are unreachable from SQL, and no algorithm imports `cryptography`
    (libcrypto.py, libsodium.py), which keeps a new backend cheap."""
    key = signing_keys[alg]
    jwt = mint(key, sub="alice")
    program = (
        "import sys, json\n"
        "from pg_session_jwt import keys, token\n"
        "jwk, jwt = json.load(sys.stdin)\n"
        "assert token.verify(jwt, keys.parse(jwk), 16384)[0]['sub'] == 'alice'\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('jwcrypto', 'cryptography')))\n"
        "print(json.dumps(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", program], input=json.dumps([public_jwk(key), jwt]),
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_check_returns_the_failure_instead_of_raising(key):
    """0.2.0's auth._check(): PL/pgSQL raises the pair, so the ERROR has no Python traceback."""
    plpy = FakePlpy.for_key(key)
    good = mint(key, sub="alice")
    assert pl.check(plpy, good) is None
    assert pl.session(plpy, good, None) == pl.state.current.session.claims_json
    forged = mint(generate_key("EdDSA"), sub="mallory", header={"kid": key.get("kid")})
    assert pl.check(plpy, forged) == ["23514", "invalid JWT signature"]
    sqlstate, message = pl.check(plpy, "a.b")
    assert sqlstate == "42804" and "invalid JWT encoding" in message


def test_init_check_returns_the_failure_instead_of_raising(key, monkeypatch):
    assert pl.init_check(FakePlpy.for_key(key)) is None
    monkeypatch.setattr(pl, "state", Backend())  # a new server process, without a key
    sqlstate, message = pl.init_check(FakePlpy())
    assert sqlstate == "02000" and "Missing runtime parameter: pg_session_jwt.jwk" in message


@pytest.fixture
def request_setting(monkeypatch):
    """What the server's GetConfigOption reports for request.jwt.claims (0.3.0's getters
    pass only the token setting and read the claims themselves); also counts the reads."""
    values = {"value": None, "reads": 0}

    def reader(name, missing_ok, restrict_privileged):
        assert name == b"request.jwt.claims" and missing_ok and not restrict_privileged
        values["reads"] += 1
        return None if values["value"] is None else values["value"].encode()

    monkeypatch.setattr(pl, "_get_config_option", reader)
    return values


def test_one_argument_getters_read_trusted_request_claims_themselves(request_setting):
    plpy = FakePlpy(trust_request_claims="on")
    assert pl.user_id(plpy, "") is None
    request_setting["value"] = json.dumps({"sub": UID, "o": {"id": ORG}})
    assert pl.user_id(plpy, "") == UID and pl.organization_id(plpy, None) == ORG
    # Without a key the token setting is ignored, whatever it holds.
    assert pl.uid(plpy, "x.y.z") == UID


def test_one_argument_getters_ignore_request_claims_untrusted_or_with_a_key(key, request_setting):
    request_setting["value"] = '{"sub": "mallory"}'
    assert pl.user_id(FakePlpy(), "") is None
    keyed = FakePlpy.for_key(key)
    assert pl.user_id(keyed, "") is None and pl.session(keyed, None) == "null"


def test_one_argument_getters_read_no_setting_on_a_cache_hit(key, request_setting):
    plpy = FakePlpy.for_key(key)
    failure, handle = pl.start(plpy, mint(key, sub="alice"), True)
    assert failure is None
    request_setting["value"] = '{"sub": "mallory"}'
    reads = request_setting["reads"]
    assert [pl.user_id(plpy, handle) for _ in range(3)] == ["alice"] * 3
    assert request_setting["reads"] == reads


def test_one_argument_getters_read_no_setting_without_a_session_once_a_key_is_known(
        key, request_setting):
    """Rows of a query without a session, on a connection with a key: request.jwt.claims
    cannot count there, so no getter call asks the server for it."""
    plpy = FakePlpy.for_key(key)
    assert pl.init_check(plpy) is None
    request_setting["value"] = '{"sub": "mallory"}'
    reads = request_setting["reads"]
    assert [pl.user_id(plpy, "") for _ in range(3)] == [None] * 3
    assert pl.user_id(plpy, mint(key, sub="alice")) == "alice"
    assert request_setting["reads"] == reads
