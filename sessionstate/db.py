"""Connecting: which database, with which settings, and binding the models to it.

The URL comes from the argument, else SESSIONSTATE_DATABASE_URL, else a SQLite file in
the user's home directory. peewee's ``playhouse.db_url`` maps schemes to database classes;
this module adds the checks and settings a session store needs on top of it.
"""

import os
import urllib.parse
from pathlib import Path

import peewee as pw
from playhouse import db_url

from . import backends
from .errors import ConfigurationError
from .models import MODELS, database_proxy

ENV_VAR = "SESSIONSTATE_DATABASE_URL"
DEFAULT_PATH = Path("~/.sessionstate/sessionstate.db")

_current = None  # the database the models are bound to, set by connect()


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


def mask_password(url):
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
            return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    return url


def open_database(url):
    """A configured (not yet bound) peewee database for `url`, or ConfigurationError."""
    if not isinstance(url, str):
        raise ConfigurationError("the database URL must be a string, not %r" % (url,))
    shown = mask_password(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigurationError("malformed database URL %r: %s" % (shown, exc)) from None
    family = backends.kind_of_scheme(parts.scheme)
    if family is None or parts.scheme not in db_url.schemes:
        known = ", ".join(sorted(s for s in db_url.schemes if backends.kind_of_scheme(s)))
        raise ConfigurationError(
            "unknown database URL scheme %r in %r; use one of: %s" % (parts.scheme, shown, known)
        )
    extra = backends.missing_driver(family)
    if extra:
        raise ConfigurationError(
            "no %s driver is installed for %r; install it with: pip install '%s'"
            % (family, shown, extra)
        )
    if family == "sqlite":
        if parts.netloc or not url.startswith(parts.scheme + "://"):
            raise ConfigurationError(
                "malformed SQLite URL %r: local files take three slashes, "
                "sqlite:///relative/path.db or sqlite:////absolute/path.db" % shown)
        _check_sqlite_folder(parts.path[1:])
    try:
        database = db_url.connect(url, **backends.connect_params(family))
    except (ValueError, RuntimeError) as exc:
        raise ConfigurationError("unusable database URL %r: %s" % (shown, exc)) from None
    try:
        return backends.prepare(database)
    except pw.DatabaseError as exc:
        raise ConfigurationError("cannot open the database %r: %s" % (shown, exc)) from None


def _check_sqlite_folder(path):
    """Refuse a SQLite path whose folder does not exist, before SQLite says "unable to open"."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    folder = Path(path).expanduser().parent
    if not folder.is_dir():
        raise ConfigurationError(
            "the folder %s for the SQLite database %s does not exist" % (folder, path)
        )


def connect(url=None):
    """Open the session database and bind the models to it; returns the peewee Database.

    Later calls of the module-level functions (update_state, ...) use this database.
    """
    global _current
    database = open_database(resolve_url(url))
    for model in MODELS:
        model.bind(database, bind_refs=False, bind_backrefs=False)
    database_proxy.initialize(database)  # for anything that captured the proxy earlier
    _current = database
    return database


def get_database():
    """The database connect() bound, connecting to the configured default on first use."""
    if _current is None:
        return connect()
    return _current
