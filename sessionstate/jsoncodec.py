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
    # "+" first: one character is found at memchr's speed (0.04 ms in 2 MB of history, where
    # "e+" took 1.6 ms in text holding non-ASCII characters).
    if "+" not in text or ("e+" not in text and "E+" not in text):
        return text
    return _STRING_OR_BIG_FLOAT.sub(_positional, text)


# Between two objects of an array: where a large history can be cut into pieces.
_OBJECT_BOUNDARY = {str: re.compile(r"\}[ \t\n\r]*,[ \t\n\r]*(?=\{)"),
                    bytes: re.compile(rb"\}[ \t\n\r]*,[ \t\n\r]*(?=\{)")}
_OPENING = {str: re.compile(r"[ \t\n\r]*\["), bytes: re.compile(rb"[ \t\n\r]*\[")}
_BRACKETS = {str: ("[", "]"), bytes: (b"[", b"]")}
_WHITESPACE = {str: (" ", "\t", "\n", "\r"), bytes: (b" ", b"\t", b"\n", b"\r")}
PIECE = 256 * 1024  # characters decoded between two pauses (about 2 ms)
MISSES_PER_PIECE = 3  # cuts decoded in vain before the rest is decoded at once


def loads_in_pieces(text, pause, piece=PIECE):
    """loads() of a large JSON array, one piece of its objects at a time, calling pause()
    between pieces: the same value, without holding the thread for the whole text.

    A piece ends at a "}, {" between two objects of the array. A cut inside a string or a
    nested array would leave the piece unbalanced, which fails to decode (so a wrong cut
    never gives a wrong value); the next candidate is tried then.
    """
    kind = type(text)
    opening = _OPENING[kind].match(text)
    end = len(text)
    while end and text[end - 1:end] in _WHITESPACE[kind]:  # no copy of the text to strip it
        end -= 1
    left, right = _BRACKETS[kind]
    if opening is None or text[end - 1:end] != right:
        return loads(text)
    items, start, body_end = [], opening.end(), end - 1
    while body_end - start > piece:
        decoded = _next_piece(text, start, body_end, piece)
        if decoded is None:
            break
        part, start = decoded
        items.extend(part)
        pause()
    return items + loads(left + text[start:body_end] + right)


def _next_piece(text, start, end, piece):
    """(the objects of the piece from `start`, where the next piece starts), or None.

    Candidates where the brackets counted since `start` do not balance are nested (or, with
    brackets inside strings, uncertain) and skipped without decoding; a cut decoded in vain
    costs a piece's decoding, so only a few are tried.
    """
    boundary = _OBJECT_BOUNDARY[type(text)]
    left, right = _BRACKETS[type(text)]
    marks = [left, right] + ([b"{", b"}"] if isinstance(text, bytes) else ["{", "}"])
    depth, counted, misses = 0, start, 0
    for cut in boundary.finditer(text, start + piece, end):
        stop = cut.start() + 1
        depth += (text.count(marks[0], counted, stop) - text.count(marks[1], counted, stop)
                  + text.count(marks[2], counted, stop) - text.count(marks[3], counted, stop))
        counted = stop
        if depth:
            continue
        try:
            return loads(left + text[start:stop] + right), cut.end()
        except ValueError:  # json's and orjson's decode errors both are ValueErrors
            misses += 1
            if misses == MISSES_PER_PIECE:
                return None
    return None
