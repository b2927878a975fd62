"""Schema introspection on every backend: what the migrations really created.

Each question (columns, types, indexes, foreign keys) is answered from the database's own
catalogue (PRAGMA on SQLite, information_schema / pg_catalog on the servers), never from the
models, so a migration that drifts from the specification fails here.
"""

import datetime as dt
import uuid

import pytest

from sessionstate import Session, SessionState, rollback
from sessionstate.migrate import applied

UTC = dt.timezone.utc

SPEC_INDEXES = {
    "idx_session_states_session_id": ["session_id"],
    "idx_session_states_status": ["status"],
    "idx_session_states_session_status": ["session_id", "status"],
    "idx_session_states_mode": ["mode"],
    "idx_session_states_updated": ["updated_at"],
}

# name: nullable, in the specification's column order
SESSION_STATES_COLUMNS = [
    ("id", False),
    ("session_id", False),
    ("mode", False),
    ("conversation_history", True),
    ("context_variables", True),
    ("plan_data", True),
    ("current_phase", True),
    ("current_step", True),
    ("status", False),  # deliberate departure: NOT NULL DEFAULT 'active'
    ("created_at", True),
    ("updated_at", True),
    ("expires_at", True),
    ("version", False),  # deliberate departure: NOT NULL DEFAULT 1
]
SESSIONS_COLUMNS = [
    ("id", False),
    ("name", True),
    ("user_id", True),
    ("status", False),
    ("meta", True),
    ("created_at", False),
    ("last_active_at", False),
]
JSON_COLUMNS = ("conversation_history", "context_variables", "plan_data")
TIMESTAMP_COLUMNS = ("created_at", "updated_at", "expires_at")


# --- per-backend catalogue queries -------------------------------------------------------


def rows(db, sql, params=()):
    return db.execute_sql(sql, params).fetchall()


def columns(db, backend, table):
    """[(name, nullable, type text, character maximum length or None)] in table order."""
    if backend == "sqlite":
        result = []
        for _, name, declared, notnull, _, pk in rows(db, "PRAGMA table_info(%s)" % table):
            length = None
            if "(" in declared:
                length = int(declared.split("(", 1)[1].rstrip(")"))
            result.append((name, not (notnull or pk), declared.upper(), length))
        return result
    if backend == "postgresql":
        sql = ("SELECT column_name, is_nullable, data_type, character_maximum_length "
               "FROM information_schema.columns "
               "WHERE table_schema = current_schema() AND table_name = %s "
               "ORDER BY ordinal_position")
    else:
        sql = ("SELECT column_name, is_nullable, column_type, character_maximum_length "
               "FROM information_schema.columns "
               "WHERE table_schema = DATABASE() AND table_name = %s "
               "ORDER BY ordinal_position")
    return [(name, nullable == "YES", kind.lower(), length)
            for name, nullable, kind, length in rows(db, sql, (table,))]


def indexes(db, backend, table):
    """{index name: [column, ...]} for every index of `table` except the primary key's."""
    if backend == "sqlite":
        result = {}
        for _, name, _, origin, _ in rows(db, "PRAGMA index_list(%s)" % table):
            if origin == "pk":
                continue
            info = sorted(rows(db, "PRAGMA index_info(%s)" % name))
            result[name] = [column for _, _, column in info]
        return result
    if backend == "postgresql":
        sql = ("SELECT i.relname, a.attname FROM pg_index x "
               "JOIN pg_class t ON t.oid = x.indrelid "
               "JOIN pg_class i ON i.oid = x.indexrelid "
               "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord) "
               "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
               "WHERE t.relname = %s AND t.relnamespace = current_schema()::regnamespace "
               "AND NOT x.indisprimary ORDER BY i.relname, k.ord")
    else:
        sql = ("SELECT index_name, column_name FROM information_schema.statistics "
               "WHERE table_schema = DATABASE() AND table_name = %s "
               "AND index_name <> 'PRIMARY' ORDER BY index_name, seq_in_index")
    result = {}
    for name, column in rows(db, sql, (table,)):
        result.setdefault(name, []).append(column)
    return result


def foreign_keys(db, backend, table):
    """[(column, referenced table, referenced column, ON DELETE action)]."""
    if backend == "sqlite":
        return [(column, parent, parent_column, on_delete.upper())
                for _, _, parent, column, parent_column, _, on_delete, _
                in rows(db, "PRAGMA foreign_key_list(%s)" % table)]
    if backend == "postgresql":
        sql = ("SELECT kcu.column_name, ccu.table_name, ccu.column_name, rc.delete_rule "
               "FROM information_schema.referential_constraints rc "
               "JOIN information_schema.key_column_usage kcu "
               "  ON kcu.constraint_schema = rc.constraint_schema "
               "  AND kcu.constraint_name = rc.constraint_name "
               "JOIN information_schema.constraint_column_usage ccu "
               "  ON ccu.constraint_schema = rc.constraint_schema "
               "  AND ccu.constraint_name = rc.constraint_name "
               "WHERE rc.constraint_schema = current_schema() AND kcu.table_name = %s")
    else:
        sql = ("SELECT kcu.column_name, kcu.referenced_table_name, kcu.referenced_column_name, "
               "rc.delete_rule FROM information_schema.referential_constraints rc "
               "JOIN information_schema.key_column_usage kcu "
               "  ON kcu.constraint_schema = rc.constraint_schema "
               "  AND kcu.constraint_name = rc.constraint_name "
               "WHERE rc.constraint_schema = DATABASE() AND kcu.table_name = %s")
    return [(column, parent, parent_column, rule.upper())
            for column, parent, parent_column, rule in rows(db, sql, (table,))]


def mariadb_json_checks(db):
    """{(table, column): check clause} of MariaDB's JSON columns (longtext + json_valid)."""
    sql = ("SELECT table_name, constraint_name, check_clause "
           "FROM information_schema.check_constraints WHERE constraint_schema = DATABASE()")
    return {(table, name): clause for table, name, clause in rows(db, sql)}


def param(backend):
    return "?" if backend == "sqlite" else "%s"


def rollback_to(db, name):
    """Undo every migration after `name` (later migrations may add their own indexes)."""
    done = applied(db)
    rollback(db, steps=len(done) - done.index(name) - 1)
    assert applied(db)[-1] == name


# --- columns and nullability -------------------------------------------------------------


def test_session_states_columns_and_nullability(migrated, backend):
    found = [(name, nullable) for name, nullable, _, _ in
             columns(migrated, backend, "session_states")]
    assert found == SESSION_STATES_COLUMNS


def test_sessions_columns_and_nullability(migrated, backend):
    found = [(name, nullable) for name, nullable, _, _ in columns(migrated, backend, "sessions")]
    assert found == SESSIONS_COLUMNS


def test_string_lengths_are_the_specifications(migrated, backend):
    lengths = {name: length for name, _, _, length in
               columns(migrated, backend, "session_states")}
    assert lengths["id"] == 36
    assert lengths["session_id"] == 36
    assert lengths["mode"] == 50
    assert lengths["current_phase"] == 50
    assert lengths["status"] == 20
    session_lengths = {name: length for name, _, _, length in
                       columns(migrated, backend, "sessions")}
    assert session_lengths["id"] == 36


# --- native types --------------------------------------------------------------------------


def test_native_column_types(migrated, backend):
    types = {name: kind for name, _, kind, _ in columns(migrated, backend, "session_states")}
    session_types = {name: kind for name, _, kind, _ in columns(migrated, backend, "sessions")}
    if backend == "postgresql":
        for name in JSON_COLUMNS:
            assert types[name] == "jsonb", name
        assert session_types["meta"] == "jsonb"
        for name in TIMESTAMP_COLUMNS:
            assert types[name] == "timestamp with time zone", name
        assert session_types["created_at"] == "timestamp with time zone"
        assert types["current_step"] == "integer"
        assert types["version"] == "integer"
        assert types["mode"] == "character varying"
    elif backend == "mysql":
        # MariaDB's JSON is an alias: it reports LONGTEXT plus a json_valid() CHECK.
        checks = mariadb_json_checks(migrated)
        for name in JSON_COLUMNS:
            assert types[name] in ("json", "longtext"), name
            if types[name] == "longtext":
                assert "json_valid(`%s`)" % name in checks[("session_states", name)]
        assert types["current_step"].startswith("int")
        for name in TIMESTAMP_COLUMNS:
            assert types[name] == "datetime(6)", name
        assert session_types["created_at"] == "datetime(6)"
        assert session_types["last_active_at"] == "datetime(6)"
        assert types["version"].startswith("int")
        assert types["mode"] == "varchar(50)"
    else:
        # SQLite stores JSON as text and our timestamps as fixed-width ISO text.
        for name in JSON_COLUMNS:
            assert types[name] == "TEXT", name
        for name in TIMESTAMP_COLUMNS:
            assert types[name] == "TIMESTAMP", name
        assert types["current_step"] == "INTEGER"
        assert types["version"] == "INTEGER"


def test_server_json_columns_refuse_invalid_json(migrated, backend):
    if backend == "sqlite":
        pytest.skip("SQLite stores JSON as plain TEXT")
    import peewee as pw

    Session.create(id="s1")
    # jsonb's parser on PostgreSQL, the json_valid() CHECK on MariaDB.
    with pytest.raises(pw.DatabaseError):
        migrated.execute_sql("INSERT INTO session_states (id, session_id, mode, plan_data) "
                             "VALUES ('x', 's1', 'copilot', '{not json')")
    assert SessionState.select().count() == 0


# --- database-side defaults ------------------------------------------------------------------


def test_raw_insert_gets_the_database_defaults(migrated, backend):
    Session.create(id="s1", name="raw")
    before = dt.datetime.now(UTC)
    migrated.execute_sql("INSERT INTO session_states (id, session_id, mode) "
                         "VALUES ('st1', 's1', 'copilot')")
    after = dt.datetime.now(UTC)
    state = SessionState.get_by_id("st1")
    assert state.status == "active"
    assert state.version == 1
    for value in (state.created_at, state.updated_at):
        assert isinstance(value, dt.datetime)
        assert value.utcoffset() == dt.timedelta(0)
        assert value.tzinfo == UTC
        # The server's and the process's zones are both non-UTC in the tests: an hours-off
        # answer means a zone was applied twice or not at all.
        assert before - dt.timedelta(seconds=5) <= value <= after + dt.timedelta(seconds=5)
    assert state.created_at == state.updated_at
    assert state.expires_at is None
    assert state.current_step is None
    raw = rows(migrated, "SELECT status, version FROM session_states WHERE id = 'st1'")
    assert list(raw[0]) == ["active", 1]


def test_raw_insert_into_sessions_gets_the_database_defaults(migrated, backend):
    before = dt.datetime.now(UTC)
    migrated.execute_sql("INSERT INTO sessions (id) VALUES ('s1')")
    session = Session.get_by_id("s1")
    assert session.status == "active"
    assert session.name is None and session.user_id is None and session.meta is None
    for value in (session.created_at, session.last_active_at):
        assert value.tzinfo == UTC
        assert abs(value - before) < dt.timedelta(seconds=5)


def test_not_null_columns_refuse_null(migrated, backend):
    import peewee as pw

    Session.create(id="s1")
    for column in ("status", "version"):
        with pytest.raises(pw.IntegrityError):
            with migrated.atomic():
                migrated.execute_sql(
                    "INSERT INTO session_states (id, session_id, mode, %s) "
                    "VALUES ('st1', 's1', 'copilot', NULL)" % column)
    assert SessionState.select().count() == 0


# --- indexes ---------------------------------------------------------------------------------


def test_migration_002_creates_exactly_the_five_specified_indexes(migrated, backend):
    rollback_to(migrated, "002_add_session_states")
    assert indexes(migrated, backend, "session_states") == SPEC_INDEXES


def test_the_five_indexes_are_present_at_head(migrated, backend):
    found = indexes(migrated, backend, "session_states")
    for name, cols in SPEC_INDEXES.items():
        assert found.get(name) == cols, name


def test_sessions_user_id_index(migrated, backend):
    assert indexes(migrated, backend, "sessions") == {"idx_sessions_user_id": ["user_id"]}


# --- foreign key -------------------------------------------------------------------------------


def test_foreign_key_to_sessions_with_on_delete_cascade(migrated, backend):
    assert foreign_keys(migrated, backend, "session_states") == [
        ("session_id", "sessions", "id", "CASCADE")]
    assert foreign_keys(migrated, backend, "sessions") == []


def test_cascade_happens_in_the_database(migrated, backend):
    keep, gone = str(uuid.uuid4()), str(uuid.uuid4())
    for sid in (keep, gone):
        migrated.execute_sql("INSERT INTO sessions (id) VALUES (%s)" % param(backend), (sid,))
        for n in range(2):
            migrated.execute_sql(
                "INSERT INTO session_states (id, session_id, mode) VALUES (%s, %s, 'copilot')"
                .replace("%s", param(backend)), ("%s-%d" % (sid[:30], n), sid))
    migrated.execute_sql("DELETE FROM sessions WHERE id = %s" % param(backend), (gone,))
    left = rows(migrated, "SELECT session_id FROM session_states")
    assert sorted(r[0] for r in left) == [keep, keep]
