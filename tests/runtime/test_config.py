"""runtime/config.py: the entrypoint's checks of PG_SESSION_JWT_* and the settings YAML.

Runs on the host without Docker; a fake server stands in for `postgres --describe-config`.
Keys are judged by the extension's own parser, the one JWK checker, as in the image.
"""

import json

import pytest

from devtools.jwt import generate_key, public_jwk
from runtime import config as rc
from runtime.errors import UserError


class FakeServer:
    """Knows the names it was given, like ServerSettings does for a real binary."""

    def __init__(self, *names):
        self.names = set(names) | {"shared_buffers", "work_mem", "statement_timeout", "io_method"}

    def __contains__(self, name):
        return name in self.names


@pytest.fixture(scope="module")
def public():
    return {alg: json.loads(public_jwk(generate_key(alg))) for alg in ("EdDSA", "ES256", "RS256")}


def write(tmp_path, text, name="postgresql.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- the key -------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_public_keys_are_accepted_and_made_one_line(public, alg):
    text = json.dumps(public[alg], indent=2)
    out = rc.check_jwk(text, "PG_SESSION_JWT_JWK")
    assert "\n" not in out
    assert json.loads(out) == public[alg]


def test_a_jwks_is_accepted(public):
    jwks = {"keys": [public["EdDSA"], public["ES256"]]}
    assert json.loads(rc.check_jwk(json.dumps(jwks), "X")) == jwks


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"keys": []}', "non-empty array"),
    ('{"keys": [42]}', "key 0 is not a JSON object"),
    ('{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0"}', "symmetric keys"),
    ('{"kty": "XYZ"}', "kty 'XYZ'"),
    ('{"crv": "Ed25519", "x": "abc"}', "kty None"),
    ('{"kty": "EC", "crv": "P-256", "x": "abc"}', "lacks the \"y\" member"),
])
def test_bad_keys_are_refused_naming_the_variable_and_the_fix(text, words):
    with pytest.raises(UserError) as err:
        rc.check_jwk(text, "PG_SESSION_JWT_JWK_FILE")
    assert str(err.value).startswith("PG_SESSION_JWT_JWK_FILE: pg_session_jwt.jwk is unusable: ")
    assert words in str(err.value) and "devtools.jwt keygen" in str(err.value)


def test_a_private_key_is_refused_without_echoing_it():
    private = json.loads(generate_key("EdDSA").export_private())
    with pytest.raises(UserError) as err:
        rc.check_jwk(json.dumps(private), "PG_SESSION_JWT_JWK")
    assert "private key members (d)" in str(err.value)
    assert private["d"] not in str(err.value) and private["x"] not in str(err.value)


def test_an_oct_key_inside_a_jwks_is_refused(public):
    jwks = {"keys": [public["EdDSA"], {"kty": "oct", "k": "AAAA", "kid": "s"}]}
    with pytest.raises(UserError, match="symmetric keys"):
        rc.check_jwk(json.dumps(jwks), "PG_SESSION_JWT_JWK")


def test_what_only_a_real_parser_sees_is_refused(public):
    short_x = dict(public["EdDSA"], x="AAAA")
    with pytest.raises(UserError, match=r"^PG_SESSION_JWT_JWK: .*32 bytes"):
        rc.check_jwk(json.dumps(short_x), "PG_SESSION_JWT_JWK")
    assert json.loads(rc.check_jwk(json.dumps(public["RS256"]), "X")) == public["RS256"]


# --- the environment -----------------------------------------------------------------------

def test_env_value_and_file_variant(tmp_path):
    secret = tmp_path / "jwk.json"
    secret.write_text("  {}\n\n")
    assert rc.env_value({}, "A", with_file=True) == (None, None)
    assert rc.env_value({"A": ""}, "A", with_file=True) == (None, None)
    assert rc.env_value({"A": "x"}, "A", with_file=True) == ("x", "A")
    assert rc.env_value({"A_FILE": str(secret)}, "A", with_file=True) == ("  {}", "A_FILE")
    assert rc.env_value({"A_FILE": str(secret)}, "A") == (None, None)


def test_env_value_refuses_both_and_missing_files(tmp_path):
    with pytest.raises(UserError, match="both A and A_FILE are set"):
        rc.env_value({"A": "x", "A_FILE": "/y"}, "A", with_file=True)
    with pytest.raises(UserError, match=r"^A_FILE: cannot read .*nope"):
        rc.env_value({"A_FILE": str(tmp_path / "nope")}, "A", with_file=True)


def test_env_settings_quotes_for_postgresql_conf(public):
    env = {"PG_SESSION_JWT_JWK": json.dumps(public["EdDSA"]),
           "PG_SESSION_JWT_AUDIENCE": "it's-me\\you", "PG_SESSION_JWT_ISSUER": "https://issuer"}
    out = rc.env_settings(env)
    assert list(out) == ["pg_session_jwt.jwk", "pg_session_jwt.audience", "pg_session_jwt.issuer"]
    assert out["pg_session_jwt.audience"] == "'it''s-me\\\\you'"
    assert json.loads(out["pg_session_jwt.jwk"][1:-1]) == public["EdDSA"]


@pytest.mark.parametrize("value, words", [("a\nb", "one line"), (" aud", "leading or trailing")])
def test_bad_audience_is_refused_naming_the_variable(value, words):
    with pytest.raises(UserError, match=f"^PG_SESSION_JWT_AUDIENCE: .*{words}"):
        rc.env_settings({"PG_SESSION_JWT_AUDIENCE": value})


# --- the YAML ------------------------------------------------------------------------------

YAML = """\
settings:
  work_mem: 8MB
  app.tenant: acme
  pg_session_jwt.leeway: 5
overrides:
  17:
    statement_timeout: 42s
"""


def test_yaml_renders_with_overrides_for_the_major(tmp_path):
    path = write(tmp_path, YAML)
    out = rc.yaml_settings(path, 17, FakeServer())
    assert out == {"work_mem": "'8MB'", "app.tenant": "'acme'", "pg_session_jwt.leeway": "5",
                   "statement_timeout": "'42s'"}
    assert "statement_timeout" not in rc.yaml_settings(path, 15, FakeServer())


# Each refused YAML: its text, the line the message must name, and what it must say there.
REFUSED_YAML = {
    "unknown setting": ("settings:\n  work_mem: 8MB\n  shared_bufers: 1GB\n", 3,
                        "unknown setting 'shared_bufers'"),
    "unknown setting in an override": (
        "settings:\n  work_mem: 8MB\noverrides:\n  17:\n    io_methd: worker\n", 5,
        "unknown setting 'io_methd'"),
    "bad YAML": ("settings:\n  work_mem: 8MB\n   bad: [\n", 3, "invalid YAML"),
    "unknown extension setting": ("settings:\n  pg_session_jwt.leway: 5\n", 2,
                                  "unknown setting 'pg_session_jwt.leway'"),
    "extension setting value": ("settings:\n  pg_session_jwt.leeway: soon\n", 2,
                                "pg_session_jwt.leeway must be a whole number"),
    "the session token server-wide": ("settings:\n  pg_session_jwt.jwt: abc\n", 2,
                                      "pg_session_jwt.jwt cannot be set server-wide"),
    "a symmetric key": ('settings:\n  pg_session_jwt.jwk: \'{"kty":"oct","k":"AAAA"}\'\n', 2,
                        "pg_session_jwt.jwk: .*symmetric"),
}


@pytest.mark.parametrize("case", REFUSED_YAML)
def test_a_refused_yaml_names_file_line_and_problem(tmp_path, case):
    text, line, message = REFUSED_YAML[case]
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=rf"^{path}:{line}: {message}"):
        rc.yaml_settings(path, 17, FakeServer())


# --- the whole fragment and the command ----------------------------------------------------

def test_fragment_environment_after_yaml(tmp_path, public):
    path = write(tmp_path, "settings:\n  work_mem: 8MB\n  pg_session_jwt.issuer: from-yaml\n")
    env = {"PG_SESSION_JWT_CONFIG_YAML": path, "PG_SESSION_JWT_ISSUER": "from-env"}
    text = rc.fragment(env, 17, FakeServer(), default_yaml=str(tmp_path / "absent.yaml"))
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == ["work_mem = '8MB'", "pg_session_jwt.issuer = 'from-yaml'",
                     "pg_session_jwt.issuer = 'from-env'"]


def test_fragment_uses_the_default_yaml_only_when_present(tmp_path):
    default = tmp_path / "postgresql.yaml"
    assert "work_mem" not in rc.fragment({}, 17, FakeServer(), default_yaml=str(default))
    default.write_text("settings:\n  work_mem: 8MB\n")
    assert "work_mem = '8MB'" in rc.fragment({}, 17, FakeServer(), default_yaml=str(default))


def test_a_named_yaml_must_exist(tmp_path):
    with pytest.raises(UserError, match="PG_SESSION_JWT_CONFIG_YAML=.*no such file"):
        rc.fragment({"PG_SESSION_JWT_CONFIG_YAML": str(tmp_path / "x.yaml")}, 17, FakeServer())


def test_main_keeps_the_old_file_when_refused(tmp_path, capsys):
    out = tmp_path / "runtime.conf"
    out.write_text("old\n")
    code = rc.main(["--major", "17", "--out", str(out)], env={"PG_SESSION_JWT_JWK": "{"})
    assert code == 2
    assert out.read_text() == "old\n"
    assert capsys.readouterr().err.startswith(
        "error: PG_SESSION_JWT_JWK: pg_session_jwt.jwk is unusable: not valid JSON")
    assert list(tmp_path.iterdir()) == [out]


def test_main_writes_the_fragment(tmp_path, public):
    out = tmp_path / "runtime.conf"
    env = {"PG_SESSION_JWT_JWK": json.dumps(public["ES256"])}
    assert rc.main(["--major", "17", "--out", str(out)], env=env) == 0
    assert "pg_session_jwt.jwk = '{" in out.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o644"


# --- a JWKS URL ----------------------------------------------------------------------------

JWKS_ENV = {"PG_SESSION_JWT_JWKS_URL": "https://issuer.example/.well-known/jwks.json",
            "PG_SESSION_JWT_AUDIENCE": "app"}


def settings_lines(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_jwks_url_turns_require_jti_off_and_is_not_written(tmp_path):
    text = rc.fragment(JWKS_ENV, 17, FakeServer(), default_yaml=str(tmp_path / "absent.yaml"))
    assert settings_lines(text) == ["pg_session_jwt.audience = 'app'",
                                    "pg_session_jwt.require_jti = off"]
    assert "issuer.example" not in text


def test_jwks_url_keeps_require_jti_from_the_yaml(tmp_path):
    path = write(tmp_path, "settings:\n  pg_session_jwt.require_jti: true\n")
    env = {**JWKS_ENV, "PG_SESSION_JWT_CONFIG_YAML": path}
    assert "require_jti = off" not in rc.fragment(env, 17, FakeServer())


@pytest.mark.parametrize("extra, words", [
    ({"PG_SESSION_JWT_AUDIENCE": ""}, "PG_SESSION_JWT_AUDIENCE is not"),
    ({"PG_SESSION_JWT_JWK": json.dumps({"kty": "OKP", "crv": "Ed25519",
                                        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})},
     "are both set"),
    ({"PG_SESSION_JWT_JWKS_URL": "http://issuer.example/jwks"}, "PG_SESSION_JWT_JWKS_ALLOW_HTTP=on"),
    ({"PG_SESSION_JWT_JWKS_REFRESH_MIN": "soon"}, "whole number of seconds"),
])
def test_jwks_url_refusals_name_the_variable_and_the_fix(tmp_path, extra, words):
    with pytest.raises(UserError, match=words):
        rc.fragment({**JWKS_ENV, **extra}, 17, FakeServer(),
                    default_yaml=str(tmp_path / "absent.yaml"))


def test_jwks_url_allow_any_audience(tmp_path):
    env = {"PG_SESSION_JWT_JWKS_URL": JWKS_ENV["PG_SESSION_JWT_JWKS_URL"],
           "PG_SESSION_JWT_ALLOW_ANY_AUDIENCE": "on"}
    text = rc.fragment(env, 17, FakeServer(), default_yaml=str(tmp_path / "absent.yaml"))
    assert settings_lines(text) == ["pg_session_jwt.require_jti = off"]


# --- several issuers ---------------------------------------------------------------------

ISSUERS = [{"issuer": "https://a.example/", "jwks_url": "https://a.example/jwks.json",
            "audience": ["db", "api"]},
           {"issuer": "https://b.example", "jwks_url": "https://b.example/keys",
            "audience": "client-1", "audience_claim": "client_id", "user_id_claim": "username"}]


def test_issuers_turn_require_jti_off_and_are_not_written(tmp_path):
    env = {"PG_SESSION_JWT_ISSUERS": json.dumps(ISSUERS)}
    text = rc.fragment(env, 17, FakeServer(), default_yaml=str(tmp_path / "absent.yaml"))
    assert "pg_session_jwt.require_jti = off" in text and "a.example" not in text


@pytest.mark.parametrize("extra, words", [
    ({"PG_SESSION_JWT_JWKS_URL": "https://x/jwks"}, "PG_SESSION_JWT_ISSUERS and "
     "PG_SESSION_JWT_JWKS_URL are both set"),
    ({"PG_SESSION_JWT_AUDIENCE": "db"}, "move PG_SESSION_JWT_AUDIENCE into the entries"),
    ({"PG_SESSION_JWT_ISSUERS": json.dumps([{**ISSUERS[0], "audeince": "x"}])},
     r"PG_SESSION_JWT_ISSUERS\[0\] \(issuer 'https://a.example/'\): unknown field 'audeince'"),
])
def test_issuers_refusals_name_the_problem(tmp_path, extra, words):
    env = {"PG_SESSION_JWT_ISSUERS": json.dumps(ISSUERS), **extra}
    with pytest.raises(UserError, match=words):
        rc.fragment(env, 17, FakeServer(), default_yaml=str(tmp_path / "absent.yaml"))


def test_yaml_issuers_are_checked_with_file_and_line_and_printed_for_the_entrypoint(
        tmp_path, capsys):
    import yaml

    good = write(tmp_path, yaml.safe_dump({"settings": {"work_mem": "8MB"}, "issuers": ISSUERS},
                                          sort_keys=False))
    out = tmp_path / "runtime.conf"
    env = {"PG_SESSION_JWT_CONFIG_YAML": good}
    assert rc.main(["--major", "17", "--out", str(out), "--print-issuers"], env=env) == 0
    assert json.loads(capsys.readouterr().out) == ISSUERS
    assert "require_jti = off" in out.read_text()
    bad = write(tmp_path, "settings:\n  work_mem: 8MB\nissuers:\n  - issuer: https://a\n"
                "    jwks_url: https://a/jwks\n  - issuer: https://b\n    jwks_url: https://b/k\n"
                "    audience: x\n    user_id_clam: oid\n", name="bad.yaml")
    with pytest.raises(UserError, match=rf"^{bad}:4: issuers\[0\] \(issuer 'https://a'\): "
                       "\"audience\" is required"):
        rc.fragment({"PG_SESSION_JWT_CONFIG_YAML": bad}, 17, FakeServer())
    bad2 = write(tmp_path, "issuers:\n  - issuer: https://b\n    jwks_url: https://b/k\n"
                 "    audience: x\n    user_id_clam: oid\n", name="bad2.yaml")
    with pytest.raises(UserError, match=rf"^{bad2}:2: issuers\[0\] .*unknown field 'user_id_clam'"):
        rc.fragment({"PG_SESSION_JWT_CONFIG_YAML": bad2}, 17, FakeServer())
    with pytest.raises(UserError, match="keep one list of issuers"):
        rc.fragment({"PG_SESSION_JWT_CONFIG_YAML": good,
                     "PG_SESSION_JWT_ISSUERS": json.dumps(ISSUERS)}, 17, FakeServer())


def test_skipped_keys_of_a_static_set_are_named_once_at_start(public, capsys):
    enc = {**public["RS256"], "kid": "enc-1", "use": "enc", "alg": "RSA-OAEP"}
    rc.check_jwk(json.dumps({"keys": [public["EdDSA"], enc]}), "PG_SESSION_JWT_JWK")
    err = capsys.readouterr().err
    assert "PG_SESSION_JWT_JWK: using kids" in err
    assert "skipped kid 'enc-1' is an encryption key" in err
