"""Add idx_session_states_status_updated on (status, updated_at, id), for listings.

"The newest active sessions" filters on status and orders by updated_at. The
specification's single-column indexes make the database either scan every row of that
status and sort them, or walk every row by time and filter; this composite index answers
the listing by reading exactly the rows it returns, in order (id breaks ties of updated_at). The specification's five stay as they are.
"""

from playhouse.migrate import SchemaMigrator

TABLE = "session_states"
NAME = "idx_session_states_status_updated"


def migrate(migrator, database, fake=False):
    # Plain SQL that all three backends accept as it stands.
    migrator.sql("CREATE INDEX %s ON %s (status, updated_at, id)" % (NAME, TABLE))


def rollback(migrator, database, fake=False):
    migrator.run(SchemaMigrator.from_database(database).drop_index(TABLE, NAME).run)
