"""Strict decoders for the two encodings a JWS is made of: base64url and JSON.

Strict because two parsers that disagree about one token are an attack surface: a part
that a lenient decoder would accept in several spellings (padding, stray characters,
non-zero trailing bits), a JSON text with duplicate member names (which one wins?),
NaN/Infinity or numbers that overflow to infinity are all refused. Both functions raise
ValueError with a short reason that never quotes the input.
"""

import base64
import json

_INFINITY = float("inf")


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


def json_loads(data):
    """The value of the UTF-8 JSON text `data` (bytes or str), refusing what JSON does not allow."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at character {exc.pos}") from None
