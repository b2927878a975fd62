"""What goes in comes back out, exactly, on every backend: JSON values and timestamps."""

import datetime as dt
import json
import math
import zoneinfo

import pytest

import sessionstate
from sessionstate import Session, SessionState

UTC = dt.timezone.utc

UNICODE = {
    "emoji": "😀 👩‍👩‍👧‍👦 🏳️‍🌈 🇯🇵 👍🏽",
    "cjk": "漢字 かな カナ 한국어 中文",
    "rtl": "مرحبا بالعالم — שלום עולם",
    "combining": "e\u0301 a\u0308 Z\u0351\u0362 \u0939\u093f\u0928\u094d\u0926\u0940",
    "nfd_vs_nfc": ["\u00e9", "e\u0301"],  # must not be normalised into one another
    "astral": "\U0001d11e \U00010348 \U0002a6d6",
    "controls": "tab\there\nnewline\r\u2028\u2029 \x7f \x1b[0m",
    "quotes": "\"double\" 'single' \\back\\slash\\ /slash",
    "bom_and_zero_width": "\ufeff\u200b\u200d",
    "keys": {"ключ": "значение", "😀": 1, "مفتاح": [], "": "empty key"},
}

NUMBERS = {
    "ints": [0, 1, -1, 42, -42, 2**31, -(2**31), 2**53, -(2**53), 2**53 + 1, 2**63 - 1, -(2**63)],
    "floats": [0.1, -2.5, 1.0, -1.0, 0.0, 3.141592653589793, 1e-10, 2.5e-300, 5e-324,
               123456789.12345679, 0.30000000000000004, 1.5e15, -9007199254740.5],
}

SCALARS = {
    "true": True, "false": False, "null": None, "empty_list": [], "empty_dict": {},
    "empty_string": "", "nested_empties": [[], {}, [[]], [{}], {"a": {}}, {"b": []}],
    "mixed": [1, "1", 1.5, True, None, {"x": [False]}],
}


def structure(levels):
    """A plan-like tree `levels` deep, mixing objects and arrays at every level."""
    node = {"leaf": True, "items": [1, "two", None]}
    for level in range(levels):
        node = {"level": level, "children": [node, {"sibling": level}], "tags": ["t%d" % level]}
    return node


def history(messages, size=300):
    """`messages` chat messages of about `size` bytes each, all different."""
    result = []
    for n in range(messages):
        body = ("message %d: " % n) + "lorem ipsum dolor sit amet é 漢 😀 " * 8
        result.append({"role": ("user", "assistant", "tool")[n % 3], "content": body[:size],
                       "n": n, "meta": {"tokens": n * 7, "ok": n % 2 == 0}})
    return result


@pytest.fixture
def session(migrated):
    return Session.create(name="round trips")


def save_and_load(session, **fields):
    state = SessionState.create_for_session(session.id, "copilot", **fields)
    state.save()
    return state, SessionState.get_by_id(state.id)


def exact(value):
    """A form that tells 1 from 1.0 from True, and -0.0 from 0.0: equality of JSON texts."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# --- JSON values -------------------------------------------------------------------------------


def test_unicode_round_trips_in_every_json_field(session):
    _, loaded = save_and_load(session, conversation_history=[UNICODE], context_variables=UNICODE,
                              plan_data={"u": UNICODE})
    assert loaded.conversation_history == [UNICODE]
    assert loaded.context_variables == UNICODE
    assert loaded.plan_data == {"u": UNICODE}
    assert loaded.context_variables["nfd_vs_nfc"][0] != loaded.context_variables["nfd_vs_nfc"][1]
    assert exact(loaded.context_variables) == exact(UNICODE)


def test_unicode_round_trips_through_update_state(session, api):
    state, _ = save_and_load(session)
    api.update_state(state.id, 1, context_variables=UNICODE, current_phase="фаза 😀 漢字")
    loaded = SessionState.get_by_id(state.id)
    assert exact(loaded.context_variables) == exact(UNICODE)
    assert loaded.current_phase == "фаза 😀 漢字"


def test_unicode_in_the_short_text_columns(session):
    mode = "\U0001F600" * 50  # 50 characters, 200 bytes of UTF-8
    state = SessionState.create_for_session(session.id, mode, current_phase="שלב" + "e\u0301" * 20)
    state.save()
    loaded = SessionState.get_by_id(state.id)
    assert loaded.mode == mode
    assert loaded.current_phase == "שלב" + "e\u0301" * 20


def test_numbers_round_trip_exactly(session, api):
    state, loaded = save_and_load(session, plan_data=NUMBERS)
    assert exact(loaded.plan_data) == exact(NUMBERS)
    for got, sent in zip(loaded.plan_data["ints"] + loaded.plan_data["floats"],
                         NUMBERS["ints"] + NUMBERS["floats"]):
        assert type(got) is type(sent) and got == sent, (sent, got)
    api.update_state(state.id, 1, context_variables={"n": NUMBERS})
    assert exact(SessionState.get_by_id(state.id).context_variables) == exact({"n": NUMBERS})


def test_large_integral_floats_keep_their_value(session, backend):
    # PostgreSQL's jsonb stores numbers as numeric and prints 1e16 back as 10000000000000000,
    # an int to Python, unless the text written has a fractional part: the PostgreSQL codec
    # writes such floats out positionally (10000000000000000.0), so the type survives too.
    # Only the sign of -0.0 is lost there: numeric has no negative zero.
    values = [1e16, -1e16, 1e300, 1.7976931348623157e308, 2.5e25, 1.2345678901234568e17]
    _, loaded = save_and_load(session, plan_data=values + [-0.0])
    assert exact(loaded.plan_data[:-1]) == exact(values)
    assert loaded.plan_data[-1] == 0.0 and isinstance(loaded.plan_data[-1], float)
    if backend != "postgresql":
        assert math.copysign(1, loaded.plan_data[-1]) == -1


def test_large_floats_survive_an_append_on_every_backend(session, backend):
    state, _ = save_and_load(session, conversation_history=[])
    sessionstate.append_messages(state.id, [{"score": 1e16, "text": "1e+16 stays text"}])
    [message] = SessionState.get_by_id(state.id).conversation_history
    assert exact(message) == exact({"score": 1e16, "text": "1e+16 stays text"})


def test_booleans_null_and_empty_containers_round_trip(session):
    _, loaded = save_and_load(session, context_variables=SCALARS, plan_data=SCALARS)
    assert exact(loaded.context_variables) == exact(SCALARS)
    assert exact(loaded.plan_data) == exact(SCALARS)


def test_plan_data_may_be_any_json_value(session):
    for top in ["text", 0, 1.5, True, False, [], {}, [None], None]:
        _, loaded = save_and_load(session, plan_data=top)
        assert exact(loaded.plan_data) == exact(top)


def test_empty_containers_stay_empty_not_null(session):
    _, loaded = save_and_load(session, conversation_history=[], context_variables={})
    assert loaded.conversation_history == [] and loaded.conversation_history is not None
    assert loaded.context_variables == {} and loaded.context_variables is not None


def test_null_json_fields_stay_null(session, api):
    state, _ = save_and_load(session)
    api.update_state(state.id, 1, conversation_history=None, context_variables=None, plan_data=None)
    loaded = SessionState.get_by_id(state.id)
    assert (loaded.conversation_history, loaded.context_variables, loaded.plan_data) == (
        None, None, None)


def test_nested_structures_round_trip(session):
    plan = structure(14)  # 29 levels: within every backend's limit, MariaDB's included
    _, loaded = save_and_load(session, plan_data=plan, context_variables={"plan": structure(5)})
    assert loaded.plan_data == plan
    assert loaded.context_variables == {"plan": structure(5)}


def test_multi_megabyte_history_round_trips(session, api):
    messages = history(10_000)
    assert len(json.dumps(messages, ensure_ascii=False).encode()) > 3_000_000
    state, loaded = save_and_load(session, conversation_history=messages)
    assert loaded.conversation_history == messages
    longer = messages + history(100)
    assert api.update_state(state.id, 1, conversation_history=longer) == 2
    assert SessionState.get_by_id(state.id).conversation_history == longer


def test_tuples_come_back_as_lists(session):
    _, loaded = save_and_load(session, plan_data={"pair": (1, 2)})
    assert loaded.plan_data == {"pair": [1, 2]}


# --- timestamps --------------------------------------------------------------------------------


def assert_utc(value):
    assert isinstance(value, dt.datetime)
    assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)
    assert value.tzinfo == UTC


def test_timestamps_come_back_aware_utc_with_microseconds(session):
    state, loaded = save_and_load(session)
    for name in ("created_at", "updated_at"):
        assert_utc(getattr(loaded, name))
        assert getattr(loaded, name) == getattr(state, name)  # microseconds included
    assert_utc(Session.get_by_id(session.id).created_at)
    assert Session.get_by_id(session.id).created_at == session.created_at


EXPIRIES = [
    dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")),
    dt.datetime(2031, 7, 4, 12, 30, 0, 1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    dt.datetime(2030, 12, 31, 23, 59, 59, 999999,
                tzinfo=dt.timezone(dt.timedelta(hours=-9, minutes=-30))),
    dt.datetime(2030, 6, 1, 12, 0, 0, 500000,
                tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))),
    dt.datetime(1970, 1, 1, 0, 0, 0, 0, tzinfo=UTC),
    dt.datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # past 2038
]


def test_expires_at_is_the_same_instant_in_utc(session, api):
    for written in EXPIRIES:
        state, loaded = save_and_load(session, expires_at=written)
        assert_utc(loaded.expires_at)
        assert loaded.expires_at == written  # the same instant...
        assert loaded.expires_at.replace(tzinfo=None) == (
            written.astimezone(UTC).replace(tzinfo=None))  # ...written down in UTC
        assert loaded.expires_at.microsecond == written.microsecond
        api.update_state(state.id, 1, expires_at=written + dt.timedelta(microseconds=1))
        again = SessionState.get_by_id(state.id).expires_at
        assert_utc(again)
        assert again - written == dt.timedelta(microseconds=1)


def test_expires_at_orders_by_instant_across_zones(session):
    tokyo = zoneinfo.ZoneInfo("Asia/Tokyo")
    new_york = zoneinfo.ZoneInfo("America/New_York")
    early = dt.datetime(2031, 1, 1, 9, 0, 0, 1, tzinfo=tokyo)  # 00:00:00.000001 UTC
    late = dt.datetime(2030, 12, 31, 19, 0, 0, 2, tzinfo=new_york)  # 00:00:00.000002 UTC
    first, _ = save_and_load(session, expires_at=late)
    second, _ = save_and_load(session, expires_at=early)
    ordered = [s.id for s in SessionState.select().order_by(SessionState.expires_at)]
    assert ordered == [second.id, first.id]
    found = SessionState.select().where(SessionState.expires_at < late).count()
    assert found == 1


def test_to_dict_timestamps_are_iso_with_utc_offset(session):
    written = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo"))
    _, loaded = save_and_load(session, expires_at=written)
    data = loaded.to_dict()
    assert data["expires_at"] == "2031-05-05T22:08:09.123456+00:00"
    for name in ("created_at", "updated_at"):
        assert dt.datetime.fromisoformat(data[name]) == getattr(loaded, name)
        assert data[name].endswith("+00:00")
