"""Strict decoders for the two encodings a JWS is made of: base64url and JSON.

Strict because two parsers that disagree about one token are an attack surface: a part
that a lenient decoder would accept in several spellings (padding, stray characters,
non-zero trailing bits), a JSON text with duplicate member names (which one wins?),
NaN/Infinity or numbers that overflow to infinity are all refused, and so is nesting
deeper than MAX_DEPTH: the interpreter's own recursion limit differs between the Python
of each image (3.11 stops near 1,000 levels, 3.13 parses 5,000, 3.14 counts stack bytes),
so without a bound of our own one token would be refused on one major and accepted on
another. Strings that PostgreSQL's text and jsonb cannot hold (\\u0000, a lone UTF-16
surrogate; both reachable only through \\u escapes) are refused too, so that a token is
refused when it is verified rather than breaking a getter later. Both functions raise
ValueError with a short reason that never quotes the input.
"""

import base64
import json
import re

_INFINITY = float("inf")
MAX_DEPTH = 64
_STRUCTURAL = re.compile(r'[\[\]{}"\\]')
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def b64url_decode(text):
    """The bytes of unpadded, canonical base64url `text` (str or bytes)."""
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("not base64url") from None
    try:
        data = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except ValueError:
        raise ValueError("not base64url") from None
    # urlsafe_b64decode skips characters outside the alphabet and ignores trailing bits;
    # encoding back and comparing refuses every spelling but the one canonical form.
    if base64.urlsafe_b64encode(data).rstrip(b"=") != text:
        raise ValueError("not canonical unpadded base64url")
    return data


def _object(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name in a JSON object")
    return obj


def _constant(name):
    raise ValueError(f"{name} is not JSON")


def _float(text):
    value = float(text)
    if value == _INFINITY or value == -_INFINITY:
        raise ValueError("number out of range")
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant, parse_float=_float)


def _deeper_than(text, limit):
    """Whether `text` opens more than `limit` arrays/objects at once (strings skipped).

    Linear in the number of brackets, quotes and backslashes; the decoder remains the judge
    of everything else. Texts with fewer opening brackets than the limit are not scanned."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth, in_string, escaped = 0, False, -1
    for match in _STRUCTURAL.finditer(text):
        pos, char = match.start(), match.group()
        if pos == escaped:
            continue
        if in_string:
            if char == "\\":
                escaped = pos + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def json_loads(data):
    """The value of the UTF-8 JSON text `data` (bytes or str), refusing what JSON does not allow."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if _deeper_than(text, MAX_DEPTH):
            raise ValueError(f"JSON nested too deeply (more than {MAX_DEPTH} levels)")
        value = _DECODER.decode(text)
        if "\\u" in text and _has_unstorable(value):
            raise ValueError("a string holds \\u0000 or a lone surrogate, which PostgreSQL "
                             "text cannot store")
        return value
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at character {exc.pos}") from None


def _has_unstorable(value):
    """Whether any string (member name or value) in the decoded `value` holds NUL or a lone
    surrogate. Iterative: the depth is already bounded, but no recursion is needed."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
