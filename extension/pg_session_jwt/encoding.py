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

import _json
import binascii

_INFINITY = float("inf")
MAX_DEPTH = 64
_WHITESPACE = " \t\n\r"   # JSON's, RFC 8259 section 2
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64url_decode(text):
    """The bytes of unpadded, canonical base64url `text` (str or bytes)."""
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("not base64url") from None
    try:
        data = binascii.a2b_base64(text.translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    # a2b_base64 skips characters outside the alphabet and ignores trailing bits;
    # encoding back and comparing refuses every spelling but the one canonical form.
    if binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URLSAFE) != text:
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


class _Context:
    """What the C scanner reads from a json.JSONDecoder; using `_json` directly keeps `json`
    and, through it, `re`, `enum` and friends (about 5 ms, 12 ms on a busy host) out of a
    new backend. JSON's own messages are kept: json.decoder is imported on a syntax error."""

    strict = True
    object_hook = None
    object_pairs_hook = staticmethod(_object)
    parse_float = staticmethod(_float)
    parse_int = int
    parse_constant = staticmethod(_constant)
    memo = None


_scan = _json.make_scanner(_Context())


def _deeper_than(text, limit):
    """Whether `text` opens more than `limit` arrays/objects at once (strings skipped).

    Linear in the number of brackets, quotes and backslashes; the decoder remains the judge
    of everything else. Texts with fewer opening brackets than the limit are not scanned,
    so `re` is imported only for the rare text that has more."""
    if text.count("[") + text.count("{") <= limit:
        return False
    import re

    depth, in_string, escaped = 0, False, -1
    for match in re.finditer(r'[\[\]{}"\\]', text):
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
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = _scan(text, start)
        except StopIteration as stop:
            raise ValueError(f"Expecting value at character {stop.value}") from None
        end = len(text) - len(text[end:].lstrip(_WHITESPACE))
        if end != len(text):
            raise ValueError(f"Extra data at character {end}")
        if "\\u" in text and _has_unstorable(value):
            raise ValueError("a string holds \\u0000 or a lone surrogate, which PostgreSQL "
                             "text cannot store")
        return value
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except ValueError as exc:
        if not hasattr(exc, "pos"):   # ours, or int()'s digit limit: already a reason
            raise
        raise ValueError(f"{exc.msg} at character {exc.pos}") from None


def json_dumps(value):
    """`json.dumps(value)` for what json_loads returns (dict, list, str, int, float, bool,
    None; no NaN or infinity), without importing `json` (see _Context)."""
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_json.encode_basestring_ascii(str(k))}: {json_dumps(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(json_dumps, value)) + "]"
    raise TypeError(f"{type(value).__name__} is not JSON")


def _has_unstorable(value):
    """Whether any string (member name or value) in the decoded `value` holds NUL or a lone
    surrogate. Iterative: the depth is already bounded, but no recursion is needed."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
            try:  # strict UTF-8 has no surrogates: the C codec finds a lone one
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
