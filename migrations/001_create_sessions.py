"""Create the ``sessions`` table: the parent of every session state.

The specification assumes this table already exists (it is cmbagent's); we create it here so
that a fresh database is complete: a 36-character uuid4 string id, a name, the owning user
(indexed for listings by user), a status, free-form JSON metadata and two timestamps.
Defaults exist in the database too, so rows inserted by other tools get them.
"""

import peewee as pw


def _timestamp_type(database):
    """TIMESTAMP WITH TIME ZONE per backend; MariaDB/MySQL have none, so UTC in DATETIME(6).

    (TIMESTAMP would convert zones for us on MariaDB, but it ends in 2038.)
    """
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
    # Fixed-width ISO text: the same format the library writes, so text order is time order.
    return pw.SQL("DEFAULT (strftime('%Y-%m-%d %H:%M:%f000+00:00', 'now'))")


def _timestamp(database, **kwargs):
    field = pw.Field(constraints=[_now_default(database)], **kwargs)
    field.field_type = _timestamp_type(database)
    return field


def _table_settings(database):
    """MariaDB/MySQL compare text case-insensitively by default; ids and statuses must not."""
    if isinstance(database, pw.MySQLDatabase):
        return ["DEFAULT CHARSET=utf8mb4", "COLLATE=utf8mb4_bin"]
    return None


def migrate(migrator, database, fake=False):
    @migrator.create_model
    class Session(pw.Model):
        id = pw.CharField(max_length=36, primary_key=True)
        name = pw.CharField(max_length=255, null=True)
        user_id = pw.CharField(max_length=255, null=True)
        status = pw.CharField(max_length=20, constraints=[pw.SQL("DEFAULT 'active'")])
        meta = pw.JSONField(null=True)
        created_at = _timestamp(database)
        last_active_at = _timestamp(database)

        class Meta:
            table_name = "sessions"
            table_settings = _table_settings(database)

    Session.add_index(Session.index(Session.user_id, name="idx_sessions_user_id"))


def rollback(migrator, database, fake=False):
    migrator.remove_model("sessions")
