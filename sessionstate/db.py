"""Connecting: which database, with which settings; the models' proxy points at it.

The URL comes from the argument, else SESSIONSTATE_DATABASE_URL, else a SQLite file in
the user's home directory. peewee's ``playhouse.db_url`` maps schemes to database classes;
the dialect of the scheme adds the settings a session store needs.
"""

import os
import re
import urllib.parse
import weakref
from pathlib import Path

from playhouse import db_url

from . import dialects, execution
from .errors import ConfigurationError, DatabaseUnavailable
from .models import database_proxy

ENV_VAR = "SESSIONSTATE_DATABASE_URL"
DEFAULT_PATH = Path("~/.sessionstate/sessionstate.db")

# user:password@ in any URL-like text.
_URL_PASSWORD = re.compile(r"(://[^/@\s:]*:)[^@\s]*@")


def mask_password(text, url=None):
    """`text` with the password of any URL in it, and `url`'s own password, shown as ***."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    password = _password_of(url)
    if password and len(password) >= 4:  # shorter ones would mask ordinary words
        for form in {password, urllib.parse.unquote(password)}:
            text = text.replace(form, "***")
    return text


def _password_of(url):
    try:
        return urllib.parse.urlsplit(url).password if url else None
    except ValueError:
        return None


def default_url():
    """The embedded default: a SQLite file under ~/.sessionstate (created on demand)."""
    path = DEFAULT_PATH.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return "sqlite:///" + str(path)


def resolve_url(url=None):
    """The URL to use: the argument, else the environment variable, else the default."""
    if url:
        return url
    return os.environ.get(ENV_VAR) or default_url()


def open_database(url):
    """A configured peewee database for `url` (checked reachable), or a SessionStateError."""
    dialect = dialect_of_url(url)
    shown = mask_password(url)
    try:
        database = db_url.connect(url, **dialect.connect_params())
    except (ValueError, RuntimeError) as exc:
        raise ConfigurationError("unusable database URL %r: %s" % (shown, exc)) from exc
    _OPENED.add(database)
    try:
        dialect.prepare(database)
    except Exception as exc:
        if not execution.is_database_error(exc):
            raise
        raise DatabaseUnavailable("cannot open the database %s: %s" % (
            shown, mask_password(" ".join(str(exc).split()), url))) from exc
    return database


def dialect_of_url(url, driver=True):
    """The dialect of a URL, checked usable (and, with `driver`, its driver installed)."""
    if not isinstance(url, str):
        raise ConfigurationError("the database URL must be a string, not %r" % (url,))
    shown = mask_password(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigurationError("malformed database URL %r: %s" % (shown, exc)) from exc
    dialect = dialects.for_scheme(parts.scheme)
    if dialect is None or parts.scheme not in db_url.schemes:
        known = ", ".join(sorted(s for s in db_url.schemes if dialects.for_scheme(s)))
        raise ConfigurationError(
            "unknown database URL scheme %r in %r; use one of: %s" % (parts.scheme, shown, known))
    extra = dialect.missing_driver() if driver else None
    if extra:
        raise ConfigurationError("no %s driver is installed for %r; install it with: "
                                 "pip install '%s'" % (dialect.name, shown, extra))
    dialect.check_url(url, parts, shown)
    return dialect


def connect(url=None):
    """Open the session database and point the models at it; returns the peewee Database.

    Later calls of the module-level functions (update_state, ...) use this database.
    """
    database = open_database(resolve_url(url))
    database_proxy.initialize(database)
    return database


def get_database():
    """The database connect() opened, connecting to the configured default on first use."""
    if database_proxy.obj is None:
        return connect()
    return database_proxy.obj


# Every database this process opened, and the connections a forked child inherited from them.
_OPENED = weakref.WeakSet()
_INHERITED = []


def _forget_connections_after_fork():
    """In a forked child: never use the parent's connections; open fresh ones on demand.

    The inherited connections are kept referenced, never closed: closing (or collecting)
    one would end the parent's session on the shared socket.
    """
    for database in list(_OPENED):
        if not database.is_closed():
            _INHERITED.append(database.connection())
        database.dispose()


os.register_at_fork(after_in_child=_forget_connections_after_fork)
