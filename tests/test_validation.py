"""Bad input is refused with InvalidStateData before anything is written.

Each bad value goes through both doors: update_state() and create_for_session(...).save().
The message must name the field and the path of the offending value inside it, and the
database must be exactly as it was afterwards.
"""

import datetime as dt
import math
from decimal import Decimal

import pytest

from sessionstate import InvalidStateData, Session, SessionState, update_state
from sessionstate import dialects

UTC = dt.timezone.utc


class Thing:
    """An arbitrary object: not a JSON value."""


# (field, bad value, the path the message must name, a word of the problem it must name)
BAD_JSON = [
    ("context_variables", {"tools": ["search", "code", Thing()]},
     "context_variables['tools'][2]", "Thing"),
    ("plan_data", {"steps": {1, 2}}, "plan_data['steps']", "set"),
    ("plan_data", {"steps": [frozenset()]}, "plan_data['steps'][0]", "frozenset"),
    ("conversation_history", [{"role": "user", "content": b"hi"}],
     "conversation_history[0]['content']", "bytes"),
    ("conversation_history", [{"role": "user", "content": bytearray(b"hi")}],
     "conversation_history[0]['content']", "bytearray"),
    ("context_variables", {"callback": lambda: None}, "context_variables['callback']",
     "function"),
    ("context_variables", {"builtin": len}, "context_variables['builtin']", "builtin"),
    ("context_variables", {"when": dt.datetime(2030, 1, 1, tzinfo=UTC)},
     "context_variables['when']", "datetime"),
    ("plan_data", {"amount": Decimal("1.5")}, "plan_data['amount']", "Decimal"),
    ("plan_data", Thing(), "plan_data", "Thing"),
    ("plan_data", {"x": [1.0, float("nan")]}, "plan_data['x'][1]", "nan"),
    ("plan_data", [math.inf], "plan_data[0]", "inf"),
    ("plan_data", {"a": {"b": -math.inf}}, "plan_data['a']['b']", "-inf"),
    ("plan_data", {"big": 2**64}, "plan_data['big']", "64 bits"),
    ("context_variables", {"a": {1: "x"}}, "context_variables['a']", "key 1"),
    ("context_variables", {None: "x"}, "context_variables", "key None"),
    ("context_variables", {("t", 1): "x"}, "context_variables", "not a string"),
    ("conversation_history", [{"role": "user", "content": "a\x00b"}],
     "conversation_history[0]['content']", "\\x00"),
    ("context_variables", {"k\x00": 1}, "context_variables[%r]" % "k\x00", "\\x00"),
    ("context_variables", {"s": "lone \ud800 surrogate"}, "context_variables['s']", "\\ud800"),
    ("context_variables", {"\udfff": 1}, "context_variables[%r]" % "\udfff", "\\udfff"),
    # the history is an array (appended to in the database), the context an object
    ("conversation_history", {"role": "user"}, "conversation_history", "list"),
    ("context_variables", ["key", "value"], "context_variables", "dict"),
]

BAD_SCALARS = [
    ("current_phase", "", "current_phase", "non-empty"),
    ("current_phase", "   ", "current_phase", "non-empty"),
    ("current_phase", "x" * 51, "current_phase", "51"),
    ("current_phase", "a\x00b", "current_phase", "NUL"),
    ("current_phase", "\ud800", "current_phase", "surrogate"),
    ("current_phase", 5, "current_phase", "string"),
    ("current_step", 3.5, "current_step", "integer"),
    ("current_step", 3.0, "current_step", "integer"),
    ("current_step", "3", "current_step", "integer"),
    ("current_step", True, "current_step", "integer"),
    ("current_step", False, "current_step", "integer"),
    ("current_step", 2**31, "current_step", "32-bit"),
    ("current_step", -(2**31) - 1, "current_step", "32-bit"),
    ("expires_at", dt.datetime(2030, 1, 1, 12, 0), "expires_at", "timezone-aware"),
    ("expires_at", "2030-01-01T00:00:00+00:00", "expires_at", "datetime"),
    ("expires_at", dt.date(2030, 1, 1), "expires_at", "datetime"),
    ("expires_at", 1_900_000_000, "expires_at", "datetime"),
]

BAD_STATUS = [
    ("status", "bogus", "status", "active"),
    ("status", "ACTIVE", "status", "active"),
    ("status", "", "status", "active"),
    ("status", None, "status", "active"),
]

BAD_MODE = [
    ("mode", "", "mode", "non-empty"),
    ("mode", " \t", "mode", "non-empty"),
    ("mode", "m" * 51, "mode", "51"),
    ("mode", "copilot\x00", "mode", "NUL"),
    ("mode", "\udc80", "mode", "surrogate"),
    ("mode", None, "mode", "non-empty"),
    ("mode", 7, "mode", "non-empty"),
]


def refusals(cases, attempt, unchanged):
    """Run `attempt(field, value)` for each case; the list of what went wrong (empty: none).

    One database serves all the cases of a test (a fresh one per case would make the file
    slow on the servers); each case must be refused with the right message and leave the
    database as `unchanged()` says it was.
    """
    before = unchanged()
    problems = []
    for field, value, path, problem in cases:
        label = "%s=%r" % (field, value)
        try:
            attempt(field, value)
        except InvalidStateData as error:
            message = str(error)
            if path + ":" not in message:
                problems.append("%s: message does not name %s: %s" % (label, path, message))
            elif problem.lower() not in message.lower():
                problems.append("%s: message does not say %r: %s" % (label, problem, message))
        except Exception as error:  # noqa: BLE001 - any other outcome is a failure to report
            problems.append("%s: raised %s: %s" % (label, type(error).__name__, error))
        else:
            problems.append("%s: accepted" % label)
        if unchanged() != before:
            problems.append("%s: the database changed" % label)
            before = unchanged()
    return problems


@pytest.fixture
def state(migrated):
    session = Session.create(name="s")
    state = SessionState.create_for_session(
        session.id, "copilot",
        conversation_history=[{"role": "user", "content": "Hello"}],
        context_variables={"key": "value"}, plan_data={"steps": [1, 2]},
        current_phase="planning", current_step=1,
    )
    state.save()
    update_state(state.id, 1, current_step=2)  # version 2: a bump has happened before
    return SessionState.get_by_id(state.id)


def snapshot(state_id):
    return SessionState.get_by_id(state_id).to_dict()


def database_contents():
    """Every state row, every column: what must not change when a call is refused."""
    return sorted((s.to_dict() for s in SessionState.select()), key=lambda d: d["id"])


# --- through update_state ------------------------------------------------------------------


def test_update_state_refuses_each_bad_value(state, api):
    def attempt(field, value):
        api.update_state(state.id, 2, **{field: value})

    assert refusals(BAD_JSON + BAD_SCALARS + BAD_STATUS, attempt, database_contents) == []
    assert snapshot(state.id)["version"] == 2


def test_update_state_refuses_the_whole_call_when_one_field_is_bad(state, api):
    def attempt(field, value):
        changes = {"status": "suspended", "current_step": 9, "conversation_history": []}
        changes[field] = value
        api.update_state(state.id, 2, **changes)

    assert refusals(BAD_JSON + BAD_SCALARS, attempt, database_contents) == []


def test_update_state_example_from_the_issue(state, api):
    before = snapshot(state.id)
    with pytest.raises(InvalidStateData) as error:
        api.update_state(state.id, 2, context_variables={"tools": ["a", "b", object()]})
    assert str(error.value).startswith("context_variables['tools'][2]: ")
    assert snapshot(state.id) == before


# --- through create_for_session(...).save() --------------------------------------------------


def test_create_for_session_save_refuses_each_bad_value(state):
    def attempt(field, value):
        SessionState.create_for_session(state.session_id, "copilot", **{field: value}).save()

    assert refusals(BAD_JSON + BAD_SCALARS, attempt, database_contents) == []


def test_create_for_session_save_refuses_each_bad_mode(state):
    def attempt(field, value):
        SessionState.create_for_session(state.session_id, value).save()

    assert refusals(BAD_MODE, attempt, database_contents) == []


def test_save_refuses_each_bad_status(state):
    def attempt(field, value):
        new = SessionState.create_for_session(state.session_id, "copilot")
        new.status = value
        new.save()

    assert refusals(BAD_STATUS, attempt, database_contents) == []


def test_save_of_a_loaded_instance_refuses_each_bad_value(state):
    def attempt(field, value):
        loaded = SessionState.get_by_id(state.id)
        setattr(loaded, field, value)
        loaded.save()

    assert refusals(BAD_JSON + BAD_SCALARS + BAD_STATUS, attempt, database_contents) == []


def test_a_refused_instance_can_be_fixed_and_saved(state):
    new = SessionState.create_for_session(state.session_id, "copilot",
                                          context_variables={"x": float("nan")})
    with pytest.raises(InvalidStateData):
        new.save()
    new.context_variables = {"x": 1.5}
    new.save()
    assert SessionState.get_by_id(new.id).context_variables == {"x": 1.5}


# --- the limits themselves are accepted ------------------------------------------------------


def test_boundary_values_are_accepted(state, api):
    version = 2
    for status in ("suspended", "active", "suspended"):
        version = api.update_state(state.id, version, status=status)
        assert SessionState.get_by_id(state.id).status == status
    for final in ("completed", "expired"):  # final statuses: each on a state of its own
        other = SessionState.create_for_session(state.session_id, "copilot")
        other.save()
        api.update_state(other.id, 1, status=final)
        assert SessionState.get_by_id(other.id).status == final
    for step in (0, -1, 2**31 - 1, -(2**31), None):
        version = api.update_state(state.id, version, current_step=step)
        assert SessionState.get_by_id(state.id).current_step == step
    for phase in ("p", "p" * 50, "é" * 50, "\U0001F600" * 50):
        version = api.update_state(state.id, version, current_phase=phase)
        assert SessionState.get_by_id(state.id).current_phase == phase
    for mode in ("m", "m" * 50, "\u05e9" * 50):
        new = SessionState.create_for_session(state.session_id, mode)
        new.save()
        assert SessionState.get_by_id(new.id).mode == mode
    big = {"max": 2**63 - 1, "min": -(2**63)}
    version = api.update_state(state.id, version, plan_data=big)
    assert SessionState.get_by_id(state.id).plan_data == big


# --- nesting depth -----------------------------------------------------------------------------


def nested(levels, leaf="leaf"):
    """`levels` containers inside one another, alternating lists and objects."""
    value = leaf
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def test_the_deepest_nesting_allowed_round_trips(state, migrated, api):
    deepest = dialects.of(migrated).json_max_depth
    value = nested(deepest)
    api.update_state(state.id, 2, plan_data=value)
    assert SessionState.get_by_id(state.id).plan_data == value
    new = SessionState.create_for_session(state.session_id, "copilot", plan_data=value)
    new.save()
    assert SessionState.get_by_id(new.id).plan_data == value


def test_nesting_past_the_limit_is_refused(state, migrated, api):
    deepest = dialects.of(migrated).json_max_depth
    before = snapshot(state.id)
    for extra in (1, 10, 100_000):  # far past Python's recursion limit too
        too_deep = nested(deepest + extra)
        with pytest.raises(InvalidStateData) as error:
            api.update_state(state.id, 2, plan_data=too_deep)
        assert str(error.value).startswith("plan_data[")
        assert "nested deeper than %d" % deepest in str(error.value)
        assert snapshot(state.id) == before
        with pytest.raises(InvalidStateData, match=r"^conversation_history\["):
            SessionState.create_for_session(state.session_id, "copilot",
                                            conversation_history=[too_deep]).save()
        assert database_contents() == [before]


def test_deeper_than_32_levels_is_refused_on_mysql_only(state, backend, api):
    value = nested(33)
    if backend == "mysql":
        with pytest.raises(InvalidStateData, match=r"^plan_data\["):
            api.update_state(state.id, 2, plan_data=value)
        assert snapshot(state.id)["version"] == 2
    else:
        assert api.update_state(state.id, 2, plan_data=value) == 3
        assert SessionState.get_by_id(state.id).plan_data == value


def test_500_levels_round_trip_on_sqlite_and_postgresql(state, backend, api):
    if backend == "mysql":
        pytest.skip("MariaDB stores at most 32 levels")
    value = nested(500)
    assert api.update_state(state.id, 2, plan_data=value) == 3
    assert SessionState.get_by_id(state.id).plan_data == value
