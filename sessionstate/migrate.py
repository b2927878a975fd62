"""Migrations runner: migrate, rollback and status over peewee-migrate's Router.

The scripts live in the repository's top-level ``migrations/`` folder, which is installed as
the package ``sessionstate.migrations``. We always hand the Router that folder's path:
peewee-migrate's default is a ``migrations/`` folder in the *current directory*, which it
silently creates when missing, so an installed copy would otherwise find no migrations.
"""

import logging
import weakref
from pathlib import Path

from peewee_migrate import Router

from . import dialects, execution
from .db import get_database
from .errors import SchemaNotReady, SessionStateError
from .validation import check_positive_int

HISTORY_TABLE = "migratehistory"

logger = logging.getLogger("sessionstate.migrations")
logger.addHandler(logging.NullHandler())  # a library logs only where the application asks


def migrations_dir():
    """The folder of the installed migration scripts (never the current directory)."""
    # Lazy: the scripts' package is data for the Router; importing it at the top would make
    # it look like a layer of the library.
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
    done = execution.read(database, lambda: applied(database))
    return done, [name for name in available() if name not in done]


def migrate(database=None):
    """Apply every pending migration; returns the names applied (empty when up to date).

    The work runs under the dialect's migration lock, so several processes migrating the same
    fresh database at once leave one schema and each returns only what it applied itself.
    """
    database = database or get_database()
    forget_check(database)
    return _locked(database, lambda: _router(database).run())


def rollback(database=None, steps=1):
    """Undo the last `steps` applied migrations; returns their names, newest first."""
    check_positive_int("steps", steps)
    database = database or get_database()
    forget_check(database)

    def undo():
        undone = []
        for _ in range(steps):
            done = applied(database)
            if not done:
                break
            _router(database).rollback()
            undone.append(done[-1])
        return undone

    return _locked(database, undo)


def _locked(database, work):
    try:
        with dialects.of(database).migration_lock(database):
            return work()
    except SessionStateError:
        raise
    except Exception as exc:
        if not execution.is_database_error(exc):
            raise
        raise execution.translate(exc, dialects.of(database)) from exc


# Databases found at the code's head: checked once per database and process, not per call
# (a set beside peewee's object rather than an attribute on it).
_AT_HEAD = weakref.WeakSet()


def forget_check(database):
    """Check `database`'s schema again on its next use (another connection migrated it)."""
    _AT_HEAD.discard(database)


def ensure_migrated(database):
    """Raise SchemaNotReady naming what is pending, unless the database is at the code's head."""
    if database in _AT_HEAD:
        return
    _, pending = migration_status(database)
    if pending:
        raise SchemaNotReady(pending)
    _AT_HEAD.add(database)


def known_at_head(database):
    """True once ensure_migrated has found `database` at the code's head (it then runs no query)."""
    return database in _AT_HEAD


def ready_database():
    """The current database, checked to be at the code's head (for the operations)."""
    database = get_database()
    ensure_migrated(database)
    return database
