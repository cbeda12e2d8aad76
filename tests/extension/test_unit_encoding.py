"""Strict base64url and JSON: one accepted spelling per value, nothing JSON does not allow."""

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pg_session_jwt.encoding import b64url_decode, json_loads


@given(st.binary(max_size=200))
def test_b64url_round_trips_unpadded_encoding(data):
    assert b64url_decode(base64.urlsafe_b64encode(data).rstrip(b"=")) == data


@pytest.mark.parametrize("text", [
    "YQ==",          # padding
    "YR",            # non-zero trailing bits: "YQ" is the canonical spelling of b"a"
    "YWJj+A",        # standard alphabet
    "YWJj/A",
    "YW Jj",         # whitespace
    "YWJj\n",
    "Y",             # impossible length
    "YWJjZ",
    "é",             # not ASCII
])
def test_b64url_refuses_non_canonical_spellings(text):
    with pytest.raises(ValueError):
        b64url_decode(text)


def test_json_loads_objects_and_big_integers():
    assert json_loads(b'{"a": [1, 2.5, "x", null, true], "n": 123456789012345678901234567890}') == {
        "a": [1, 2.5, "x", None, True], "n": 123456789012345678901234567890}


@pytest.mark.parametrize("data, reason", [
    (b'{"sub": "a", "sub": "b"}', "duplicate"),
    (b'{"o": {"id": 1, "id": 2}}', "duplicate"),
    (b'{"exp": NaN}', "NaN"),
    (b'{"exp": Infinity}', "Infinity"),
    (b'{"exp": -Infinity}', "Infinity"),
    (b'{"exp": 1e400}', "range"),
    (b'{"exp": 1}x', "Extra data"),
    (b'\xef\xbb\xbf{}', "Expecting value"),  # a BOM
    (b'{"sub": "\xff"}', "UTF-8"),
    (b'{"sub": "\xed\xa0\x80"}', "UTF-8"),     # an encoded surrogate
    ('{"a": 1}'.encode("utf-16"), "UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "deeply"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "deeply"),
    (b"1" * 5000, "digits"),
])
def test_json_loads_refuses(data, reason):
    with pytest.raises(ValueError, match=reason):
        json_loads(data)


def test_json_errors_do_not_quote_the_input():
    with pytest.raises(ValueError) as info:
        json_loads(b'{"secret-looking-value": }')
    assert "secret-looking-value" not in str(info.value)


# What PostgreSQL's text can hold: no NUL, no lone surrogates.
STORABLE = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


@given(st.recursive(st.none() | st.booleans() | st.integers() | STORABLE,
                    lambda inner: st.lists(inner) | st.dictionaries(STORABLE, inner), max_leaves=20))
def test_json_loads_agrees_with_json_on_valid_documents(value):
    assert json_loads(json.dumps(value).encode()) == value


@pytest.mark.parametrize("text", [
    r'{"sub": "a\u0000b"}', r'{"a\u0000": 1}', r'{"o": {"id": ["\ud800"]}}', r'["\udfff"]',
    r'{"sub": "\ud83d"}',
])
def test_strings_postgresql_cannot_store_are_refused(text):
    with pytest.raises(ValueError, match="u0000 or a lone surrogate"):
        json_loads(text)


def test_escapes_that_postgresql_can_store_pass():
    assert json_loads(r'{"sub": "\ud83d\ude00", "b": "\\u0000", "c": "\u00e9"}') == {
        "sub": "\U0001F600", "b": "\\u0000", "c": "\u00e9"}


def test_json_nesting_is_bounded_the_same_way_on_every_python():
    from pg_session_jwt.encoding import MAX_DEPTH

    assert json_loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(ValueError, match="deeply"):
        json_loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(ValueError, match="deeply"):
        json_loads('{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1))


@pytest.mark.parametrize("text", [
    '{"s": "' + "[" * 500 + '"}',                         # brackets inside a string
    '{"s": "\\"' + "{" * 500 + '", "t": []}',             # after an escaped quote
    '{"s": "\\\\", "t": ' + "[" * 10 + "]" * 10 + "}",    # an escaped backslash ends nothing
    "[" + "[], " * 500 + "[]]",                           # many, but shallow
])
def test_json_depth_counts_only_structure(text):
    assert json_loads(text) == json.loads(text)
