"""The token tool (devtools/jwt.py): keys, tokens, the PGOPTIONS line, the CLI's errors.

Tokens are checked twice: with jwcrypto, and with the extension's own verifier
(extension/pg_session_jwt, installed in the venv), so a token the
tool mints is one the server accepts.
"""

import json
import os
import re
import shlex
import stat
import subprocess
import sys

import pytest
from jwcrypto import jwk, jws
from pg_session_jwt import keys as ext_keys
from pg_session_jwt import token as ext_token

from builder.matrix import ROOT
from devtools import jwt as tool
from runtime.errors import UserError

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
CLI_ALGS = ("EdDSA", "ES256", "RS256")


def libpq_options_split(options):
    """How libpq's server side splits `options`: on unescaped spaces, `\\x` → x."""
    words, word, chars = [], "", iter(options)
    for ch in chars:
        if ch == "\\":
            word += next(chars, "")
        elif ch == " ":
            if word:
                words.append(word)
            word = ""
        else:
            word += ch
    if word:
        words.append(word)
    return words


def claims_of(token, key):
    verifier = jws.JWS()
    verifier.deserialize(token)
    verifier.verify(key)
    return json.loads(verifier.payload), verifier.jose_header


# --- keys ----------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", tool.ALGORITHMS)
def test_generate_key_sets_alg_kid_use(alg):
    key = tool.generate_key(alg)
    assert key.has_private
    assert key.get("alg") == alg and key.get("use") == "sig"
    assert key.get("kid") == key.thumbprint()[:16]
    assert key.get("kty") == tool.ALGORITHMS[alg]["kty"]


def test_generate_key_refuses_unknown_and_symmetric_algorithms():
    for alg in ("HS256", "none", "eddsa", ""):
        with pytest.raises(UserError, match="unknown algorithm"):
            tool.generate_key(alg)


def test_generate_key_keeps_a_given_kid():
    assert tool.generate_key("ES256", kid="k1").get("kid") == "k1"


@pytest.mark.parametrize("alg", CLI_ALGS)
def test_public_jwk_is_compact_sorted_and_public(alg):
    text = tool.public_jwk(tool.generate_key(alg))
    member = json.loads(text)
    assert not PRIVATE_MEMBERS & set(member)
    assert text == json.dumps(member, separators=(",", ":"), sort_keys=True)
    # what the server's key parser accepts as pg_session_jwt.jwk
    assert list(ext_keys.parse(text).keys[0].verifiers) == [alg]


# --- PGOPTIONS -----------------------------------------------------------------------------

@pytest.mark.parametrize("jwk_json", [
    '{"kty":"OKP","crv":"Ed25519","x":"abc"}',
    '{"kty": "OKP", "kid": "a b\\\\c", "x": "abc"}',  # spaces and a backslash
])
def test_pgoptions_value_survives_libpq_splitting(jwk_json):
    value = tool.pgoptions_value(jwk_json)
    assert libpq_options_split(value) == ["-c", f"pg_session_jwt.jwk={jwk_json}"]


def test_pgoptions_export_is_one_shell_word():
    jwk_json = '{"kid":"it\'s here","kty":"OKP"}'
    line = tool.pgoptions_export(jwk_json)
    words = shlex.split(line)
    assert words[0] == "export"
    name, _, value = words[1].partition("=")
    assert (name, value) == ("PGOPTIONS", tool.pgoptions_value(jwk_json))


# --- tokens --------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", tool.ALGORITHMS)
def test_mint_verifies_with_jwcrypto_and_the_extension(alg, signing_keys):
    key = signing_keys[alg]
    token = tool.mint(key, {"role": "admin"}, ttl=60, sub="alice")
    claims, header = claims_of(token, key)
    assert header == {"alg": alg, "typ": "JWT", "kid": key.get("kid")}
    assert claims["sub"] == "alice" and claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == 60
    assert isinstance(claims["jti"], int)
    ext_claims, _ = ext_token.verify(token, ext_keys.parse(tool.public_jwk(key)), 16384)
    assert ext_claims == claims


def test_mint_claims_and_header_override_defaults(keys):
    token = tool.mint(keys["EdDSA"], {"exp": 1, "sub": "bob"}, header={"typ": "at+jwt"},
                      sub="alice")
    claims, header = claims_of(token, keys["EdDSA"])
    assert claims["exp"] == 1 and claims["sub"] == "bob"
    assert header["typ"] == "at+jwt"


def test_mint_without_alg_member_uses_the_keys_usual_algorithm():
    for params, alg in (({"kty": "OKP", "crv": "Ed25519"}, "EdDSA"),
                        ({"kty": "EC", "crv": "P-384"}, "ES384"),
                        ({"kty": "RSA", "size": 2048}, "RS256")):
        key = jwk.JWK.generate(**params)
        _, header = claims_of(tool.mint(key, sub="a"), key)
        assert header["alg"] == alg and "kid" not in header


def test_mint_refuses_a_symmetric_key():
    with pytest.raises(UserError, match="only asymmetric keys"):
        tool.mint(jwk.JWK.generate(kty="oct", size=256), sub="a")


def test_jti_increases_even_when_the_clock_stalls_or_goes_back(monkeypatch):
    now = [2_000_000_000_000_000_000]
    monkeypatch.setattr(tool.time, "time_ns", lambda: now[0])
    seen = [tool.next_jti()]
    for step in (0, 0, -5_000_000_000, 1000):
        now[0] += step
        seen.append(tool.next_jti())
    assert seen == sorted(set(seen))


def test_jti_increases_across_processes(tmp_path):
    key_file = tmp_path / "key.json"
    assert run_cli("keygen", "--out", str(key_file)).returncode == 0
    jtis = []
    for _ in range(3):
        result = run_cli("mint", "--key", str(key_file), "--sub", "alice")
        assert result.returncode == 0, result.stderr
        jtis.append(claims_of(result.stdout.strip(), jwk.JWK.from_json(key_file.read_text()))[0]
                    ["jti"])
    assert jtis == sorted(set(jtis))


# --- parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [
    ("900", 900), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), (" 5m ", 300)])
def test_parse_ttl(text, seconds):
    assert tool.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "-5", "1.5h", "15 m", "15min", "m"])
def test_parse_ttl_refuses(text):
    with pytest.raises(UserError, match=r"invalid --ttl .*\(15m\)"):
        tool.parse_ttl(text)


def test_parse_ttl_names_the_option_it_was_given():
    with pytest.raises(UserError, match="^invalid ttl 'x'"):
        tool.parse_ttl("x", "ttl")


@pytest.mark.parametrize("text,claim", [
    ("role=admin", ("role", "admin")),
    ("n=42", ("n", 42)),
    ("ok=true", ("ok", True)),
    ("o={\"id\": 1}", ("o", {"id": 1})),
    ("a=b=c", ("a", "b=c")),
    ("empty=", ("empty", "")),
])
def test_parse_claim(text, claim):
    assert tool.parse_claim(text) == claim


@pytest.mark.parametrize("text", ["role", "=admin", ""])
def test_parse_claim_refuses(text):
    with pytest.raises(UserError, match="write it as name=value"):
        tool.parse_claim(text)


def test_load_key_errors_name_the_file_and_the_fix(tmp_path, keys):
    missing = tmp_path / "missing.json"
    with pytest.raises(UserError, match=f"cannot read key file {missing}.*keygen"):
        tool.load_key(missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    with pytest.raises(UserError, match="is not a JWK"):
        tool.load_key(garbage)
    public = tmp_path / "public.json"
    public.write_text(tool.public_jwk(keys["EdDSA"]))
    with pytest.raises(UserError, match="holds a public key"):
        tool.load_key(public)


# --- the command line ----------------------------------------------------------------------

def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "devtools.jwt", *args], cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("alg", CLI_ALGS)
def test_keygen_writes_a_private_key_and_prints_public_and_pgoptions(alg, tmp_path, capsys):
    out = tmp_path / "key.json"
    assert tool.main(["keygen", "--alg", alg, "--out", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    key = jwk.JWK.from_json(out.read_text())
    assert key.has_private and key.get("alg") == alg
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"# private key written to {out}; public JWK:"
    assert lines[1] == tool.public_jwk(key)
    assert shlex.split(lines[2]) == ["export", f"PGOPTIONS={tool.pgoptions_value(lines[1])}"]


def test_keygen_defaults_to_eddsa_in_key_json(tmp_path):
    result = run_cli("keygen", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert jwk.JWK.from_json((tmp_path / "key.json").read_text()).get("alg") == "EdDSA"


def test_keygen_keeps_an_existing_key_unless_forced(tmp_path, capsys):
    out = tmp_path / "key.json"
    out.write_text("precious")
    os.chmod(out, 0o644)
    assert tool.main(["keygen", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists: pass --force" in err
    assert out.read_text() == "precious"
    assert tool.main(["keygen", "--out", str(out), "--force"]) == 0
    assert jwk.JWK.from_json(out.read_text()).has_private
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_mint_prints_a_token_with_sub_ttl_and_claims(tmp_path, capsys):
    out = tmp_path / "key.json"
    tool.main(["keygen", "--alg", "ES256", "--out", str(out)])
    capsys.readouterr()
    assert tool.main(["mint", "--key", str(out), "--sub", "alice", "--ttl", "2h",
                      "--claim", "role=admin", "--claim", "n=3"]) == 0
    token = capsys.readouterr().out.strip()
    claims, _ = claims_of(token, jwk.JWK.from_json(out.read_text()))
    assert claims["sub"] == "alice" and claims["role"] == "admin" and claims["n"] == 3
    assert claims["exp"] - claims["iat"] == 7200


@pytest.mark.parametrize("args,message", [
    (["mint", "--key", "{tmp}/missing.json", "--sub", "a"], "cannot read key file"),
    (["mint", "--key", "{key}", "--sub", "a", "--claim", "novalue"], "invalid --claim"),
    (["mint", "--key", "{key}", "--sub", "a", "--ttl", "soon"], "invalid --ttl"),
    (["mint", "--key", "{key}"], "required: --sub"),
    (["keygen", "--alg", "HS256", "--out", "{tmp}/k.json"], "unknown algorithm 'HS256'"),
    (["keygen", "--out", "{tmp}/no/such/dir/k.json"], "cannot write key file"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, keys):
    key_file = tmp_path / "key.json"
    key_file.write_text(keys["EdDSA"].export_private())
    args = [a.format(tmp=tmp_path, key=key_file) for a in args]
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert re.match(r"error: ", result.stderr) and message in result.stderr
    assert "Traceback" not in result.stderr
