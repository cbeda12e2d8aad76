"""The one table of the extension's settings (pg_session_jwt/settings.py): what reads it
agrees with it."""

import re

import pytest
from pg_session_jwt import settings as table
from pg_session_jwt.errors import JwtError
from pg_session_jwt.session import Settings

from builder.matrix import ROOT

EXTENSION = ROOT / "extension"

def test_the_session_token_is_the_one_setting_read_at_every_call():
    assert [s.name for s in table.SETTINGS if not s.connection_start] == ["jwt"]


def test_rows_are_well_formed():
    names = [s.name for s in table.SETTINGS]
    assert len(names) == len(set(names))
    for setting in table.SETTINGS:
        assert setting.type in ("text", "bool", "int"), setting
        assert isinstance(setting.default, {"text": str, "bool": bool, "int": int}[setting.type])
        assert setting.description and "\n" not in setting.description
        assert setting.full_name == f"pg_session_jwt.{setting.name}"
        if setting.choices:
            assert setting.type == "text" and setting.default in setting.choices


def test_settings_defaults_come_from_the_table():
    assert Settings.__slots__ == tuple(s.name for s in table.CONNECTION_START)
    empty, parsed = Settings(), Settings.from_text({})
    for setting in table.CONNECTION_START:
        assert getattr(empty, setting.name) == setting.default, setting.name
        assert getattr(parsed, setting.name) == setting.default, setting.name


def test_values_are_parsed_by_type():
    parsed = Settings.from_text({"leeway": "5", "require_jti": "off", "trust_request_claims": "on",
                                 "session_scope": "Transaction", "audience": " app "})
    assert (parsed.leeway, parsed.require_jti, parsed.trust_request_claims,
            parsed.session_scope, parsed.audience) == (5, False, True, "transaction", "app")


@pytest.mark.parametrize("name, value, phrase", [
    ("session_scope", "pooled", "pg_session_jwt.session_scope must be one of session, transaction"),
    ("trust_request_claims", "maybe", "pg_session_jwt.trust_request_claims must be on or off"),
    ("leeway", "1m", "pg_session_jwt.leeway must be a whole number of seconds"),
])
def test_bad_values_name_the_setting_and_what_it_takes(name, value, phrase):
    with pytest.raises(JwtError) as info:
        Settings.from_text({name: value})
    assert info.value.sqlstate == "22023" and phrase in info.value.message


def test_the_module_imports_nothing():
    """Tools outside the server import it, and every new backend does: no imports at all."""
    source = (EXTENSION / "pg_session_jwt" / "settings.py").read_text()
    assert re.findall(r"^\s*(?:from|import) (\S+)", source, re.M) == []


def test_the_readme_documents_every_setting_with_its_default():
    """README.md's settings table is the user's copy of SETTINGS: one row per setting, with the
    default the extension uses (on/off for booleans, "none" for an empty text)."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`pg_session_jwt."):
            for name in re.findall(r"`pg_session_jwt\.(\w+)`", cells[0]):
                rows[name] = cells[1]
    assert sorted(rows) == sorted(s.name for s in table.SETTINGS)
    for setting in table.SETTINGS:
        if not setting.connection_start:
            continue
        shown = {True: "on", False: "off", "": "none"}.get(setting.default, str(setting.default))
        # a note may follow the default, e.g. "on (off with a JWKS URL)"
        assert rows[setting.name].split(" (")[0] == shown, setting.name
