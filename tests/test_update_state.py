"""The version-bump update: success, conflict, missing row, refused fields, and save()."""

import datetime as dt
import uuid

import pytest
import sessionstate

from sessionstate import (
    InvalidStateData,
    Session,
    SessionNotFound,
    SessionState,
    SessionStateError,
    StaleStateError,
    update_state,
)

UTC = dt.timezone.utc


@pytest.fixture
def state(migrated):
    session = Session.create(name="s")
    state = SessionState.create_for_session(
        session.id, "copilot",
        conversation_history=[{"role": "user", "content": "Hello"}],
        context_variables={"key": "value"},
    )
    state.save()
    return SessionState.get_by_id(state.id)


def snapshot(state_id):
    return SessionState.get_by_id(state_id).to_dict()


# --- success ---------------------------------------------------------------------------------


def test_success_returns_the_next_version_and_writes_the_changes(state, api):
    expires = dt.datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    new = api.update_state(state.id, 1, context_variables={"key": "changed"}, current_step=3,
                       current_phase="execution", status="suspended", plan_data={"s": [1]},
                       expires_at=expires)
    assert new == 2
    row = SessionState.get_by_id(state.id)
    assert row.version == 2
    assert row.context_variables == {"key": "changed"}
    assert row.current_step == 3
    assert row.current_phase == "execution"
    assert row.status == "suspended"
    assert row.plan_data == {"s": [1]}
    assert row.expires_at == expires
    # untouched fields stay as they were
    assert row.conversation_history == [{"role": "user", "content": "Hello"}]
    assert row.mode == "copilot"
    assert row.session_id == state.session_id
    assert row.created_at == state.created_at


def test_success_bumps_updated_at(state, api):
    before = dt.datetime.now(UTC)
    api.update_state(state.id, 1, current_step=1)
    row = SessionState.get_by_id(state.id)
    assert row.updated_at > state.updated_at
    assert row.updated_at >= before - dt.timedelta(seconds=1)
    assert row.updated_at.tzinfo == UTC
    api.update_state(state.id, 2, current_step=2)
    again = SessionState.get_by_id(state.id)
    assert again.updated_at > row.updated_at


def test_consecutive_updates_chain_versions(state, api):
    version = 1
    for step in range(5):
        version = api.update_state(state.id, version, current_step=step)
    assert version == 6
    assert SessionState.get_by_id(state.id).version == 6
    assert SessionState.get_by_id(state.id).current_step == 4


def test_setting_a_field_to_null(state, api):
    api.update_state(state.id, 1, context_variables=None, current_phase=None)
    row = SessionState.get_by_id(state.id)
    assert row.context_variables is None
    assert row.current_phase is None


def test_success_path_is_one_statement(state, monkeypatch):
    database = sessionstate.get_database()
    update_state(state.id, 1, current_step=1)  # the schema check is done, and remembered
    statements = []
    original = database.execute_sql

    def counting(sql, params=None, *args, **kwargs):
        statements.append(sql)
        return original(sql, params, *args, **kwargs)

    monkeypatch.setattr(database, "execute_sql", counting)
    update_state(state.id, 2, current_step=2)
    monkeypatch.undo()
    assert len(statements) == 1, statements
    assert statements[0].lstrip().upper().startswith("UPDATE")


def test_only_the_named_state_changes(state, api):
    other = SessionState.create_for_session(state.session_id, "planning-control")
    other.save()
    api.update_state(state.id, 1, status="completed")
    assert SessionState.get_by_id(other.id).status == "active"
    assert SessionState.get_by_id(other.id).version == 1


# --- conflict ----------------------------------------------------------------------------------


def test_conflict_raises_stale_state_error_and_leaves_the_row_unchanged(state, api):
    api.update_state(state.id, 1, context_variables={"by": "first writer"})
    before = snapshot(state.id)
    with pytest.raises(StaleStateError) as error:
        api.update_state(state.id, 1, context_variables={"by": "second writer"}, status="completed")
    assert error.value.state_id == state.id
    assert error.value.expected_version == 1
    assert error.value.actual_version == 2
    assert isinstance(error.value, SessionStateError)
    assert state.id in str(error.value)
    assert snapshot(state.id) == before
    assert before["context_variables"] == {"by": "first writer"}


def test_expected_version_ahead_of_the_row_is_stale_too(state, api):
    with pytest.raises(StaleStateError) as error:
        api.update_state(state.id, 7, current_step=1)
    assert (error.value.expected_version, error.value.actual_version) == (7, 1)
    assert snapshot(state.id)["version"] == 1


def test_the_loser_can_retry_with_the_actual_version(state, api):
    api.update_state(state.id, 1, current_step=1)
    try:
        api.update_state(state.id, 1, current_step=10)
    except StaleStateError as error:
        assert api.update_state(state.id, error.actual_version, current_step=10) == 3
    assert SessionState.get_by_id(state.id).current_step == 10


# --- missing -----------------------------------------------------------------------------------


def test_missing_state_raises_session_not_found(state, api):
    missing = str(uuid.uuid4())
    with pytest.raises(SessionNotFound) as error:
        api.update_state(missing, 1, status="completed")
    assert missing in str(error.value)
    assert isinstance(error.value, SessionStateError)
    assert SessionState.select().count() == 1
    assert snapshot(state.id)["status"] == "active"


def test_state_deleted_with_its_session_is_not_found(state, api):
    Session.get_by_id(state.session_id).delete_instance()
    with pytest.raises(SessionNotFound):
        api.update_state(state.id, 1, current_step=1)


# --- refused fields ------------------------------------------------------------------------------


REFUSED_FIELDS = [
    ("mode", "planning-control"),
    ("id", str(uuid.uuid4())),
    ("version", 99),
    ("session_id", str(uuid.uuid4())),
    ("session", str(uuid.uuid4())),
    ("created_at", dt.datetime(2000, 1, 1, tzinfo=UTC)),
    ("updated_at", dt.datetime(2000, 1, 1, tzinfo=UTC)),
    ("bogus", 1),
]


def test_fields_outside_the_allowed_set_are_refused(state, api):
    before = snapshot(state.id)
    for field, value in REFUSED_FIELDS:
        with pytest.raises(InvalidStateData) as error:
            api.update_state(state.id, 1, status="suspended", **{field: value})
        assert field in str(error.value), field
        assert snapshot(state.id) == before, field


def test_expected_version_must_be_a_positive_integer(state, api):
    before = snapshot(state.id)
    for expected in (0, -1, None, "1", 1.0, True):
        with pytest.raises(InvalidStateData, match="expected_version"):
            api.update_state(state.id, expected, status="suspended")
        assert snapshot(state.id) == before, expected


def test_state_id_must_be_an_id_string(state, api):
    before = snapshot(state.id)
    for state_id in (None, "", 42, "x" * 37):
        with pytest.raises(InvalidStateData, match="state_id"):
            api.update_state(state_id, 1, status="suspended")
    assert snapshot(state.id) == before


# --- SessionState.save() of a loaded instance ------------------------------------------------


def test_save_of_a_loaded_instance_is_a_version_checked_update(state):
    loaded = SessionState.get_by_id(state.id)
    old_updated = loaded.updated_at
    loaded.context_variables = {"key": "saved"}
    loaded.current_step = 4
    assert loaded.save() == 1
    assert loaded.version == 2
    assert loaded.updated_at > old_updated
    row = SessionState.get_by_id(state.id)
    assert row.version == 2
    assert row.context_variables == {"key": "saved"}
    assert row.current_step == 4
    assert row.updated_at == loaded.updated_at
    # and the instance can go on saving: its version followed the row
    loaded.current_step = 5
    loaded.save()
    assert SessionState.get_by_id(state.id).version == 3


def test_save_after_another_writer_raises_stale_and_loses_nothing(state):
    mine = SessionState.get_by_id(state.id)
    theirs = SessionState.get_by_id(state.id)
    theirs.context_variables = {"by": "them"}
    theirs.save()
    after_theirs = snapshot(state.id)
    mine.context_variables = {"by": "me"}
    with pytest.raises(StaleStateError) as error:
        mine.save()
    assert (error.value.expected_version, error.value.actual_version) == (1, 2)
    assert snapshot(state.id) == after_theirs
    assert after_theirs["context_variables"] == {"by": "them"}


def test_save_after_update_state_raises_stale(state, api):
    mine = SessionState.get_by_id(state.id)
    api.update_state(state.id, 1, conversation_history=[])
    mine.conversation_history = [{"role": "user", "content": "lost?"}]
    with pytest.raises(StaleStateError):
        mine.save()
    assert SessionState.get_by_id(state.id).conversation_history == []


def test_save_of_a_deleted_row_raises_not_found(state):
    mine = SessionState.get_by_id(state.id)
    SessionState.delete_by_id(state.id)
    mine.current_step = 1
    with pytest.raises(SessionNotFound):
        mine.save()
    assert SessionState.select().count() == 0


def test_save_of_a_loaded_instance_refuses_fields_update_state_refuses(state):
    mine = SessionState.get_by_id(state.id)
    before = snapshot(state.id)
    mine.mode = "planning-control"
    mine.current_step = 2
    with pytest.raises(InvalidStateData, match="mode"):
        mine.save()
    assert snapshot(state.id) == before


def test_save_of_an_instance_it_just_inserted_is_version_checked(migrated, api):
    session = Session.create(name="s")
    state = SessionState.create_for_session(session.id, "copilot")
    state.save()
    api.update_state(state.id, 1, current_step=9)
    state.current_step = 1
    with pytest.raises(StaleStateError):
        state.save()
    assert SessionState.get_by_id(state.id).current_step == 9
