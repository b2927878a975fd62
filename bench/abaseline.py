"""The async baseline: the same hand-written SQL as bench/baseline.py, on the bare async driver.

aiosqlite (SQLite), asyncpg (PostgreSQL) or aiomysql (MariaDB/MySQL), each on one connection
of its own, opened once per workload inside the running loop; stdlib json for serialisation
and no validation, as the sync baseline. Every coroutine mirrors one method of the sync
baseline: the same statements, parameters and results (asyncpg's SQL differs only in its
`$n` placeholders and `::jsonb` casts), on the same schema. What sessionstate.aio adds on top
(the greenlet bridge, the pool, validation, peewee) is what the A-workloads measure.
"""

import datetime as dt
import json
import urllib.parse
import uuid

from .baseline import STATE_COLUMNS, SqliteBaseline

UTC = dt.timezone.utc

INSERT_SESSION = ("INSERT INTO sessions (id, name, user_id, status, meta, created_at, "
                  "last_active_at) VALUES (?, ?, ?, 'active', ?, ?, ?)")
INSERT_STATE = ("INSERT INTO session_states (id, session_id, mode, conversation_history, "
                "context_variables, plan_data, current_phase, current_step, status, created_at, "
                "updated_at, expires_at, version) "
                "VALUES (?, ?, ?, ?, ?, NULL, 'init', NULL, 'active', ?, ?, NULL, 1)")
SAVE_STATE = ("UPDATE session_states SET conversation_history = ?, context_variables = ?, "
              "plan_data = ?, current_phase = ?, current_step = ?, updated_at = ?, "
              "version = version + 1 WHERE id = ? AND version = ?")
GET_STATE = ("SELECT %s FROM session_states WHERE session_id = ? "
             "ORDER BY updated_at DESC, created_at DESC LIMIT 1" % STATE_COLUMNS)
BUMP_CONTEXT = ("UPDATE session_states SET context_variables = ?, updated_at = ?, "
                "version = version + 1 WHERE id = ? AND version = ?")
SET_HISTORY = "UPDATE session_states SET conversation_history = ? WHERE id = ?"


def _state_dict(row, read_json, read_ts):
    return {
        "id": row[0], "session_id": row[1], "mode": row[2],
        "conversation_history": read_json(row[3]),
        "context_variables": read_json(row[4]),
        "plan_data": read_json(row[5]),
        "current_phase": row[6], "current_step": row[7], "status": row[8],
        "created_at": read_ts(row[9]), "updated_at": read_ts(row[10]),
        "expires_at": read_ts(row[11]), "version": row[12],
    }


def _read_json(value):
    return None if value is None else json.loads(value)


class AsyncBaseline:
    """The coroutines every backend answers; `await open_async_baseline(family, url)`."""

    family = None
    # One connection is not for concurrent use by several tasks on the servers' drivers;
    # A7 then opens one per task (SQLite's aiosqlite queues every call on its own thread,
    # so its tasks share the one connection).
    shareable = False
    SAVE_STATE = SAVE_STATE  # save_state's statement, in the backend's placeholders

    def __init__(self, url):
        self.url = url
        self.conn = None

    async def open(self):
        raise NotImplementedError

    async def close(self):
        raise NotImplementedError

    async def save_state(self, state_id, expected_version, history, context, plan, phase, step):
        """The version-checked UPDATE through the backend's _execute (its row count)."""
        count = await self._execute(self.SAVE_STATE, (
            json.dumps(history), json.dumps(context), json.dumps(plan), phase, step,
            self.ts(dt.datetime.now(UTC)), state_id, expected_version))
        if count != 1:
            raise RuntimeError("stale or missing state %s" % state_id)
        return expected_version + 1


class AsyncSqliteBaseline(AsyncBaseline):
    """aiosqlite on one connection. Each statement is one hop to aiosqlite's thread: writes are
    executed and their rowcount read (the statement has finished; its cursor is dropped),
    reads go through execute_fetchall (execute and fetch in one hop)."""

    family = "sqlite"
    shareable = True
    HAS_RETURNING = SqliteBaseline.HAS_RETURNING
    APPEND_SQL = SqliteBaseline.APPEND_SQL

    async def open(self):
        import aiosqlite

        path = self.url[len("sqlite:///"):]
        self.conn = await aiosqlite.connect(path, timeout=10, isolation_level=None)
        # The settings sessionstate applies to its own connections (WAL is on the file already).
        await self.conn.execute("PRAGMA foreign_keys = 1")
        await self.conn.execute("PRAGMA busy_timeout = 10000")
        await self.conn.execute("PRAGMA synchronous = normal")
        return self

    async def close(self):
        await self.conn.close()

    @staticmethod
    def ts(value):
        return SqliteBaseline.ts(None, value)  # the sync baseline's text form

    @staticmethod
    def read_ts(value):
        return None if value is None else dt.datetime.fromisoformat(value)

    async def _execute(self, sql, params):
        """A statement without rows: its rowcount."""
        return (await self.conn.execute(sql, params)).rowcount

    async def set_history(self, state_id, history):
        await self._execute(SET_HISTORY, (json.dumps(history), state_id))

    async def create_session(self, mode, name, user_id, meta, history, context):
        now = self.ts(dt.datetime.now(UTC))
        session_id, state_id = str(uuid.uuid4()), str(uuid.uuid4())
        await self.conn.execute("BEGIN IMMEDIATE")
        await self._execute(INSERT_SESSION, (session_id, name, user_id, json.dumps(meta), now,
                                             now))
        await self._execute(INSERT_STATE, (state_id, session_id, mode, json.dumps(history),
                                           json.dumps(context), now, now))
        await self.conn.execute("COMMIT")
        return session_id, state_id

    async def get_state(self, session_id):
        rows = await self.conn.execute_fetchall(GET_STATE, (session_id,))
        if not rows:
            raise LookupError(session_id)
        return _state_dict(rows[0], _read_json, self.read_ts)

    async def append_message(self, state_id, message):
        params = (json.dumps(message), self.ts(dt.datetime.now(UTC)), state_id)
        if not self.HAS_RETURNING:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                if await self._execute(self.APPEND_SQL, params) != 1:
                    raise LookupError(state_id)
                rows = await self.conn.execute_fetchall(
                    "SELECT version FROM session_states WHERE id = ?", (state_id,))
                return rows[0][0]
            finally:
                await self.conn.execute("COMMIT")
        # Fetching every row ends the statement, so the autocommit write commits now.
        rows = await self.conn.execute_fetchall(self.APPEND_SQL + " RETURNING version", params)
        if not rows:
            raise LookupError(state_id)
        return rows[0][0]

    async def bump_context(self, state_id, expected_version, context):
        count = await self._execute(BUMP_CONTEXT, (
            json.dumps(context), self.ts(dt.datetime.now(UTC)), state_id, expected_version))
        return count == 1


def _dollars(sql):
    """`?` placeholders as asyncpg's $1, $2, ... (no `?` occurs in these statements' text)."""
    pieces = sql.split("?")
    out = [pieces[0]]
    for number, piece in enumerate(pieces[1:], 1):
        out.append("$%d" % number)
        out.append(piece)
    return "".join(out)


def _cast(sql, plain, cast):
    """`sql` with the placeholders in `plain` cast as in `cast` (which must be there once)."""
    assert sql.count(plain) == 1, (plain, sql)
    return sql.replace(plain, cast)


def _status_count(status):
    """The row count at the end of asyncpg's command status, e.g. "UPDATE 1"."""
    return int(status.rsplit(" ", 1)[-1])


class AsyncPostgresBaseline(AsyncBaseline):
    """asyncpg without a JSON codec: jsonb goes in as text (cast with ::jsonb) and comes back
    as text, decoded with json.loads; timestamptz takes and gives aware datetimes. Its
    statements go through asyncpg's own prepared-statement cache, as any asyncpg code's do."""

    family = "postgresql"
    INSERT_SESSION = _dollars(_cast(INSERT_SESSION, "'active', ?", "'active', ?::jsonb"))
    INSERT_STATE = _dollars(_cast(INSERT_STATE, "?, ?, ?, ?, ?, NULL",
                                  "?, ?, ?, ?::jsonb, ?::jsonb, NULL"))
    SAVE_STATE = _dollars(_cast(SAVE_STATE,
                                "conversation_history = ?, context_variables = ?, plan_data = ?",
                                "conversation_history = ?::jsonb, context_variables = ?::jsonb, "
                                "plan_data = ?::jsonb"))
    GET_STATE = _dollars(GET_STATE)
    BUMP_CONTEXT = _dollars(_cast(BUMP_CONTEXT, "context_variables = ?",
                                  "context_variables = ?::jsonb"))
    SET_HISTORY = _dollars(_cast(SET_HISTORY, "= ? WHERE", "= ?::jsonb WHERE"))
    APPEND_SQL = ("UPDATE session_states SET conversation_history = COALESCE("
                  "conversation_history, '[]'::jsonb) || $1::jsonb, updated_at = $2, "
                  "version = version + 1 WHERE id = $3 RETURNING version")

    async def open(self):
        import asyncpg

        self.conn = await asyncpg.connect(self.url)
        return self

    async def close(self):
        await self.conn.close()

    @staticmethod
    def read_ts(value):
        return None if value is None else value.astimezone(UTC)

    async def set_history(self, state_id, history):
        await self.conn.execute(self.SET_HISTORY, json.dumps(history), state_id)

    async def create_session(self, mode, name, user_id, meta, history, context):
        now = dt.datetime.now(UTC)
        session_id, state_id = str(uuid.uuid4()), str(uuid.uuid4())
        async with self.conn.transaction():
            await self.conn.execute(self.INSERT_SESSION, session_id, name, user_id,
                                    json.dumps(meta), now, now)
            await self.conn.execute(self.INSERT_STATE, state_id, session_id, mode,
                                    json.dumps(history), json.dumps(context), now, now)
        return session_id, state_id

    async def save_state(self, state_id, expected_version, history, context, plan, phase, step):
        status = await self.conn.execute(
            self.SAVE_STATE, json.dumps(history), json.dumps(context), json.dumps(plan), phase,
            step, dt.datetime.now(UTC), state_id, expected_version)
        if _status_count(status) != 1:
            raise RuntimeError("stale or missing state %s" % state_id)
        return expected_version + 1

    async def get_state(self, session_id):
        row = await self.conn.fetchrow(self.GET_STATE, session_id)
        if row is None:
            raise LookupError(session_id)
        return _state_dict(row, _read_json, self.read_ts)

    async def append_message(self, state_id, message):
        version = await self.conn.fetchval(self.APPEND_SQL, json.dumps([message]),
                                           dt.datetime.now(UTC), state_id)
        if version is None:
            raise LookupError(state_id)
        return version

    async def bump_context(self, state_id, expected_version, context):
        status = await self.conn.execute(self.BUMP_CONTEXT, json.dumps(context),
                                         dt.datetime.now(UTC), state_id, expected_version)
        return _status_count(status) == 1


class AsyncMysqlBaseline(AsyncBaseline):
    """aiomysql in autocommit, the session's time zone UTC (DATETIME(6) holds naive UTC)."""

    family = "mysql"
    INSERT_SESSION = INSERT_SESSION.replace("?", "%s")
    INSERT_STATE = INSERT_STATE.replace("?", "%s")
    SAVE_STATE = SAVE_STATE.replace("?", "%s")
    GET_STATE = GET_STATE.replace("?", "%s")
    BUMP_CONTEXT = BUMP_CONTEXT.replace("?", "%s")
    SET_HISTORY = SET_HISTORY.replace("?", "%s")
    # Neither MariaDB nor MySQL has UPDATE ... RETURNING: the version is read back in the same
    # transaction, as the sync baseline does.
    APPEND_SQL = ("UPDATE session_states SET conversation_history = JSON_MERGE_PRESERVE("
                  "COALESCE(conversation_history, JSON_ARRAY()), %s), updated_at = %s, "
                  "version = version + 1 WHERE id = %s")

    async def open(self):
        import aiomysql

        parts = urllib.parse.urlsplit(self.url)
        self.conn = await aiomysql.connect(
            host=parts.hostname, port=parts.port or 3306,
            user=urllib.parse.unquote(parts.username or "root"),
            password=urllib.parse.unquote(parts.password or ""),
            db=parts.path.lstrip("/"), autocommit=True,
            init_command="SET time_zone = '+00:00'")
        return self

    async def close(self):
        await self.conn.ensure_closed()

    @staticmethod
    def ts(value):
        return value.astimezone(UTC).replace(tzinfo=None)

    @staticmethod
    def read_ts(value):
        return None if value is None else value.replace(tzinfo=UTC)

    async def _execute(self, sql, params):
        async with self.conn.cursor() as cursor:
            await cursor.execute(sql, params)
            return cursor.rowcount

    async def set_history(self, state_id, history):
        await self._execute(self.SET_HISTORY, (json.dumps(history), state_id))

    async def create_session(self, mode, name, user_id, meta, history, context):
        now = self.ts(dt.datetime.now(UTC))
        session_id, state_id = str(uuid.uuid4()), str(uuid.uuid4())
        await self.conn.begin()
        async with self.conn.cursor() as cursor:
            await cursor.execute(self.INSERT_SESSION, (session_id, name, user_id,
                                                       json.dumps(meta), now, now))
            await cursor.execute(self.INSERT_STATE, (state_id, session_id, mode,
                                                     json.dumps(history), json.dumps(context),
                                                     now, now))
        await self.conn.commit()
        return session_id, state_id

    async def get_state(self, session_id):
        async with self.conn.cursor() as cursor:
            await cursor.execute(self.GET_STATE, (session_id,))
            row = await cursor.fetchone()
        if row is None:
            raise LookupError(session_id)
        return _state_dict(row, _read_json, self.read_ts)

    async def append_message(self, state_id, message):
        await self.conn.begin()
        try:
            async with self.conn.cursor() as cursor:
                await cursor.execute(self.APPEND_SQL, (json.dumps([message]),
                                                       self.ts(dt.datetime.now(UTC)), state_id))
                if cursor.rowcount != 1:
                    raise LookupError(state_id)
                await cursor.execute("SELECT version FROM session_states WHERE id = %s",
                                     (state_id,))
                return (await cursor.fetchone())[0]
        finally:
            await self.conn.commit()

    async def bump_context(self, state_id, expected_version, context):
        count = await self._execute(self.BUMP_CONTEXT, (
            json.dumps(context), self.ts(dt.datetime.now(UTC)), state_id, expected_version))
        return count == 1


CLASSES = {"sqlite": AsyncSqliteBaseline, "postgresql": AsyncPostgresBaseline,
           "mysql": AsyncMysqlBaseline}


async def open_async_baseline(family, url):
    """A connected async baseline for `url`; call inside the running loop, close() after."""
    return await CLASSES[family](url).open()
