"""Migrations runner: migrate, rollback and status over peewee-migrate's Router.

The scripts live in the repository's top-level ``migrations/`` folder, which is installed as
the package ``sessionstate.migrations``. We always hand the Router that folder's path:
peewee-migrate's default is a ``migrations/`` folder in the *current directory*, which it
silently creates when missing, so an installed copy would otherwise find no migrations.
"""

import logging
from pathlib import Path

from peewee_migrate import Router

from . import backends
from .db import get_database
from .errors import SchemaNotReady

HISTORY_TABLE = "migratehistory"

logger = logging.getLogger("sessionstate.migrations")
logger.addHandler(logging.NullHandler())  # a library logs only where the application asks


def migrations_dir():
    """The folder of the installed migration scripts (never the current directory)."""
    from . import migrations

    return Path(migrations.__file__).resolve().parent


def available():
    """Every migration name the code ships, in order."""
    return sorted(path.stem for path in migrations_dir().glob("[0-9][0-9][0-9]_*.py"))


def _router(database):
    return Router(database, migrate_dir=migrations_dir(), migrate_table=HISTORY_TABLE,
                  logger=logger)


def applied(database):
    """Names of the migrations recorded in the database, without creating any table."""
    if not database.table_exists(HISTORY_TABLE):
        return []
    cursor = database.execute_sql("SELECT name FROM %s ORDER BY id" % HISTORY_TABLE)
    return [row[0] for row in cursor.fetchall()]


def migration_status(database=None):
    """(applied, pending): the names of migrations done and still to do."""
    database = database or get_database()
    done = applied(database)
    return done, [name for name in available() if name not in done]


def migrate(database=None):
    """Apply every pending migration; returns the names applied (empty when up to date).

    The work runs under backends.migration_lock, so several processes migrating the same
    fresh database at once leave one schema and each returns only what it applied itself.
    """
    database = database or get_database()
    with backends.migration_lock(database):
        names = _router(database).run()
    _forget_check(database)
    return names


def rollback(database=None, steps=1):
    """Undo the last `steps` applied migrations; returns their names, newest first."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError("steps must be a positive integer, got %r" % (steps,))
    database = database or get_database()
    undone = []
    with backends.migration_lock(database):
        for _ in range(steps):
            done = applied(database)
            if not done:
                break
            _router(database).rollback()
            undone.append(done[-1])
    _forget_check(database)
    return undone


def ensure_migrated(database):
    """Raise SchemaNotReady naming what is pending, unless the database is at the code's head.

    The answer is remembered on the database object once it is yes, so the check costs one
    query per database and process, not one per call.
    """
    if getattr(database, "_sessionstate_at_head", False):
        return
    _, pending = migration_status(database)
    if pending:
        raise SchemaNotReady(pending)
    database._sessionstate_at_head = True


def _forget_check(database):
    database._sessionstate_at_head = False
