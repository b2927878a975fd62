"""The baseline: hand-written SQL on the bare driver, doing what each sessionstate call does.

stdlib sqlite3, psycopg (PostgreSQL) or PyMySQL (MariaDB/MySQL), each on its own connection,
with stdlib json for serialisation and no validation: the least work that gives the same
result. Every method mirrors one sessionstate function, on the same schema.
"""

import datetime as dt
import json
import sqlite3
import urllib.parse
import uuid

UTC = dt.timezone.utc

STATE_COLUMNS = ("id, session_id, mode, conversation_history, context_variables, plan_data, "
                 "current_phase, current_step, status, created_at, updated_at, expires_at, "
                 "version")


class Baseline:
    """Common SQL; subclasses supply the connection, placeholders and per-backend bits."""

    family = None
    param = "?"

    def __init__(self, url):
        self.url = url
        self.conn = self.connect(url)

    # -- per backend -----------------------------------------------------------------------
    def connect(self, url):
        raise NotImplementedError

    def ts(self, value):
        """An aware UTC datetime as this backend's parameter."""
        return value

    def read_ts(self, value):
        return value

    def json_param(self, text):
        return text

    def read_json(self, value):
        return None if value is None else json.loads(value)

    def sql(self, text):
        return text if self.param == "?" else text.replace("?", self.param)

    def begin(self):
        self.conn.execute("BEGIN")

    def commit(self):
        self.conn.execute("COMMIT")

    def close(self):
        self.conn.close()

    # -- bulk loading (used for both sides' data) ------------------------------------------
    ANALYZE_SQL = "ANALYZE"

    def analyze(self):
        """Refresh the planner's statistics of both tables."""
        cur = self.conn.cursor()
        cur.execute(self.ANALYZE_SQL)
        if cur.description:
            cur.fetchall()

    def bulk_load(self, sessions, states):
        """executemany inside one transaction."""
        sessions = [row[:5] + (self.ts(row[5]), self.ts(row[6])) for row in sessions]
        states = [row[:9] + (self.ts(row[9]), self.ts(row[10]), row[11], row[12])
                  for row in states]
        cur = self.conn.cursor()
        self.begin()
        cur.executemany(self.sql("INSERT INTO sessions (id, name, user_id, status, meta, "
                                 "created_at, last_active_at) VALUES (?, ?, ?, ?, ?, ?, ?)"),
                        sessions)
        cur.executemany(self.sql("INSERT INTO session_states (%s) VALUES "
                                 "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" % STATE_COLUMNS),
                        states)
        self.commit()

    def delete_all(self):
        self.begin()
        self.conn.cursor().execute("DELETE FROM session_states")
        self.conn.cursor().execute("DELETE FROM sessions")
        self.commit()

    def set_history(self, state_id, history):
        cur = self.conn.cursor()
        cur.execute(self.sql("UPDATE session_states SET conversation_history = ? WHERE id = ?"),
                    (self.json_param(json.dumps(history)), state_id))

    # -- W1 --------------------------------------------------------------------------------
    def create_session(self, mode, name, user_id, meta, history, context):
        now = dt.datetime.now(UTC)
        session_id, state_id = str(uuid.uuid4()), str(uuid.uuid4())
        cur = self.conn.cursor()
        self.begin()
        cur.execute(self.sql("INSERT INTO sessions (id, name, user_id, status, meta, created_at, "
                             "last_active_at) VALUES (?, ?, ?, 'active', ?, ?, ?)"),
                    (session_id, name, user_id, self.json_param(json.dumps(meta)), self.ts(now),
                     self.ts(now)))
        cur.execute(self.sql("INSERT INTO session_states (id, session_id, mode, "
                             "conversation_history, context_variables, plan_data, current_phase, "
                             "current_step, status, created_at, updated_at, expires_at, version) "
                             "VALUES (?, ?, ?, ?, ?, NULL, 'init', NULL, 'active', ?, ?, NULL, 1)"),
                    (state_id, session_id, mode, self.json_param(json.dumps(history)),
                     self.json_param(json.dumps(context)), self.ts(now), self.ts(now)))
        self.commit()
        return session_id, state_id

    # -- W2 --------------------------------------------------------------------------------
    def save_state(self, state_id, expected_version, history, context, plan, phase, step):
        cur = self.conn.cursor()
        cur.execute(self.sql("UPDATE session_states SET conversation_history = ?, "
                             "context_variables = ?, plan_data = ?, current_phase = ?, "
                             "current_step = ?, updated_at = ?, version = version + 1 "
                             "WHERE id = ? AND version = ?"),
                    (self.json_param(json.dumps(history)), self.json_param(json.dumps(context)),
                     self.json_param(json.dumps(plan)), phase, step,
                     self.ts(dt.datetime.now(UTC)), state_id, expected_version))
        if cur.rowcount != 1:
            raise RuntimeError("stale or missing state %s" % state_id)
        return expected_version + 1

    # -- W3 --------------------------------------------------------------------------------
    def get_state(self, session_id):
        cur = self.conn.cursor()
        cur.execute(self.sql("SELECT %s FROM session_states WHERE session_id = ? "
                             "ORDER BY updated_at DESC, created_at DESC LIMIT 1" % STATE_COLUMNS),
                    (session_id,))
        row = cur.fetchone()
        if row is None:
            raise LookupError(session_id)
        return {
            "id": row[0], "session_id": row[1], "mode": row[2],
            "conversation_history": self.read_json(row[3]),
            "context_variables": self.read_json(row[4]),
            "plan_data": self.read_json(row[5]),
            "current_phase": row[6], "current_step": row[7], "status": row[8],
            "created_at": self.read_ts(row[9]), "updated_at": self.read_ts(row[10]),
            "expires_at": self.read_ts(row[11]), "version": row[12],
        }

    # -- W4 --------------------------------------------------------------------------------
    def append_message(self, state_id, message):
        raise NotImplementedError

    def update_then_select(self, update_sql, params, state_id):
        """The new version where UPDATE ... RETURNING is missing: UPDATE, then SELECT, in one
        transaction so no other writer's bump comes between them."""
        cur = self.conn.cursor()
        self.begin()
        try:
            cur.execute(self.sql(update_sql), params)
            if cur.rowcount != 1:
                raise LookupError(state_id)
            cur.execute(self.sql("SELECT version FROM session_states WHERE id = ?"), (state_id,))
            return cur.fetchone()[0]
        finally:
            self.commit()

    # -- W5 --------------------------------------------------------------------------------
    LIST_SQL = (
        "SELECT s.session_id, x.name, x.user_id, s.mode, s.status, s.current_phase, "
        "s.current_step, s.updated_at, s.id, s.version "
        "FROM session_states s JOIN sessions x ON s.session_id = x.id "
        "WHERE NOT EXISTS (SELECT 1 FROM session_states n WHERE n.session_id = s.session_id "
        "AND n.updated_at > s.updated_at) AND s.status = ? "
        "ORDER BY s.updated_at DESC LIMIT ?")
    LIST_KEYS = ("session_id", "name", "user_id", "mode", "status", "current_phase",
                 "current_step", "updated_at", "state_id", "version")

    def list_sessions(self, status, limit):
        cur = self.conn.cursor()
        cur.execute(self.sql(self.LIST_SQL), (status, limit))
        rows = []
        for row in cur.fetchall():
            item = dict(zip(self.LIST_KEYS, row))
            item["updated_at"] = self.read_ts(item["updated_at"])
            rows.append(item)
        return rows

    # -- W6 --------------------------------------------------------------------------------
    PURGE_SQL = (
        "DELETE FROM sessions WHERE id IN (SELECT session_id FROM session_states "
        "WHERE status IN ('completed', 'expired') AND updated_at < ?) "
        "AND id NOT IN (SELECT session_id FROM session_states "
        "WHERE status NOT IN ('completed', 'expired') OR updated_at >= ? "
        "OR updated_at IS NULL)")

    def purge(self, before):
        cur = self.conn.cursor()
        self.begin()
        cur.execute(self.sql(self.PURGE_SQL), (self.ts(before), self.ts(before)))
        count = cur.rowcount
        self.commit()
        return count

    # -- W7 --------------------------------------------------------------------------------
    def bump_context(self, state_id, expected_version, context):
        """The version-checked write; False when another writer got there first."""
        cur = self.conn.cursor()
        cur.execute(self.sql("UPDATE session_states SET context_variables = ?, updated_at = ?, "
                             "version = version + 1 WHERE id = ? AND version = ?"),
                    (self.json_param(json.dumps(context)), self.ts(dt.datetime.now(UTC)),
                     state_id, expected_version))
        return cur.rowcount == 1


class SqliteBaseline(Baseline):
    family = "sqlite"
    # UPDATE ... RETURNING came with SQLite 3.35; before it, W4 falls back to UPDATE + SELECT.
    HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35)
    APPEND_SQL = ("UPDATE session_states SET conversation_history = json_insert(COALESCE("
                  "conversation_history, json('[]')), '$[#]', json(?)), updated_at = ?, "
                  "version = version + 1 WHERE id = ?")

    def connect(self, url):
        path = url[len("sqlite:///"):]
        conn = sqlite3.connect(path, timeout=10, isolation_level=None,
                               check_same_thread=False)
        # The settings sessionstate applies to its own connections (WAL is on the file already).
        conn.execute("PRAGMA foreign_keys = 1")
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA synchronous = normal")
        return conn

    def ts(self, value):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")

    def read_ts(self, value):
        return None if value is None else dt.datetime.fromisoformat(value)

    def begin(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def append_message(self, state_id, message):
        params = (json.dumps(message), self.ts(dt.datetime.now(UTC)), state_id)
        if not self.HAS_RETURNING:
            return self.update_then_select(self.APPEND_SQL, params, state_id)
        cur = self.conn.execute(self.APPEND_SQL + " RETURNING version", params)
        row = cur.fetchone()
        cur.close()  # ends the statement, so the autocommit write commits now
        if row is None:
            raise LookupError(state_id)
        return row[0]


class PostgresBaseline(Baseline):
    family = "postgresql"
    param = "%s"

    def connect(self, url):
        import psycopg

        return psycopg.connect(url, autocommit=True)

    def json_param(self, text):
        from psycopg.types.json import Jsonb

        # Already-serialised text, sent as jsonb without a second dumps.
        return Jsonb(text, dumps=lambda already: already)

    def read_json(self, value):
        return value  # psycopg has decoded jsonb already

    def read_ts(self, value):
        return None if value is None else value.astimezone(UTC)

    def append_message(self, state_id, message):
        cur = self.conn.cursor()
        cur.execute("UPDATE session_states SET conversation_history = COALESCE("
                    "conversation_history, '[]'::jsonb) || %s, updated_at = %s, "
                    "version = version + 1 WHERE id = %s RETURNING version",
                    (self.json_param(json.dumps([message])), dt.datetime.now(UTC), state_id))
        row = cur.fetchone()
        if row is None:
            raise LookupError(state_id)
        return row[0]


class MysqlBaseline(Baseline):
    family = "mysql"
    param = "%s"
    ANALYZE_SQL = "ANALYZE TABLE sessions, session_states"

    def connect(self, url):
        import pymysql

        parts = urllib.parse.urlsplit(url)
        return pymysql.connect(host=parts.hostname, port=parts.port or 3306,
                               user=urllib.parse.unquote(parts.username or "root"),
                               password=urllib.parse.unquote(parts.password or ""),
                               database=parts.path.lstrip("/"), autocommit=True,
                               init_command="SET time_zone = '+00:00'")

    def begin(self):
        self.conn.begin()

    def commit(self):
        self.conn.commit()

    def ts(self, value):
        return value.astimezone(UTC).replace(tzinfo=None)

    def read_ts(self, value):
        return None if value is None else value.replace(tzinfo=UTC)

    def append_message(self, state_id, message):
        # Neither MariaDB (which has DELETE/INSERT ... RETURNING) nor MySQL has
        # UPDATE ... RETURNING: the version is read back in the same transaction.
        return self.update_then_select(
            "UPDATE session_states SET conversation_history = JSON_MERGE_PRESERVE("
            "COALESCE(conversation_history, JSON_ARRAY()), ?), updated_at = ?, "
            "version = version + 1 WHERE id = ?",
            (json.dumps([message]), self.ts(dt.datetime.now(UTC)), state_id), state_id)


CLASSES = {"sqlite": SqliteBaseline, "postgresql": PostgresBaseline, "mysql": MysqlBaseline}


def open_baseline(family, url):
    return CLASSES[family](url)
