"""The JSON columns' codec (orjson behind peewee's JSONField): the same values as stdlib json.

What is written reads back equal to what json.dumps/json.loads would give, on every backend,
and reading any JSON text gives exactly what json.loads gives (or raises what it raises).
"""

import collections
import json
import math
import random
import struct

import pytest

import sessionstate as ss
from sessionstate import jsoncodec
from sessionstate.models import SessionState

VALUES = [
    [],
    {},
    [{"role": "user", "content": "café → 数据 ✓ 😀", "name": "émile", "tool_calls": None}],
    {"nested": {"deeper": [1, 2.5, -0.0, True, False, None, "", "\n\t\"\\/"]}},
    {"ints": [0, -1, 2**53, 2**63 - 1, -(2**63)], "floats": [1e-300, 1.5e300, 0.1, 1e16, 2.0]},
    {"control": "\x01\x1f\x7f\u2028\u2029", "astral": "\U0001f600\U00010348"},
    ["x" * 5000, {"k%d" % i: i for i in range(200)}],
    (1, [2, (3,)]),  # tuples are written as arrays, read back as lists, as with json
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_reads_back_what_json_reads_back(value):
    text = jsoncodec.dumps(value)
    assert json.loads(text) == json.loads(json.dumps(value))
    assert jsoncodec.loads(text) == json.loads(json.dumps(value))
    assert ", " not in text or ", " in json.dumps(value)  # compact output


def test_random_floats_read_back_exactly():
    rng = random.Random(7)
    floats = []
    while len(floats) < 20_000:
        value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(value):
            floats.append(value)
    assert jsoncodec.loads(jsoncodec.dumps(floats)) == floats
    for value in floats[:2000]:
        for text in (repr(value), "%.17g" % value, "%.20e" % value, "%.6g" % value):
            assert jsoncodec.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", [
    "123456789012345678901234567890",  # orjson alone would give a float
    "-9223372036854775809",
    "[1, -18446744073709551616]",
    '{"a":\n  12345678901234567890}',
    "18446744073709551615",
    "9223372036854775807",
    '"a digit run 12345678901234567890 in a string"',
    "NaN", "[Infinity, -Infinity]", "1e400", "-1e400", "1e-400",
    '"\\ud800 lone"', '{"\\udfff": 1}',
    '{"a": 1, "a": 2}',
    " \t\n[1]\r\n ",
    "-0", "-0.0", "0.1", "1E5",
    '{"a": [{"b": 1.5, "c": 18446744073709551616}], "d": 2.5}',  # nested, beside floats
    "[-9223372036854775808, 18446744073709551615]",  # the 64-bit ends orjson reads exactly
    "1e19", "[1.8446744073709552e19, -9.3e18]",  # floats that large: json.loads decides
])
def test_loads_is_json_loads(text):
    got, expected = jsoncodec.loads(text), json.loads(text)
    assert repr(got) == repr(expected)


@pytest.mark.parametrize("text", ["", "[1,]", "{'a': 1}", "[1] x", '"\x01"', "[" * 2000])
def test_loads_refuses_what_json_loads_refuses(text):
    with pytest.raises((ValueError, RecursionError)) as expected:
        json.loads(text)
    with pytest.raises(expected.type):
        jsoncodec.loads(text)


def test_subclasses_are_written_by_the_stdlib():
    class Upper(str):
        pass

    ordered = collections.OrderedDict([("b", 1), ("a", Upper("x"))])
    assert jsoncodec.dumps(ordered) == json.dumps(ordered)
    assert jsoncodec.dumps([Upper("y")]) == json.dumps([Upper("y")])


def test_sqlite_gets_the_text_without_a_json_call(tmp_path):
    database = ss.connect("sqlite:///%s" % (tmp_path / "codec.db"))
    ss.migrate(database)
    field = SessionState.conversation_history
    assert field.db_value([{"a": "é"}]) == '[{"a":"é"}]'
    sql, _ = SessionState.update(conversation_history=[1]).where(SessionState.id == "x").sql()
    assert "json(" not in sql.lower()
    database.close()


def test_every_backend_reads_back_the_values_written(migrated, backend):
    # (PostgreSQL's jsonb reads 1.5e300 back as an integer, codec or not: left out here.)
    history = [value for value in VALUES if isinstance(value, (list, dict)) and value != VALUES[4]]
    state = ss.create_session("copilot", conversation_history=history,
                              context_variables={"v": VALUES[4]["ints"], "t": "数据"},
                              plan_data={"steps": VALUES[2]}, meta={"m": VALUES[5]})
    ss.append_messages(state.id, [VALUES[3], {"t": "😀"}])
    got = ss.get_state(state.session_id)
    assert got.conversation_history == json.loads(json.dumps(history + [VALUES[3], {"t": "😀"}]))
    assert got.context_variables == {"v": VALUES[4]["ints"], "t": "数据"}
    assert got.plan_data == {"steps": VALUES[2]}
    assert ss.Session.get_by_id(state.session_id).meta == {"m": VALUES[5]}
    assert ss.recent_messages(state.id, 2) == [VALUES[3], {"t": "😀"}]
    if backend == "sqlite":
        valid = migrated.execute_sql("SELECT json_valid(conversation_history) FROM "
                                     "session_states").fetchone()[0]
        assert valid == 1


def test_postgresql_text_writes_big_floats_positionally_and_leaves_strings_alone():
    import json as stdlib_json

    from sessionstate.jsoncodec import dumps_for_postgresql

    value = [1e16, -2.5e20, 1.5e-7, 3, "x 1e+16 \"q\" 3e+5", {"k\"1e+5": 1e22}]
    text = dumps_for_postgresql(value)
    assert "e+" not in text.replace("x 1e+16", "").replace("3e+5", "").replace('1e+5"', "")
    assert "10000000000000000.0" in text and "-250000000000000000000.0" in text
    assert stdlib_json.loads(text) == value
    assert dumps_for_postgresql({"plain": 1.5}) == '{"plain":1.5}'


def _tricky_history(messages):
    """Objects whose strings and nested arrays hold the very "}, {" a piece is cut at."""
    return [{"role": "tool", "n": n, "content": "a}, {b" * (n % 3), "big": 2**64 + n,
             "tool_calls": [{"id": "x}, {y", "args": [{"k": n}, {"k": "}, {"}]}, {"z": None}]}
            for n in range(messages)]


@pytest.mark.parametrize("form", ["compact", "spaced", "bytes"])
def test_loads_in_pieces_is_json_loads_and_pauses_between_pieces(form):
    history = _tricky_history(3000)
    text = {"compact": json.dumps(history, separators=(",", ":")),
            "spaced": " %s\n" % json.dumps(history),
            "bytes": json.dumps(history).encode()}[form]
    pauses = []
    assert jsoncodec.loads_in_pieces(text, lambda: pauses.append(1), piece=20_000) == (
        json.loads(text))
    assert len(pauses) >= len(text) // 40_000  # it did cut the text


@pytest.mark.parametrize("text", ["[]", " [ ] ", "[1,2,3]", '[{"a":1}]', '{"a":[{"b":1},{}]}',
                                  "null", '"x"', '[{"a":1},{"b":2}] x', "[{"])
def test_loads_in_pieces_of_anything_else_is_json_loads(text):
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            jsoncodec.loads_in_pieces(text, lambda: None, piece=1)
    else:
        assert jsoncodec.loads_in_pieces(text, lambda: None, piece=1) == expected
