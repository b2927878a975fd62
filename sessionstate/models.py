"""The two tables, as peewee models: ``sessions`` and ``session_states``.

The models are declared without a database and bound late by ``sessionstate.connect()``,
so importing the package never opens a file or a socket. The schema itself is created by the
migrations (which keep their own frozen copies); these classes only describe it for queries.
"""

import datetime as dt
import json
import uuid

import peewee as pw

from . import backends, jsoncodec
from .errors import SessionNotFound
from .validation import (check_id, check_json, check_optional_text, check_state_values,
                         check_status, check_timestamp)

UTC = dt.timezone.utc


def utcnow():
    """The current time as an aware UTC datetime, whatever the process's local zone."""
    return dt.datetime.now(UTC)


def new_id():
    return str(uuid.uuid4())


class UTCDateTimeField(pw.FieldDatabaseHook, pw.Field):
    """TIMESTAMP WITH TIME ZONE on every backend: always written and read back as aware UTC.

    peewee's DateTimeField hands back naive datetimes on SQLite and MariaDB and keeps whatever
    zone PostgreSQL's session uses; this field normalises both directions (see backends).
    """

    field_type = "TIMESTAMPTZ"

    def _db_hook(self, database):
        self._database = database

    def db_value(self, value):
        if value is None or isinstance(value, pw.Node):
            return value
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return backends.write_timestamp(self._database, value)

    def python_value(self, value):
        return backends.read_timestamp(value)


class LazyDatabase(pw.DatabaseProxy):
    """Where the models point before connect(): the first query connects to the default.

    So that a script may use the models straight away, as the specification's test does;
    connect() then binds the models to the real database (and initializes this proxy).
    """

    def __getattr__(self, attr):
        if self.obj is None and not attr.startswith("__"):
            from .db import connect

            connect()
        return super().__getattr__(attr)


database_proxy = LazyDatabase()


def bound_database(model):
    """The real database a model class is bound to, connecting to the default if none yet."""
    database = model._meta.database
    if isinstance(database, pw.Proxy):
        from .db import get_database

        return get_database()
    return database


class JSONField(pw.JSONField):
    """peewee's JSONField with sessionstate's codec (jsoncodec: orjson, same values as json).

    On SQLite peewee sends every value as json(?), which makes SQLite parse the whole text
    again only to check it and strip its spaces: the codec's text is valid JSON already, so
    it goes in as it is (one parse less of up to megabytes per save). Read back, the value is
    the same either way. On SQLite and MariaDB the value is thus a plain text parameter, which
    lets compiled statements (statements.py) take it. MariaDB/MySQL keep JSON text as written, and their JSON functions
    (the in-database append) write it in json.dumps' format: there the stdlib writes, so that
    every row's text keeps that one format.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dumps", jsoncodec.dumps)
        kwargs.setdefault("loads", jsoncodec.loads)
        self._as_text = False
        super().__init__(**kwargs)
        self._codec_dumps = self._dumps

    def _db_hook(self, database):
        mysql = isinstance(database, pw.MySQLDatabase)
        self._dumps = json.dumps if mysql and self._codec_dumps is jsoncodec.dumps \
            else self._codec_dumps
        if isinstance(database, pw.PostgresqlDatabase) and self._codec_dumps is jsoncodec.dumps:
            self._dumps = jsoncodec.dumps_for_postgresql  # keeps 1e+16 a float in jsonb
        super()._db_hook(database)
        # MariaDB: peewee's value there is the bare text parameter too (no CAST, no function).
        self._as_text = isinstance(database, pw.SqliteDatabase) or (
            mysql and getattr(database, "mariadb", False))

    def db_value(self, value):
        if self._as_text and value is not None and not isinstance(value, pw.Node):
            return self._dumps(value)
        return super().db_value(value)


def _check_schema_of(model):
    from .migrate import ensure_migrated

    ensure_migrated(bound_database(model))


class BaseModel(pw.Model):
    """Knows whether its row exists, so that save() of a new instance always INSERTs.

    peewee treats an instance whose (non-integer) primary key is set as already stored, and
    its save() would run an UPDATE that matches nothing and silently write nothing.
    """

    def __init__(self, *args, **kwargs):
        loaded_from_database = bool(kwargs.get("__no_default__"))
        super().__init__(*args, **kwargs)
        self._stored = loaded_from_database

    def _check_schema(self):
        _check_schema_of(type(self))

    # Queries made straight on the models check the schema first, so that a database that is
    # not migrated answers SchemaNotReady, not the driver's "no such table" (one attribute
    # lookup per query once the database is known to be at the head).
    @classmethod
    def select(cls, *fields):
        _check_schema_of(cls)
        return super().select(*fields)

    @classmethod
    def update(cls, __data=None, **update):
        _check_schema_of(cls)
        return super().update(__data, **update)

    @classmethod
    def delete(cls):
        _check_schema_of(cls)
        return super().delete()

    @classmethod
    def insert(cls, __data=None, **insert):
        _check_schema_of(cls)
        return super().insert(__data, **insert)

    def save(self, force_insert=False, only=None):
        self._check_schema()
        if not self._stored:
            force_insert = True
        rows = None
        if force_insert and only is None:
            rows = self._insert_compiled()
        if rows is None:
            rows = super().save(force_insert=force_insert, only=only)
        self._stored = True
        return rows

    def _insert_compiled(self):
        """peewee's INSERT of save(), compiled once per database and set of fields.

        None (nothing done) where peewee's own path is needed: no primary key value yet, or a
        value that converts to an SQL expression rather than a parameter.
        """
        from .statements import compiled, param, plain

        meta = self._meta
        if self._pk is None:
            return None
        field_dict = self.__data__.copy()
        self._populate_unsaved_relations(field_dict)
        names = tuple(sorted(field_dict))
        values = {name: meta.fields[name].db_value(field_dict[name]) for name in names}
        if not plain(values.values()):
            return None
        model = type(self)
        statement = compiled(bound_database(model), ("insert", model) + names,
                             lambda: model.insert({meta.fields[name]: param(name)
                                                   for name in names}))
        statement.execute(values)
        self._dirty -= set(field_dict)
        return 1

    class Meta:
        database = database_proxy
        legacy_table_names = False


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
        check_id("id", self.id)
        check_optional_text("name", self.name)
        check_optional_text("user_id", self.user_id)
        check_status(self.status)
        check_json("meta", self.meta, backends.json_max_depth(bound_database(Session)))
        self.created_at = check_timestamp("created_at", self.created_at)
        self.last_active_at = check_timestamp("last_active_at", self.last_active_at)
        return super().save(force_insert=force_insert, only=only)


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

    # Optimistic locking: every write goes through the version-bump update.
    version = pw.IntegerField(default=1)

    class Meta:
        table_name = "session_states"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self._stored and "updated_at" not in kwargs:
            self.updated_at = self.created_at  # one instant, not two calls of utcnow()

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
        unknown = sorted(set(kwargs) - set(cls.FACTORY_ARGUMENTS))
        if unknown:
            from .errors import InvalidStateData

            raise InvalidStateData(
                "create_for_session: unknown argument(s) %s; allowed: %s"
                % (", ".join(unknown), ", ".join(cls.FACTORY_ARGUMENTS))
            )
        return cls(
            session_id=session_id,
            mode=mode,
            conversation_history=kwargs.get("conversation_history", []),
            context_variables=kwargs.get("context_variables", {}),
            plan_data=kwargs.get("plan_data"),
            current_phase=kwargs.get("current_phase", "init"),
            current_step=kwargs.get("current_step"),
            expires_at=kwargs.get("expires_at"),
            status="active",
        )

    def save(self, force_insert=False, only=None):
        """Insert a new state; for a stored one, a version-checked update of what changed.

        A plain UPDATE here would overwrite a concurrent writer's change without noticing, so
        an existing row goes through the version-bump update (StaleStateError on conflict).
        """
        if self._stored and not force_insert:
            from .state import save_changes

            return save_changes(self)
        # __data__ holds the raw session id, where self.session would load the Session row.
        checked = check_state_values(dict(self.__data__),
                                     backends.json_max_depth(bound_database(SessionState)))
        for name in ("created_at", "updated_at", "expires_at"):
            if name in checked:
                setattr(self, name, checked[name])
        try:
            return super().save(force_insert=force_insert, only=only)
        except pw.IntegrityError as exc:
            # Every backend names the foreign key in its message; no query needed (on
            # PostgreSQL none could run now, inside a transaction the error has aborted).
            if "foreign key" in str(exc).lower():
                raise SessionNotFound("no session with id %r for this state"
                                      % (self.session_id,)) from exc
            raise


def _iso(value):
    return value.isoformat() if value is not None else None


MODELS = (Session, SessionState)
