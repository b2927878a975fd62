"""check_json's fast path (orjson in C) decides exactly as the walk does, with the same errors.

For every value below, check_json with the fast path and the walk alone either both accept
or both raise InvalidStateData with the same message.
"""

import dataclasses
import datetime as dt
import enum
import math
import uuid
from decimal import Decimal

import orjson
import pytest

from sessionstate import validation
from sessionstate.errors import InvalidStateData


class Color(enum.Enum):
    RED = 1


class Sneaky(enum.Enum):
    """Says it equals its value: a read-back comparison would take it for plain JSON."""

    ONE = 1

    def __eq__(self, other):
        return other == self.value

    __hash__ = enum.Enum.__hash__


class Level(enum.IntEnum):
    LOW = 1


class Name(str):
    pass


class Mapping(dict):
    pass


class Ratio(float):
    pass


@dataclasses.dataclass
class Point:
    x: int


def nested(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


MESSAGE = {"role": "assistant", "content": None, "name": "planner",
           "tool_calls": [{"id": "call_1", "type": "function",
                           "function": {"name": "search", "arguments": "{\"q\": 1}"}}]}

VALUES = [
    [MESSAGE] * 50,
    {"a": [1, 2.5, "x", None, True, {"b": []}]},
    {"ok": 2**53 - 1, "big": 2**53, "bigger": 2**63 - 1, "neg": -(2**63)},
    {"too big": 2**63}, [-(2**63) - 1], {"huge": 2**64}, [10**30],
    [1.0, math.nan], {"x": {"y": math.inf}}, [-math.inf],
    {"s": "a\x00b"}, {"k\x00": 1}, ["\\u0000 is text here, not NUL"],
    {"s": "lone \ud800"}, {"\udfff": 1},
    {1: "int key"}, {"a": {None: 1}}, {("t", 1): 1}, {Name("k"): "str-subclass key"},
    [uuid.UUID(int=1)], [Color.RED], [Sneaky.ONE], {"l": Level.LOW}, [orjson.Fragment(b"[1]")],
    [dt.datetime(2030, 1, 1)], [dt.date(2030, 1, 1)], [Point(1)], [Decimal("1.5")],
    [b"bytes"], [{1, 2}], [1 + 2j], [object()], [len],
    (1, 2), [(1, [2])], [Name("s")], Mapping(a=1), [Mapping(a=1)], [Ratio(1.5)],
    [Ratio(math.nan)], [True, False], {"general keys": 1, 2: 3}, [[[[{"a": [1.5, -0.0]}]]]],
    [{"deep": [{"x": math.nan}]}], [[], {}, [()]],
    nested(31), nested(32), nested(254), nested(255), nested(600),
]
DEPTHS = (1, 2, 3, 31, 512, 1000)


def walk_only(monkeypatch, value, depth):
    monkeypatch.setattr(validation, "_plainly_storable", lambda value, max_depth: False)
    try:
        return outcome(value, depth)
    finally:
        monkeypatch.undo()


def outcome(value, depth):
    try:
        validation.check_json("field", value, depth)
    except InvalidStateData as error:
        return str(error)
    return "accepted"


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("index", range(len(VALUES)))
def test_fast_path_decides_like_the_walk(monkeypatch, index, depth):
    value = VALUES[index]
    assert outcome(value, depth) == walk_only(monkeypatch, value, depth)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("index", range(len(VALUES)))
def test_fast_path_accepts_only_what_the_walk_accepts(monkeypatch, index, depth):
    value = VALUES[index]
    if validation._plainly_storable(value, depth):
        assert walk_only(monkeypatch, value, depth) == "accepted"


def test_fast_path_takes_plain_histories():
    assert validation._plainly_storable([MESSAGE] * 100, 512)
    assert validation._plainly_storable({"a": [1, "b", None, 2.5]}, 512)
    # ... and leaves to the walk what it cannot vouch for.
    assert validation._plainly_storable([MESSAGE], 31)  # MariaDB's depth, counted by level
    assert not validation._plainly_storable(nested(32), 31)
    assert validation._plainly_storable(nested(31), 31)
    assert not validation._plainly_storable([1.0, math.nan], 512)
    assert not validation._plainly_storable([uuid.UUID(int=1)], 512)


def test_a_large_values_check_pauses_between_its_levels_only_when_asked():
    """The async API's bridge lets its loop run between the levels of a large value's
    check (validation.pausing); a small value, or a check outside it, never pauses."""
    large = [{"n": n, "score": n / 3, "tags": ["a", "b"]} for n in range(10_000)]
    pauses = []
    with validation.pausing(lambda: pauses.append(1)):
        validation.check_json("conversation_history", large, 32)
        large_pauses = len(pauses)
        validation.check_json("conversation_history", large[:100], 32)
        assert len(pauses) == large_pauses
    validation.check_json("conversation_history", large, 32)
    assert len(pauses) == large_pauses >= 1
    with validation.pausing(lambda: pauses.append(1)):
        with pytest.raises(InvalidStateData, match=r"\[9999\]\['score'\]"):
            validation.check_json("conversation_history", large[:-1] + [{"score": math.nan}],
                                  32)
