"""Add the ``session_states`` table: persistent session state for resumable workflows.

Mirrors the specification's Alembic revision ``001_session_states``: the same columns, types
and defaults, the foreign key to ``sessions.id`` with ON DELETE CASCADE, and the five indexes
with the specification's names. The rollback drops the five indexes, then the table.

One deliberate departure from the specification: ``status`` and ``version`` are NOT NULL
(with the defaults 'active' and 1). A NULL version can never pass the version check of the
version-bump update, and a NULL status hides a row from expiry and listings.
"""

import peewee as pw
from playhouse.migrate import SchemaMigrator

TABLE = "session_states"
FOREIGN_KEY = "fk_session_states_session_id"
INDEXES = (  # name, columns: the specification's five, in its order
    ("idx_session_states_session_id", ("session_id",)),
    ("idx_session_states_status", ("status",)),
    ("idx_session_states_session_status", ("session_id", "status")),
    ("idx_session_states_mode", ("mode",)),
    ("idx_session_states_updated", ("updated_at",)),
)


# The helpers below repeat 001's on purpose: a migration is frozen history and never imports
# another migration or the live models.


def _timestamp_type(database):
    """TIMESTAMP WITH TIME ZONE per backend; MariaDB/MySQL have none, so UTC in DATETIME(6)."""
    if isinstance(database, pw.PostgresqlDatabase):
        return "TIMESTAMPTZ"
    if isinstance(database, pw.MySQLDatabase):
        return "DATETIME(6)"
    return "TIMESTAMP"


def _now_default(database):
    """DEFAULT clause for 'now' in UTC with sub-second precision, per backend."""
    if isinstance(database, pw.PostgresqlDatabase):
        return pw.SQL("DEFAULT CURRENT_TIMESTAMP")
    if isinstance(database, pw.MySQLDatabase):
        return pw.SQL("DEFAULT (UTC_TIMESTAMP(6))")
    return pw.SQL("DEFAULT (strftime('%Y-%m-%d %H:%M:%f000+00:00', 'now'))")


def _timestamp(database, *, now_default):
    field = pw.Field(null=True, constraints=[_now_default(database)] if now_default else None)
    field.field_type = _timestamp_type(database)
    return field


def _table_settings(database):
    """MariaDB/MySQL compare text case-insensitively by default; ids and statuses must not."""
    if isinstance(database, pw.MySQLDatabase):
        return ["DEFAULT CHARSET=utf8mb4", "COLLATE=utf8mb4_bin"]
    return None


def migrate(migrator, database, fake=False):
    Session = migrator.orm["sessions"]

    @migrator.create_model
    class SessionState(pw.Model):
        id = pw.CharField(max_length=36, primary_key=True)
        session = pw.ForeignKeyField(
            Session, column_name="session_id", on_delete="CASCADE",
            constraint_name=FOREIGN_KEY, index=False,  # indexed below, by its own name
        )
        mode = pw.CharField(max_length=50)

        conversation_history = pw.JSONField(null=True)
        context_variables = pw.JSONField(null=True)
        plan_data = pw.JSONField(null=True)

        current_phase = pw.CharField(max_length=50, null=True)
        current_step = pw.IntegerField(null=True)

        status = pw.CharField(max_length=20, constraints=[pw.SQL("DEFAULT 'active'")])
        created_at = _timestamp(database, now_default=True)
        updated_at = _timestamp(database, now_default=True)
        expires_at = _timestamp(database, now_default=False)

        version = pw.IntegerField(constraints=[pw.SQL("DEFAULT 1")])

        class Meta:
            table_name = TABLE
            table_settings = _table_settings(database)

    # peewee-migrate's add_index names indexes itself; the specification's names are ours.
    for name, columns in INDEXES:
        fields = [SessionState._meta.columns[column] for column in columns]
        SessionState.add_index(SessionState.index(*fields, name=name))


def rollback(migrator, database, fake=False):
    schema = SchemaMigrator.from_database(database)
    if isinstance(database, pw.MySQLDatabase):
        # MariaDB/MySQL refuse to drop an index that a foreign key needs
        # (idx_session_states_session_id), so the constraint goes first there.
        migrator.run(schema.drop_foreign_key_constraint(TABLE, "session_id").run)
    for name, _ in reversed(INDEXES):
        migrator.run(schema.drop_index(TABLE, name).run)
    migrator.remove_model(TABLE)
