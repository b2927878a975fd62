"""Add idx_session_states_session_latest on (session_id, updated_at, created_at, id).

get_state reads a session's newest state: WHERE session_id = ? ORDER BY updated_at DESC,
created_at DESC, id DESC LIMIT 1. With only the specification's indexes, PostgreSQL, before
it has statistics on a table that grew from empty, planned that as a walk of every state
backwards by time through idx_session_states_updated, filtering on session_id: 4.8 ms at
9,000 states instead of 0.1 ms. This index answers the query by reading the one row it
returns, whatever the statistics. The specification's five stay as they are.
"""

from playhouse.migrate import SchemaMigrator

TABLE = "session_states"
NAME = "idx_session_states_session_latest"


def migrate(migrator, database, fake=False):
    # Plain SQL that all three backends accept as it stands.
    migrator.sql("CREATE INDEX %s ON %s (session_id, updated_at, created_at, id)"
                 % (NAME, TABLE))


def rollback(migrator, database, fake=False):
    migrator.run(SchemaMigrator.from_database(database).drop_index(TABLE, NAME).run)
