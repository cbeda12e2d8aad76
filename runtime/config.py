"""The image's run-time configuration, checked and written before the server starts.

The entrypoint runs this at every container start, before it touches the data directory:

    python3 -m runtime.config --major 17 --out /var/run/postgresql/pg-session-jwt.conf

It reads, from the environment,
  PG_SESSION_JWT_JWK or PG_SESSION_JWT_JWK_FILE   the server-wide key: a public JWK or a JWKS
  PG_SESSION_JWT_AUDIENCE, PG_SESSION_JWT_ISSUER  required `aud` / `iss` of every token
  PG_SESSION_JWT_JWKS_URL (+ _REFRESH_MIN, _CA_FILE, _ALLOW_HTTP, PG_SESSION_JWT_ALLOW_ANY_AUDIENCE)
                                                  an identity provider's JWK Set instead of a
                                                  JWK; backends read these from the server's
                                                  environment, this only checks them
  PG_SESSION_JWT_ISSUERS                          several trusted issuers, a JSON array (or
                                                  `issuers:` in the YAML, which --print-issuers
                                                  prints as that JSON for the entrypoint to
                                                  export); checked here, read by backends
  PG_SESSION_JWT_CONFIG_YAML                      a settings YAML (default
                                                  /etc/postgresql/postgresql.yaml, if present)
checks them, and writes one postgresql.conf fragment, which the image's postgresql.conf
includes last. The YAML has the format of images/postgresql.yaml (`settings:` and optional
`overrides:` by major) and is rendered by the same renderer as the build. Its setting names
are checked against the server (`postgres --describe-config`, then `postgres -C` for the
developer options that list leaves out); a name with a dot is a custom setting and is
accepted, except under the `pg_session_jwt.` prefix, where only the extension's settings are.
Values from the environment win over the same settings in the YAML.

Empty variables count as unset. Any problem is one line `error: ...` on stderr naming the
variable or FILE:LINE, exit status 2, and the output file left as it was.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pg_session_jwt import jwks, keys, session
from pg_session_jwt.errors import JwtError
from pg_session_jwt.settings import BY_NAME, CONNECTION_START, PREFIX

from runtime.errors import UserError, failed
from runtime.render_conf import format_value

# PyYAML is imported only when there is a YAML file to read: this runs at every container
# start, and most starts have none.

DEFAULT_YAML = "/etc/postgresql/postgresql.yaml"
YAML_VARIABLE = "PG_SESSION_JWT_CONFIG_YAML"
# Environment variable → the setting it fills, in the order they are written.
ENV_SETTINGS = {
    "PG_SESSION_JWT_JWK": "pg_session_jwt.jwk",
    "PG_SESSION_JWT_AUDIENCE": "pg_session_jwt.audience",
    "PG_SESSION_JWT_ISSUER": "pg_session_jwt.issuer",
}


def env_value(env, name, with_file=False):
    """(value, source) of `name` in `env`, or (None, None) when unset or empty.

    With `with_file`, `name_FILE` may name a file holding the value instead; both set is an
    error naming both. `source` is the variable the value came from (for messages)."""
    value = env.get(name) or None
    file_name = f"{name}_FILE"
    path = env.get(file_name) or None if with_file else None
    if value is not None and path is not None:
        raise UserError(f"both {name} and {file_name} are set: set only one of them")
    if path is None:
        return value, name if value is not None else None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{file_name}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{file_name}: {path} is not UTF-8 text") from None
    # The official image's file_env rule (`$(< file)`): the content less trailing newlines.
    text = text.rstrip("\n")
    return (text or None), (file_name if text else None)


def check_jwk(text, source):
    """The JWK or JWKS JSON `text`, checked by the extension's own parser and made one line;
    a UserError naming `source` otherwise (never repeating the key). The keys of a set that
    cannot verify are named, with the reason, in one line on stderr (the server's log)."""
    try:
        keyset = keys.parse(text)
    except JwtError as exc:
        raise UserError(f"{source}: {exc.message} (give the issuer's public JWK or a JWKS "
                        "{\"keys\": [...]}; `python -m devtools.jwt keygen` prints one)") from None
    note_skipped(source, keyset)
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def note_skipped(source, keyset):
    if keyset.skipped:
        print(f"pg-session-jwt: {source}: using kids {jwks.described(keyset)}", file=sys.stderr)


def check_setting(name, text):
    """The extension's verdict on `pg_session_jwt.<name>` = `text`: an error message or None."""
    try:
        session.Settings.from_text({name: text})
    except JwtError as exc:
        return exc.message
    return None


def check_text(value, source):
    """A one-line claim value (audience, issuer); UserError naming `source` otherwise."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise UserError(f"{source}: must be one line of text without control characters")
    if value != value.strip():
        raise UserError(f"{source}: has leading or trailing spaces, which no token's claim "
                        "would match; remove them")
    return value


class ServerSettings:
    """Which setting names this server knows: `postgres --describe-config`, then `-C`."""

    def __init__(self, postgres="postgres", scratch_dir=None):
        self.postgres = postgres
        self.scratch_dir = scratch_dir
        self._listed = None

    def listed(self):
        if self._listed is None:
            out = subprocess.run([self.postgres, "--describe-config"], capture_output=True,
                                 text=True, check=True).stdout
            self._listed = {line.split("\t", 1)[0].lower() for line in out.splitlines() if line}
        return self._listed

    def __contains__(self, name):
        if name in self.listed():
            return True
        # Developer options (zero_damaged_pages, trace_*) are real but not listed.
        with tempfile.TemporaryDirectory(dir=self.scratch_dir) as scratch:
            result = subprocess.run([self.postgres, "-C", name, "-c", "config_file=/dev/null",
                                     "-D", scratch], capture_output=True, text=True)
        return result.returncode == 0


def yaml_settings(path, major, server):
    """{name: rendered value} of the YAML at `path`, every name and pg_session_jwt value checked."""
    from runtime.render_conf import settings_for
    from runtime.yamlfile import compose_file, line_of

    settings = settings_for(path, major)
    node, data = compose_file(path)
    lines, raw = {}, {}
    blocks = [("settings",), ("overrides", int(major))] if major is not None else [("settings",)]
    for where in blocks:
        block = data or {}
        for key in where:
            block = (block or {}).get(key) if isinstance(block, dict) else None
        for name, value in (block or {}).items():
            lines[name.lower()] = line_of(node, *where, name)
            raw[name.lower()] = value
    for name in settings:
        at = f"{path}:{lines[name]}"
        if name.startswith(PREFIX):
            short = name[len(PREFIX):]
            setting = BY_NAME.get(short)
            if setting is None:
                known = ", ".join(s.full_name for s in CONNECTION_START)
                raise UserError(f"{at}: unknown setting {name!r}; the extension's settings are {known}")
            if not setting.connection_start:
                # pg_session_jwt.jwt is the session itself: a server-wide value would give
                # every session that identity.
                raise UserError(f"{at}: {name} cannot be set server-wide: it is {setting.description}")
            value = raw[name]
            text = value if isinstance(value, str) else format_value(value).strip("'")
            if short == "jwk":
                settings[name] = format_value(check_jwk(text, f"{at}: {name}"))
            elif setting.type == "text" and not setting.choices:
                check_text(text, f"{at}: {name}")  # a claim value: audience, issuer
            else:
                problem = check_setting(short, text)
                if problem:
                    raise UserError(f"{at}: {problem}")
        elif "." not in name and name not in server:
            raise UserError(f"{at}: unknown setting {name!r}: PostgreSQL {major} has no such "
                            "setting (see `postgres --describe-config`); check the spelling")
    return settings


def env_settings(env):
    """{setting: rendered value} from the PG_SESSION_JWT_* variables in `env`, checked."""
    out = {}
    jwk, source = env_value(env, "PG_SESSION_JWT_JWK", with_file=True)
    if jwk is not None:
        out["pg_session_jwt.jwk"] = format_value(check_jwk(jwk, source))
    for name in ("PG_SESSION_JWT_AUDIENCE", "PG_SESSION_JWT_ISSUER"):
        value, source = env_value(env, name)
        if value is not None:
            out[ENV_SETTINGS[name]] = format_value(check_text(value, source))
    return out


def check_jwks(env, from_yaml):
    """With PG_SESSION_JWT_JWKS_URL set: its variables checked, and the settings it implies.

    Refused: a JWK as well (which key would count?), and no audience without
    PG_SESSION_JWT_ALLOW_ANY_AUDIENCE=on (the provider signs tokens for the tenant's other
    applications too). Implied: require_jti off unless the YAML sets it (identity providers'
    jti is a string or absent). The URL itself is not written anywhere a client can read or
    set: backends take it from the server's environment."""
    url, _ = env_value(env, jwks.URL_VARIABLE)
    if url is None:
        return {}
    jwk, source = env_value(env, "PG_SESSION_JWT_JWK", with_file=True)
    if jwk is not None or "pg_session_jwt.jwk" in from_yaml:
        raise UserError(f"{jwks.URL_VARIABLE} and {source or 'pg_session_jwt.jwk in the YAML'} "
                        "are both set: keep one key source (the URL for an identity provider "
                        "that rotates its keys)")
    try:
        jwks.Config.from_env(env)
        any_audience = jwks.flag(env, jwks.ANY_AUDIENCE_VARIABLE)
    except JwtError as exc:
        raise UserError(exc.message) from None
    audience, _ = env_value(env, "PG_SESSION_JWT_AUDIENCE")
    if audience is None and "pg_session_jwt.audience" not in from_yaml and not any_audience:
        raise UserError(f"{jwks.URL_VARIABLE} is set but PG_SESSION_JWT_AUDIENCE is not: an "
                        "identity provider signs tokens for its tenant's other applications "
                        "too; set PG_SESSION_JWT_AUDIENCE to this database's audience (or "
                        f"{jwks.ANY_AUDIENCE_VARIABLE}=on if the issuer signs tokens for nothing "
                        "else)")
    if "pg_session_jwt.require_jti" in from_yaml:
        return {}
    return {"pg_session_jwt.require_jti": "off"}


def yaml_issuers(path, env):
    """The `issuers:` list of the YAML at `path` (None without one), each entry checked as
    PG_SESSION_JWT_ISSUERS is, errors naming FILE:LINE and the entry."""
    from runtime.yamlfile import compose_file, line_of

    node, data = compose_file(path)
    value = data.get("issuers") if isinstance(data, dict) else None
    if value is None:
        return None
    at = f"{path}:{line_of(node, 'issuers')}: issuers"
    items = next((v for k, v in node.value if getattr(k, "value", None) == "issuers"), None)
    lines = [item.start_mark.line + 1 for item in getattr(items, "value", [])]

    def where(i):
        return f"{path}:{lines[i] if i < len(lines) else '?'}: issuers[{i}]"

    try:
        for issuer in jwks.parse_issuers(value, env, at, where):
            if issuer.jwk is not None:
                note_skipped(f"{path}: issuer {issuer.issuer!r}", keys.parse(issuer.jwk))
    except JwtError as exc:
        raise UserError(exc.message) from None
    return value


def check_issuers(env, from_yaml, yaml_list):
    """With several issuers (PG_SESSION_JWT_ISSUERS or the YAML's `issuers:`): the entries
    checked, nothing else that would say which keys count, and the settings they imply."""
    text, _ = env_value(env, jwks.ISSUERS_VARIABLE)
    if text is None and yaml_list is None:
        return {}
    if text is not None and yaml_list is not None:
        raise UserError(f"{jwks.ISSUERS_VARIABLE} and `issuers:` in the settings YAML are both "
                        "set: keep one list of issuers")
    name = jwks.ISSUERS_VARIABLE if text is not None else "`issuers:` in the settings YAML"
    others = [variable for variable in (jwks.URL_VARIABLE, "PG_SESSION_JWT_JWK",
                                        "PG_SESSION_JWT_JWK_FILE", "PG_SESSION_JWT_AUDIENCE",
                                        "PG_SESSION_JWT_ISSUER", jwks.ANY_AUDIENCE_VARIABLE)
              if env.get(variable)]
    others += [setting for setting in ("pg_session_jwt.jwk", "pg_session_jwt.audience",
                                       "pg_session_jwt.issuer") if setting in from_yaml]
    if others:
        raise UserError(f"{name} and {others[0]} are both set: with several issuers, each "
                        "entry gives its own keys (jwks_url or jwk), issuer and audience; move "
                        f"{others[0]} into the entries")
    if text is not None:
        try:
            issuers = jwks.issuers_from_env(env)
        except JwtError as exc:
            raise UserError(exc.message) from None
        for issuer in issuers:
            if issuer.jwk is not None:
                note_skipped(f"{name} issuer {issuer.issuer!r}", keys.parse(issuer.jwk))
    if "pg_session_jwt.require_jti" in from_yaml:
        return {}
    return {"pg_session_jwt.require_jti": "off"}


def yaml_path(env, default_yaml=DEFAULT_YAML):
    """The settings YAML to render: the variable's file (must exist), else the default if present."""
    named = env.get(YAML_VARIABLE) or None
    if named is not None:
        if not Path(named).is_file():
            raise UserError(f"{YAML_VARIABLE}={named}: no such file (mount it, or unset the variable)")
        return named
    return default_yaml if Path(default_yaml).is_file() else None


def fragment(env, major, server, default_yaml=DEFAULT_YAML, issuers_out=None):
    """The postgresql.conf text for this start: YAML settings, then the environment's.
    The YAML's `issuers:`, checked, are appended to `issuers_out` (a list) when given."""
    path = yaml_path(env, default_yaml)
    lines = ["# Written by the entrypoint (runtime/config.py) at every container start.",
             "# Do not edit: it is replaced at the next start."]
    from_yaml = yaml_settings(path, major, server) if path else {}
    yaml_list = yaml_issuers(path, env) if path else None
    from_env = env_settings(env)
    implied = check_issuers(env, from_yaml, yaml_list)
    from_env.update(implied or check_jwks(env, from_yaml))
    if yaml_list is not None and issuers_out is not None:
        issuers_out.append(yaml_list)
    if from_yaml:
        lines += ["", f"# From {path}"] + [f"{k} = {v}" for k, v in from_yaml.items()]
    if from_env:
        lines += ["", "# From PG_SESSION_JWT_* environment variables"]
        lines += [f"{k} = {v}" for k, v in from_env.items()]
    return "\n".join(lines) + "\n"


def main(argv=None, env=None):
    parser = argparse.ArgumentParser(prog="python3 -m runtime.config",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--major", type=int, required=True, help="the server's major (for overrides)")
    parser.add_argument("--out", required=True, help="the fragment postgresql.conf includes")
    parser.add_argument("--postgres", default="postgres", help="the server binary to ask for names")
    parser.add_argument("--print-issuers", action="store_true",
                        help="print the YAML's `issuers:` as PG_SESSION_JWT_ISSUERS JSON")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    out = Path(args.out)
    server = ServerSettings(args.postgres, scratch_dir=out.parent)
    try:
        issuers = []
        text = fragment(env, args.major, server, issuers_out=issuers)
        jwks.write_atomically(out, text)
    except UserError as exc:
        return failed(exc)
    except OSError as exc:
        return failed(UserError(f"cannot write {out}: {exc.strerror} (the directory must be writable "
                                "by the container's user; with --read-only, mount a tmpfs on it)"))
    if args.print_issuers and issuers:
        print(json.dumps(issuers[0], separators=(",", ":"), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
