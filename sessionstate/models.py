"""The two tables, as peewee models: ``sessions`` and ``session_states``.

Declarations on a DatabaseProxy, which ``sessionstate.connect()`` points at a database: the
models never connect or check the schema themselves (the migrations create the schema and
keep their own frozen copies). What does live here, as in peewee's "optimistic locking"
recipe, is the write of a stored state: the version-bump UPDATE, which is also what
``update_state`` runs.
"""

import contextvars
import datetime as dt
import functools
import os

import peewee as pw

from . import dialects, execution
from .errors import AlreadyExists, InvalidStateData, InvalidTransition, SessionNotFound
from .errors import StaleStateError
from .statements import Step, compiled, param
from .validation import (STATUSES, check_session_values, check_state_values,
                         check_transition, refuse)

UTC = dt.timezone.utc

# The database of the async call running in this context (sessionstate.aio), if any.
_ACTIVE = contextvars.ContextVar("sessionstate_active_database", default=None)


class RoutingProxy(pw.DatabaseProxy):
    """A DatabaseProxy whose target is the current async call's database, else connect()'s.

    So sync and async callers share one process: an aio call routes the models to its async
    database for its own context only (see call_with), everyone else keeps the sync one.
    """

    __slots__ = ("default",)

    @property
    def obj(self):
        active = _ACTIVE.get()
        return self.default if active is None else active

    @obj.setter
    def obj(self, database):  # DatabaseProxy.initialize() sets the default
        object.__setattr__(self, "default", database)

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)

    # DatabaseProxy wraps itself in peewee's sync transactions; an async database has its own.
    def atomic(self, *args, **kwargs):
        return self.obj.atomic(*args, **kwargs)

    def transaction(self, *args, **kwargs):
        return self.obj.transaction(*args, **kwargs)

    def savepoint(self):
        return self.obj.savepoint()

    def connection_context(self):
        return self.obj.connection_context()


database_proxy = RoutingProxy()


def call_with(database, fn, *args, **kwargs):
    """fn(*args, **kwargs) with the models routed to `database` in this context alone."""
    token = _ACTIVE.set(database)
    try:
        return fn(*args, **kwargs)
    finally:
        _ACTIVE.reset(token)


def utcnow():
    """The current time as an aware UTC datetime, whatever the process's local zone."""
    return dt.datetime.now(UTC)


def new_id():
    """A new random id: the text of a version-4 UUID, as str(uuid.uuid4()) gives, built
    without the UUID object (whose checks cost twice the rest of it, and a create makes two)."""
    data = bytearray(os.urandom(16))
    data[6] = data[6] & 0x0F | 0x40  # version 4
    data[8] = data[8] & 0x3F | 0x80  # the RFC 4122 variant
    text = data.hex()
    return "%s-%s-%s-%s-%s" % (text[:8], text[8:12], text[12:16], text[16:20], text[20:])


def read_timestamp(value):
    """A timezone-aware UTC datetime from what any backend returns."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        # SQLite's text and MariaDB's DATETIME carry no zone: we always store UTC there.
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTimeField(pw.Field):
    """TIMESTAMP WITH TIME ZONE on every backend: always written and read back as aware UTC.

    peewee's DateTimeField hands back naive datetimes on SQLite and MariaDB and keeps whatever
    zone PostgreSQL's session uses; this field normalises both directions.
    """

    field_type = "TIMESTAMPTZ"

    def db_value(self, value):
        if value is None or isinstance(value, pw.Node):
            return value
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return dialects.of(self.model._meta.database).timestamp_param(value)

    def python_value(self, value):
        return read_timestamp(value)


class JSONField(pw.Field):
    """A JSON column, encoded and decoded as its backend's dialect says (orjson where it can)."""

    field_type = "JSON"

    def db_value(self, value):
        if value is None or isinstance(value, pw.Node):
            return value
        return dialects.of(self.model._meta.database).json_param(value)

    def python_value(self, value):
        if value is None:
            return None
        return dialects.of(self.model._meta.database).json_value(value)


def _is_loaded(kwargs):
    """True when peewee builds the instance from a row it read.

    peewee's row wrappers construct loaded instances with __no_default__ (peewee 3 and 4);
    tests/test_stage_1.py fails loudly if a loaded instance stops being recognised.
    """
    return bool(kwargs.get("__no_default__"))


class BaseModel(pw.Model):
    """Knows whether its row exists, so that save() of a new instance always INSERTs.

    peewee treats an instance whose (non-integer) primary key is set as already stored, and
    its save() would run an UPDATE that matches nothing and silently write nothing.
    """

    def __init__(self, *args, **kwargs):
        loaded = _is_loaded(kwargs)
        super().__init__(*args, **kwargs)
        self.stored = loaded

    def column_values(self):
        """{column name: value} of every field, as the instance holds them."""
        return {field.column_name: getattr(self, field.object_id_name
                                           if isinstance(field, pw.ForeignKeyField)
                                           else field.name)
                for field in self._meta.sorted_fields}

    def insert_row(self, values):
        """INSERT this new instance's checked `values`; AlreadyExists if the id is taken."""
        model = type(self)
        execution.write(model._meta.database.obj, lambda: insert(model, values))
        self.stored = True
        return 1

    class Meta:
        database = database_proxy
        legacy_table_names = False


def insert(model, values):
    """The INSERT of one row of `model` (every column), compiled once per database.

    The caller's transaction decides; an id or foreign key conflict raises AlreadyExists or
    SessionNotFound, other database errors go up untranslated (execution translates them).
    """
    insert_step(model, values).run(model._meta.database.obj)


def insert_step(model, values):
    """insert() as a statements.Step: the row's values converted and bound, nothing run."""
    fields = model._meta.sorted_fields
    statement = compiled(model._meta.database.obj, ("insert", model),
                         lambda: model.insert({field: param(field.column_name)
                                               for field in fields}))
    return Step(statement, {field.column_name: field.db_value(values[field.column_name])
                            for field in fields},
                functools.partial(_integrity_error, model, values))


def _integrity_error(model, values, exc):
    # Every backend names the foreign key in its message; no query needed (on PostgreSQL
    # none could run now, inside a transaction the error has aborted).
    if "foreign key" in str(exc).lower() and "session_id" in values:
        return SessionNotFound("no session with id %r for this state" % (values["session_id"],))
    return AlreadyExists("%s %r already exists (%s)" % (
        model._meta.table_name, values.get("id"), " ".join(str(exc).split())))


class Session(BaseModel):
    """A conversation or workflow; its resumable state lives in ``session_states``."""

    id = pw.CharField(max_length=36, primary_key=True, default=new_id)
    name = pw.CharField(max_length=255, null=True)
    user_id = pw.CharField(max_length=255, null=True)  # indexed: idx_sessions_user_id
    status = pw.CharField(max_length=20, default="active")
    meta = JSONField(null=True)
    created_at = UTCDateTimeField(default=utcnow)
    last_active_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "sessions"

    def save(self, force_insert=False, only=None):
        """INSERT a new session, UPDATE a stored one; every value is checked first."""
        database = self._meta.database.obj
        values = check_session_values(self.column_values(),
                                      dialects.of(database).json_max_depth)
        self.created_at, self.last_active_at = values["created_at"], values["last_active_at"]
        if not self.stored or force_insert:
            return self.insert_row(values)
        return execution.write(database, lambda: super(Session, self).save(only=only))


class SessionState(BaseModel):
    """Persistent session state for resumable workflows (the specification's table)."""

    id = pw.CharField(max_length=36, primary_key=True, default=new_id)
    session = pw.ForeignKeyField(
        Session,
        backref="session_states",
        column_name="session_id",
        on_delete="CASCADE",
        constraint_name="fk_session_states_session_id",
        index=False,  # the migration creates idx_session_states_session_id itself
    )
    mode = pw.CharField(max_length=50)  # copilot, planning-control, hitl-interactive

    # Serialized state (JSON)
    conversation_history = JSONField(null=True)  # list of message dicts
    context_variables = JSONField(null=True)  # key-value context
    plan_data = JSONField(null=True)  # plan structure if applicable

    # Progress tracking
    current_phase = pw.CharField(max_length=50, null=True)
    current_step = pw.IntegerField(null=True)

    # Lifecycle
    status = pw.CharField(max_length=20, default="active")
    created_at = UTCDateTimeField(null=True, default=utcnow)
    updated_at = UTCDateTimeField(null=True, default=utcnow)
    expires_at = UTCDateTimeField(null=True)

    # Optimistic locking: every write of a stored state goes through bump().
    version = pw.IntegerField(default=1)

    class Meta:
        table_name = "session_states"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.stored and "updated_at" not in kwargs:
            self.updated_at = self.created_at  # one instant, not two calls of utcnow()
        self.remember_stored()

    def remember_stored(self):
        """Note the stored values save() compares with: what a save may not change, and status."""
        data = self.__data__
        self.stored_values = ({name: data.get(key) for name, key in _FIXED_KEYS}
                              if self.stored else {})

    @classmethod
    def from_row(cls, values):
        """A stored state holding `values` (field name -> Python value), as peewee's row
        wrappers build one (no defaults, nothing dirty).

        The values go into the instance's __data__ (the field values by name, which peewee's
        optimistic-locking recipe reads too) in one update: a setattr per field, as peewee's
        constructor does, cost about 75k instructions, a third of get_state's own work at 10
        messages (31k this way).
        """
        state = cls(__no_default__=1)
        state.__data__.update(values)
        state.remember_stored()
        return state

    FACTORY_ARGUMENTS = ("conversation_history", "context_variables", "plan_data",
                         "current_phase", "current_step", "expires_at")

    def to_dict(self) -> dict:
        """Convert to a dictionary for API responses (timestamps as ISO 8601 with offset)."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "mode": self.mode,
            "conversation_history": self.conversation_history or [],
            "context_variables": self.context_variables or {},
            "plan_data": self.plan_data,
            "current_phase": self.current_phase,
            "current_step": self.current_step,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "expires_at": _iso(self.expires_at),
            "version": self.version,
        }

    @classmethod
    def create_for_session(cls, session_id: str, mode: str, **kwargs):
        """Factory method: a new, unsaved state for a session; save() inserts it."""
        return cls(**cls.new_columns(session_id, mode, utcnow(), **kwargs))

    @classmethod
    def new_columns(cls, session_id, mode, now, **kwargs):
        """{column: value} of a new active state of a session, created `now`; kwargs are
        create_for_session's."""
        unknown = sorted(set(kwargs) - set(cls.FACTORY_ARGUMENTS))
        if unknown:
            raise InvalidStateData(
                "create_for_session: unknown argument(s) %s; allowed: %s"
                % (", ".join(unknown), ", ".join(cls.FACTORY_ARGUMENTS))
            )
        return {
            "id": new_id(),
            "session_id": session_id,
            "mode": mode,
            "conversation_history": kwargs.get("conversation_history", []),
            "context_variables": kwargs.get("context_variables", {}),
            "plan_data": kwargs.get("plan_data"),
            "current_phase": kwargs.get("current_phase", "init"),
            "current_step": kwargs.get("current_step"),
            "status": "active",
            "created_at": now,
            "updated_at": now,
            "expires_at": kwargs.get("expires_at"),
            "version": 1,
        }

    @classmethod
    def from_columns(cls, columns):
        """The stored state of a row just written as `columns` (column name -> value)."""
        return cls.from_row({field.name: columns[field.column_name]
                             for field in cls._meta.sorted_fields})

    def save(self, force_insert=False, only=None):
        """INSERT a new state; for a stored one, the version-bump update of its data.

        A plain UPDATE here would overwrite a concurrent writer's change without noticing, so
        a stored row goes through bump() (StaleStateError on conflict); its status is written
        only when it changed, and then follows the one transition rule.
        """
        database = self._meta.database.obj
        max_depth = dialects.of(database).json_max_depth
        if self.stored and not force_insert:
            changes = {name: getattr(self, name) for name in UPDATABLE_FIELDS + FIXED_FIELDS
                       if name in DATA_FIELDS or getattr(self, name) != self.stored_values[name]}
            changes = check_changes(changes, max_depth)  # refuses a changed id, mode...
            now = utcnow()
            self.version = execution.write(
                database, lambda: bump(self.id, self.version, changes, now),
                single="status" not in changes)
            self.updated_at = now
            self.remember_stored()
            return 1
        values = check_state_values(self.column_values(), max_depth)
        for name in ("created_at", "updated_at", "expires_at"):
            setattr(self, name, values[name])
        self.insert_row(values)
        self.remember_stored()
        return 1


def _iso(value):
    return value.isoformat() if value is not None else None


# What a version-bump update may change: the state's data and progress, status and expiry.
UPDATABLE_FIELDS = ("conversation_history", "context_variables", "plan_data",
                    "current_phase", "current_step", "status", "expires_at")
# save() of a stored state always writes these (an edit made in place, such as
# state.context_variables["k"] = v, changes no attribute it could notice)...
DATA_FIELDS = tuple(name for name in UPDATABLE_FIELDS if name != "status")
# ...and refuses a change to these; status is written when it changed, by the transition rule.
FIXED_FIELDS = ("id", "session_id", "mode", "created_at", "status")
# (name, key in __data__): session_id is held under its foreign key field's name, session.
_FIXED_KEYS = tuple((name, getattr(SessionState, name).name) for name in FIXED_FIELDS)


def check_changes(changes, max_depth):
    """Refuse unknown or unstorable changes before anything is written."""
    unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
    if unknown:
        refuse(", ".join(unknown), "cannot be updated; updatable fields are: %s"
               % ", ".join(UPDATABLE_FIELDS))
    return check_state_values(changes, max_depth)


def bump(state_id, expected_version, changes, now):
    """The version-bump UPDATE of checked `changes`; returns the new version.

    One ``UPDATE ... WHERE id = ? AND version = ?`` that also sets updated_at and
    version + 1, compiled once per database and set of fields. No row matched: someone else
    wrote first (StaleStateError), the state is gone (SessionNotFound), or the status change
    is not allowed from the current status (InvalidTransition). A status change moves the
    session row too; run it inside one transaction (execution.write).
    """
    database = SessionState._meta.database.obj
    names = tuple(sorted(changes))
    target = changes.get("status")
    statement = compiled(database, ("bump", target) + names,
                         lambda: _bump_query(names, target))
    fields = SessionState._meta.fields
    values = {name: fields[name].db_value(value) for name, value in changes.items()}
    values.update(updated_at=SessionState.updated_at.db_value(now), state_id=state_id,
                  expected_version=expected_version)
    if statement.rows_affected(values) != 1:
        raise missing_or_stale(state_id, expected_version, target)
    if target is not None:
        _session_follows(state_id, target, now)
    return expected_version + 1


def _bump_query(names, target):
    values = {SessionState._meta.fields[name]: param(name) for name in names}
    values[SessionState.updated_at] = param("updated_at")
    values[SessionState.version] = SessionState.version + 1
    where = ((SessionState.id == param("state_id"))
             & (SessionState.version == param("expected_version")))
    if target is not None:  # the one transition rule, checked by the UPDATE itself
        where &= SessionState.status.in_(
            [status for status in STATUSES if check_transition(status, target)])
    return SessionState.update(values).where(where)


def _session_follows(state_id, status, now):
    """The session row takes the status of its state (in the caller's transaction)."""
    database = Session._meta.database.obj
    statement = compiled(database, "session_follows", lambda: Session.update(
        status=param("status"), last_active_at=param("now")).where(
        Session.id == SessionState.select(SessionState.session_id)
        .where(SessionState.id == param("state_id"))))
    statement.execute({"status": status, "now": Session.last_active_at.db_value(now),
                       "state_id": state_id})


def missing_or_stale(state_id, expected_version, target_status=None):
    """After an UPDATE matched no row: the error that says why."""
    database = SessionState._meta.database.obj
    statement = compiled(database, "version_and_status", lambda: SessionState.select(
        SessionState.version, SessionState.status).where(SessionState.id == param("state_id")))
    rows = statement.rows({"state_id": state_id})
    if not rows:
        return SessionNotFound("no session state with id %r" % (state_id,))
    actual, status = rows[0]
    if actual != expected_version or target_status is None:
        return StaleStateError(state_id, expected_version, actual)
    return InvalidTransition(status, target_status)


def state_columns(database):
    """Every column of session_states, in _meta.sorted_fields order, as load_state reads them."""
    dialect = dialects.of(database)
    return [dialect.json_column(field) if isinstance(field, JSONField) else field
            for field in SessionState._meta.sorted_fields]


def load_state(row):
    """A stored SessionState from a row of state_columns()."""
    dialect = dialects.of(SessionState._meta.database)
    readers = _READERS.get(dialect)
    if readers is None:
        readers = _READERS[dialect] = _row_readers(dialect)
    return SessionState.from_row({name: read(value) if value is not None else None
                                  for (name, read), value in zip(readers, row)})


_READERS = {}  # dialect -> load_state's (field name, python_value) per column


def _row_readers(dialect):
    """Each field's python_value, with `dialect` looked up once per row rather than once per
    JSON column (as JSONField.python_value does)."""
    return [(field.name, dialect.json_value if isinstance(field, JSONField)
             else read_timestamp if isinstance(field, UTCDateTimeField)
             else field.python_value)
            for field in SessionState._meta.sorted_fields]


def latest_state_query(session_id, *columns):
    """A session's current state: its most recently updated (ties: newest created, then id)."""
    return (SessionState.select(*columns)
            .where(SessionState.session_id == session_id)
            .order_by(SessionState.updated_at.desc(), SessionState.created_at.desc(),
                      SessionState.id.desc())
            # LIMIT 1 in the SQL, not a parameter: PostgreSQL then keeps one cached plan for
            # the prepared statement (asyncpg, psycopg) instead of planning every call anew
            # (with LIMIT $2 its generic plan looked dearer than a custom one: +80 µs a call).
            .limit(pw.SQL("1")))


def has_newer_state(state):
    """SQL: some other state of `state`'s session comes before it in latest_state_query's order."""
    newer = SessionState.alias("newer")
    same_time = newer.updated_at == state.updated_at
    return pw.fn.EXISTS(newer.select(pw.SQL("1")).where(
        (newer.session_id == state.session_id)
        & ((newer.updated_at > state.updated_at)
           | (same_time & (newer.created_at > state.created_at))
           | (same_time & (newer.created_at == state.created_at) & (newer.id > state.id)))))
