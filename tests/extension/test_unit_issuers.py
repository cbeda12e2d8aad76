"""PG_SESSION_JWT_ISSUERS in one backend, over real files with a fake fetcher and clock:
each provider's look-alike (tests/support/providers.py) accepted with its recipe and
refused where it must be, several issuers at once, and the entry checks."""

import json
import time

import pytest
from pg_session_jwt import jwks, keys
from pg_session_jwt.errors import JwtError
from pg_session_jwt.session import Backend

from devtools.jwt import generate_key, mint, public_jwk
from tests.support import providers
from tests.support.jwks_fakes import Clock, Issuer


class Served:
    """Fake fetchers by URL: each issuer's document and headers, or its failure."""

    def __init__(self):
        self.by_url = {}

    def add(self, url, provider):
        fake = Issuer(headers={"Cache-Control": provider.cache_control})
        fake.document = provider.jwks()
        self.by_url[url] = fake
        return fake

    def __call__(self, config):
        return self.by_url[config.url](config)


def backend_for(tmp_path, entries, served, clock, log=None, **env):
    backend = Backend(environ={jwks.ISSUERS_VARIABLE: json.dumps(entries), **env})
    backend.make_source = lambda config: jwks.Source(config, directory=str(tmp_path),
                                                     fetcher=served, clock=clock, log=log)
    backend.configure({}, log)
    return backend


def url_of(provider):
    return f"https://{provider.name.lower().replace(' ', '-')}.example/jwks"


@pytest.fixture(scope="module", params=providers.PROVIDERS, ids=lambda f: f.__name__)
def provider(request):
    return request.param()


@pytest.fixture()
def served():
    return Served()


def one(tmp_path, provider, served, clock=None, log=None):
    served.add(url_of(provider), provider)
    return backend_for(tmp_path, [provider.issuer_entry(jwks_url=url_of(provider))], served,
                       clock or time.time, log)


def refused(backend, jwt, sqlstate="23514"):
    with pytest.raises(JwtError) as info:
        backend.verify(jwt, time.time())
    assert info.value.sqlstate == sqlstate, info.value.message
    return info.value.message


def test_each_provider_is_accepted_with_its_recipe(tmp_path, provider, served):
    lines = []
    backend = one(tmp_path, provider, served, log=lines.append)
    session = backend.verify(provider.token(), time.time())
    assert session.sub == provider.user
    skipped = [line for line in lines if "skipped" in line]
    if provider.name in ("Keycloak",):
        assert skipped and "is an encryption key" in skipped[0]


def test_each_provider_refuses_another_audience(tmp_path, provider, served):
    if provider.entry.get("allow_any_audience"):
        pytest.skip("the recipe takes any audience: nothing in these tokens names the app")
    backend = one(tmp_path, provider, served)
    claim = provider.entry.get("audience_claim", "aud")
    message = refused(backend, provider.token(**{claim: "someone-else"}))
    assert f"audience ({claim!r}) does not match" in message and provider.issuer in message
    assert f"audience ({claim!r}) is missing" in refused(backend, provider.token(**{claim: None}))


def test_each_provider_refuses_an_unknown_issuer_and_a_foreign_key(tmp_path, provider, served):
    backend = one(tmp_path, provider, served)
    message = refused(backend, provider.token(iss=provider.issuer + "x"))
    assert "is not one of the issuers this server trusts" in message
    assert repr(provider.issuer) not in message, "the trusted issuers are configuration"
    # No normalisation: a trailing slash more or less is another issuer.
    other = provider.issuer[:-1] if provider.issuer.endswith("/") else provider.issuer + "/"
    assert "is not one of" in refused(backend, provider.token(iss=other))
    # A key of the attacker's under the provider's kid.
    forged = generate_key(provider.signing_key.get("alg"), kid=provider.signing_key.get("kid"))
    message = refused(backend, provider.token(key=forged))
    assert "invalid JWT signature" in message
    assert f"issuer {provider.issuer!r}" in message
    assert repr(provider.signing_key.get("kid")) in message


def test_a_keycloak_token_naming_its_encryption_key_is_told_why(tmp_path, served):
    kc = providers.keycloak()
    backend = one(tmp_path, kc, served)
    enc = next(m for m in kc.members if m.get("use") == "enc")
    header = {"alg": "RS256", "kid": enc["kid"]}
    message = refused(backend, kc.token(header=header))
    assert f"JWT 'kid' {enc['kid']!r} is an encryption key" in message


# --- several issuers at once ---------------------------------------------------------------

def test_two_issuers_with_the_same_kid_each_verify_with_their_own_keys(tmp_path, served):
    a_key, b_key = generate_key("EdDSA", kid="shared"), generate_key("ES256", kid="shared")
    entries = [{"issuer": "https://a.example", "jwk": json.loads(public_jwk(a_key)),
                "audience": "db"},
               {"issuer": "https://b.example", "jwk": public_jwk(b_key), "audience": ["db", "x"],
                "user_id_claim": "uid"}]
    backend = backend_for(tmp_path, entries, served, Clock())
    now = time.time()
    a = backend.verify(mint(a_key, sub="alice", claims={"iss": "https://a.example", "aud": "db"}),
                       now)
    b = backend.verify(mint(b_key, claims={"iss": "https://b.example", "aud": ["x"],
                                           "uid": "bob"}), now)
    assert (a.sub, b.sub) == ("alice", "bob")
    # A's token claiming B's iss: B's keys only, and B's key of that kid is not A's.
    message = refused(backend, mint(a_key, sub="m", claims={"iss": "https://b.example",
                                                            "aud": "db"}))
    assert "invalid JWT signature" in message or "does not match the key" in message
    assert "'https://b.example'" in message and "'shared'" in message


def test_one_issuer_going_away_leaves_the_other_working(tmp_path, served):
    clock = Clock()
    up, down = providers.supabase(), providers.neon_auth()
    served.add(url_of(up), up)
    away = served.add(url_of(down), down)
    entries = [up.issuer_entry(jwks_url=url_of(up)), down.issuer_entry(jwks_url=url_of(down))]
    lines = []
    backend = backend_for(tmp_path, entries, served, clock, lines.append)
    assert backend.verify(down.token(now=clock()), clock()).sub == down.user
    away.failure = jwks.FetchError("cannot reach the issuer (refused)", unreachable=True)
    away.document = "<html>maintenance</html>"
    for _ in range(10):      # an hour: both sets go stale, one issuer cannot be refreshed
        clock.now += 400
        assert backend.verify(up.token(now=clock()), clock()).sub == up.user
        # Kept while its issuer is away, still good.
        assert backend.verify(down.token(now=clock()), clock()).sub == down.user
    assert served.by_url[url_of(up)].requests >= 5
    assert any("could not refresh" in line and url_of(down) in line for line in lines)
    rows = {row["issuer"]: row for row in backend.key_sets(clock())}
    assert rows[down.issuer]["last_failure"] and rows[up.issuer]["last_failure"] is None
    assert rows[up.issuer]["kids"] == sorted(m["kid"] for m in up.members)


def test_an_issuer_never_fetched_refuses_only_its_own_tokens(tmp_path, served):
    up, down = providers.google(), providers.okta()
    served.add(url_of(up), up)
    served.add(url_of(down), down).failure = jwks.FetchError("timed out", unreachable=True)
    backend = backend_for(tmp_path, [up.issuer_entry(jwks_url=url_of(up)),
                                     down.issuer_entry(jwks_url=url_of(down))], served, Clock())
    assert backend.verify(up.token(), time.time()).sub == up.user
    message = refused(backend, down.token(), "02000")
    assert "timed out" in message and down.issuer in message


def test_key_sets_lists_every_issuer(tmp_path, served):
    kc, neon = providers.keycloak(), providers.neon_auth()
    served.add(url_of(kc), kc)
    backend = backend_for(tmp_path, [kc.issuer_entry(jwks_url=url_of(kc)),
                                     neon.issuer_entry(jwk=neon.jwks())], served, Clock())
    backend.verify(kc.token(), time.time())
    rows = {row["issuer"]: row for row in backend.key_sets(0)}
    assert rows[kc.issuer]["source"] == url_of(kc) and rows[neon.issuer]["source"] == "static"
    assert rows[kc.issuer]["kids"] == [kc.signing_key.get("kid")]
    enc = next(m for m in kc.members if m.get("use") == "enc")
    assert rows[kc.issuer]["skipped"] == [(enc["kid"], 'is an encryption key ("use": "enc")')]
    assert rows[kc.issuer]["fetched_at"] < rows[kc.issuer]["good_until"]
    assert len(rows[neon.issuer]["kids"]) == 2


# --- the entries, checked --------------------------------------------------------------------

URL = "https://id.example/jwks"


@pytest.mark.parametrize("entries, words", [
    ("not json", "PG_SESSION_JWT_ISSUERS is not valid JSON"),
    ([], "non-empty list"),
    ([42], "PG_SESSION_JWT_ISSUERS[0]: must be an object"),
    ([{"jwks_url": URL}], "PG_SESSION_JWT_ISSUERS[0]: \"issuer\" is required"),
    ([{"issuer": "i", "jwks_url": URL, "audiance": "x"}], "(issuer 'i'): unknown field 'audiance'"),
    ([{"issuer": "i", "jwks_url": URL}], "\"audience\" is required with \"jwks_url\""),
    ([{"issuer": "i"}], "exactly one of \"jwks_url\""),
    ([{"issuer": "i", "jwks_url": URL, "jwk": "{}", "audience": "a"}], "exactly one of"),
    ([{"issuer": "i", "jwks_url": "http://id.example/", "audience": "a"}],
     "\"allow_http\": true"),
    ([{"issuer": "i", "jwks_url": URL, "audience": 7}], "\"audience\" must be a string"),
    ([{"issuer": "i", "jwks_url": URL, "audience": "a", "allow_any_audience": True}],
     "keep one"),
    ([{"issuer": "i", "jwks_url": URL, "audience": "a", "refresh_min": "60"}], "refresh_min"),
    ([{"issuer": "i", "jwks_url": URL, "audience": "a", "ca_file": "/nonexistent"}],
     "no such file"),
    ([{"issuer": "i", "jwks_url": URL, "audience": "a", "user_id_claim": ""}], "user_id_claim"),
    ([{"issuer": "i", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}], "symmetric"),
    ([{"issuer": "i", "jwk": "{}", "refresh_min": 5}], "applies to \"jwks_url\" only"),
    ([{"issuer": "i", "jwks_url": URL, "audience": "a"},
      {"issuer": "i", "jwks_url": URL, "audience": "b"}], "entries 0 and 1 have the same issuer"),
])
def test_bad_entries_are_refused_naming_the_entry_and_field(entries, words):
    text = entries if isinstance(entries, str) else json.dumps(entries)
    with pytest.raises(JwtError) as info:
        jwks.issuers_from_env({jwks.ISSUERS_VARIABLE: text})
    assert info.value.sqlstate == "22023" and words in info.value.message, info.value.message


def test_defaults_come_from_the_single_issuer_variables(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    [entry] = jwks.issuers_from_env({
        jwks.ISSUERS_VARIABLE: json.dumps([{"issuer": "i", "jwks_url": "http://id/x",
                                            "audience": "a"}]),
        jwks.CA_VARIABLE: str(ca), jwks.HTTP_VARIABLE: "on", jwks.REFRESH_VARIABLE: "7"})
    assert (entry.config.ca_file, entry.config.allow_http, entry.config.refresh_min) == (
        str(ca), True, 7)
    assert (entry.audience_claim, entry.user_id_claim) == ("aud", "sub")
    assert entry.config.file_names() != (jwks.CACHE_NAME, jwks.LOCK_NAME)


def test_the_issuer_picks_the_keys_before_anything_else(tmp_path, served):
    """A token without iss, or with a non-string one, names no issuer."""
    key = generate_key("EdDSA")
    backend = backend_for(tmp_path, [{"issuer": "https://a.example", "jwk": public_jwk(key)}],
                          served, Clock())
    assert "has no issuer" in refused(backend, mint(key, sub="x"))
    assert "is not one of" in refused(backend, mint(key, sub="x", claims={"iss": ["a"]}))
    with pytest.raises(keys.UnknownKid):
        backend.verify(mint(generate_key("EdDSA", kid="other"), sub="x",
                            claims={"iss": "https://a.example"}), time.time())


def test_any_issuers_value_gives_issuers_or_a_clean_refusal():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
                        st.sampled_from([URL, "http://id/x", "aud", "sub", "https://i"]))
    fields = st.sampled_from(list(jwks.ISSUER_FIELDS) + ["other"])
    values = st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(fields, inner, max_size=5)), max_leaves=12)

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(values, st.lists(st.dictionaries(fields, values, max_size=6), max_size=3)))
    def check(value):
        try:
            out = jwks.parse_issuers(value, {}, jwks.ISSUERS_VARIABLE)
        except JwtError as exc:
            assert exc.sqlstate == "22023" and exc.message.startswith(jwks.ISSUERS_VARIABLE)
            return
        assert out and all(isinstance(issuer.issuer, str) for issuer in out)

    check()


def test_any_token_is_verified_or_refused_with_a_jwt_error(tmp_path, served):
    """The payload is parsed before the signature is checked (its iss picks the keys):
    whatever it holds ends in a clean refusal."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.support.jws import b64

    key = generate_key("EdDSA", kid="k")
    backend = backend_for(tmp_path, [{"issuer": "https://a.example", "jwk": public_jwk(key),
                                      "audience": "db"}], served, Clock())
    header = b64(json.dumps({"alg": "EdDSA", "kid": "k"}))
    genuine = mint(key, sub="x", claims={"iss": "https://a.example", "aud": "db"}).split(".")
    payloads = st.one_of(st.binary(max_size=40), st.recursive(
        st.one_of(st.none(), st.integers(), st.text(max_size=10),
                  st.just("https://a.example")),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
            st.sampled_from(["iss", "aud", "sub", "exp", "nbf"]), inner, max_size=5)),
        max_leaves=10).map(lambda v: json.dumps(v).encode()))

    @settings(max_examples=300, deadline=None)
    @given(payloads, st.sampled_from([genuine[2], "", "AAAA", b64(b"x" * 64)]))
    def check(payload, signature):
        try:
            backend.verify(f"{header}.{b64(payload)}.{signature}", time.time())
        except JwtError as exc:
            assert exc.sqlstate in ("42804", "23514", "54000"), exc.message

    check()


def test_a_refusal_before_the_signature_never_logs_the_token_s_sub(tmp_path, served):
    """Anyone can sign {"iss": <unknown>, "sub": "victim"} with any key: the log must not
    attribute that refusal to the victim, nor let a forged kid pick the reason code."""
    provider = providers.PROVIDERS[0]()
    lines = []
    served.add(url_of(provider), provider)
    backend = Backend(environ={jwks.ISSUERS_VARIABLE: json.dumps(
        [provider.issuer_entry(jwks_url=url_of(provider))])})
    backend.make_source = lambda config: jwks.Source(config, directory=str(tmp_path),
                                                     fetcher=served, clock=time.time)
    backend.configure({"log_refusals": "on"}, lines.append)
    attacker = generate_key(provider.signing_key.get("alg"), kid="kid")
    for forged in (provider.token(key=attacker, iss="https://evil.example", sub="victim"),
                   provider.token(key=attacker, iss=None, sub="victim")):
        refused(backend, forged)
    forged = provider.token(key=generate_key(provider.signing_key.get("alg"), kid="kid"),
                            sub="victim")
    refused(backend, forged)
    assert len(lines) == 3 and not [line for line in lines if "victim" in line], lines
    assert [line.split()[3] for line in lines] == ["reason=wrong_issuer"] * 2 + [
        "reason=unknown_kid"], lines
    # Signed, then refused: the sub is the issuer's word, and is logged.
    refused(backend, provider.token(sub="late", exp=int(time.time()) - 3600))
    assert "reason=expired" in lines[-1] and 'sub="late"' in lines[-1]
