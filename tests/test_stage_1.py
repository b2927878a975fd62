"""The specification's test script (test_stage_1.py), ported to peewee, and its checklist."""

import uuid

import pytest

import sessionstate
from sessionstate import Session, SessionState
from sessionstate.errors import InvalidStateData


def test_session_state_crud(migrated):
    # Create parent session
    session = Session(id=str(uuid.uuid4()), name="Test Session", status="active")
    session.save()

    # Create session state
    state = SessionState.create_for_session(
        session_id=session.id,
        mode="copilot",
        conversation_history=[{"role": "user", "content": "Hello"}],
        context_variables={"key": "value"},
    )
    state.save()

    # Query back
    loaded = SessionState.select().where(SessionState.session_id == session.id).first()
    assert loaded is not None
    assert loaded.mode == "copilot"
    assert len(loaded.conversation_history) == 1

    # Test cascade delete
    session.delete_instance()
    orphan = SessionState.select().where(SessionState.id == state.id).first()
    assert orphan is None


def test_can_insert_and_query_records(migrated):
    session = Session.create(name="s")
    states = [SessionState.create_for_session(session.id, "copilot", current_phase="p%d" % i)
              for i in range(3)]
    for state in states:
        state.save()
    found = {s.current_phase for s in SessionState.select().where(
        SessionState.session_id == session.id)}
    assert found == {"p0", "p1", "p2"}
    assert [s.id for s in session.session_states.order_by(SessionState.current_phase)] == [
        s.id for s in states]


def test_save_of_a_new_instance_with_its_id_set_inserts(migrated):
    session = Session(id=str(uuid.uuid4()), name="preset id")
    assert session.save() == 1
    assert Session.get_by_id(session.id).name == "preset id"
    state = SessionState(id=str(uuid.uuid4()), session_id=session.id, mode="copilot")
    assert state.save() == 1
    assert SessionState.get_by_id(state.id).mode == "copilot"


def test_foreign_key_refuses_a_state_without_its_session(migrated):
    import pytest

    from sessionstate import SessionNotFound

    state = SessionState.create_for_session(str(uuid.uuid4()), "copilot")
    with pytest.raises(SessionNotFound, match=state.session_id):
        state.save()
    assert SessionState.select().count() == 0


def test_cascade_delete_by_raw_sql(migrated):
    session = Session.create(name="raw")
    SessionState.create_for_session(session.id, "copilot").save()
    SessionState.create_for_session(session.id, "planning-control").save()
    migrated.execute_sql("DELETE FROM sessions")
    assert SessionState.select().count() == 0


def test_create_for_session_defaults():
    state = SessionState.create_for_session("sid", "copilot")
    assert state.session_id == "sid"
    assert state.mode == "copilot"
    assert state.conversation_history == []
    assert state.context_variables == {}
    assert state.plan_data is None
    assert state.current_phase == "init"
    assert state.status == "active"
    assert state.version == 1


def test_create_for_session_refuses_unknown_arguments():
    import pytest

    from sessionstate import InvalidStateData

    with pytest.raises(InvalidStateData, match="unknown argument.*histroy"):
        SessionState.create_for_session("sid", "copilot", histroy=[])


def test_to_dict_has_the_specified_keys_and_iso_timestamps(migrated):
    session = Session.create(name="d")
    state = SessionState.create_for_session(session.id, "copilot", plan_data={"steps": [1]})
    state.save()
    loaded = SessionState.get_by_id(state.id).to_dict()
    assert set(loaded) == {
        "id", "session_id", "mode", "conversation_history", "context_variables", "plan_data",
        "current_phase", "current_step", "status", "created_at", "updated_at", "expires_at",
        "version",
    }
    assert loaded["plan_data"] == {"steps": [1]}
    assert loaded["version"] == 1
    assert loaded["created_at"].endswith("+00:00")
    assert loaded["updated_at"] == loaded["created_at"]
    assert loaded["expires_at"] is None


def test_to_dict_of_a_raw_row_with_null_json_gives_empty_containers(migrated):
    Session.create(id="s1", name="raw")
    migrated.execute_sql("INSERT INTO session_states (id, session_id, mode) "
                         "VALUES ('st1', 's1', 'copilot')")
    loaded = SessionState.get_by_id("st1").to_dict()
    assert loaded["conversation_history"] == []
    assert loaded["context_variables"] == {}
    assert loaded["status"] == "active"
    assert loaded["version"] == 1


def test_saving_a_new_instance_with_a_taken_id_is_a_sessionstate_error(migrated):
    import peewee as pw
    import pytest

    from sessionstate import AlreadyExists

    session = Session.create(name="first")
    with pytest.raises(AlreadyExists, match=session.id) as error:
        Session(id=session.id, name="second").save()
    assert isinstance(error.value.__cause__, pw.IntegrityError)  # the cause stays chained
    state = SessionState.create_for_session(session.id, "copilot")
    state.save()
    with pytest.raises(AlreadyExists) as error:
        SessionState(id=state.id, session_id=session.id, mode="copilot").save()
    assert isinstance(error.value.__cause__, pw.IntegrityError)
    assert Session.get_by_id(session.id).name == "first"
    assert SessionState.select().count() == 1


def test_rows_loaded_by_peewee_are_known_as_stored(migrated):
    """save() of a row peewee loaded is the version-checked UPDATE, never an INSERT.

    This relies on how peewee constructs loaded instances (models._is_loaded): if a peewee
    release changes that, this test fails loudly.
    """
    session = Session.create(name="s")
    SessionState.create_for_session(session.id, "copilot").save()
    for load in (SessionState.get, lambda: SessionState.select().first(),
                 lambda: list(SessionState.select())[0]):
        loaded = load()
        loaded.current_step = (loaded.current_step or 0) + 1
        assert loaded.save() == 1
    assert SessionState.get().version == 4
    assert Session.get().stored


def test_get_state_builds_its_state_as_peewee_builds_a_loaded_row(migrated):
    """get_state's instance (SessionState.from_row) holds what peewee's select gives: the same
    values, nothing dirty, known as stored, its session reachable, its fixed fields guarded."""
    session = Session.create(name="s")
    SessionState.create_for_session(session.id, "copilot", context_variables={"k": 1}).save()
    state, by_peewee = sessionstate.get_state(session.id), SessionState.get()
    assert state.to_dict() == by_peewee.to_dict()
    assert state.dirty_fields == by_peewee.dirty_fields == []
    assert state.stored and state.session.name == "s"
    assert state.stored_values == by_peewee.stored_values
    state.mode = "planning-control"
    with pytest.raises(InvalidStateData, match="mode"):
        state.save()
    state.mode = "copilot"
    state.context_variables["k"] = 2
    assert state.save() == 1
    assert sessionstate.get_state(session.id).context_variables == {"k": 2}
    assert state.version == 2
