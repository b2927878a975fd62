"""The error tree: one base class, one subclass per condition a caller can act on.

Every refusal and every failure of a public function is one of these; a driver's or peewee's
exception is kept as the cause (``raise ... from exc``), never let through.
"""


class SessionStateError(Exception):
    """Base class of every error raised by sessionstate."""


class ConfigurationError(SessionStateError):
    """The database URL or the environment is unusable (unknown scheme, missing driver...)."""


class SchemaNotReady(SessionStateError):
    """The database has not been migrated to the schema this code needs."""

    def __init__(self, pending, detail=None):
        self.pending = list(pending) if pending is not None else None  # None: not known
        what = ("pending migrations %s" % ", ".join(self.pending) if self.pending is not None
                else detail)
        super().__init__(
            "the database is not migrated: %s; apply the migrations with "
            "`make migrate`, `sessionstate migrate` or sessionstate.migrate(db)" % what
        )


class SessionNotFound(SessionStateError):
    """No session or session state has the given id."""


class AlreadyExists(SessionStateError):
    """A row with that id is already stored: a new instance cannot take it."""


class StaleStateError(SessionStateError):
    """The state was written by someone else since it was read (version mismatch)."""

    def __init__(self, state_id, expected_version, actual_version):
        self.state_id = state_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            "session state %s was changed by another writer: expected version %s, "
            "found version %s; re-read it and apply your change again"
            % (state_id, expected_version, actual_version)
        )


class InvalidStateData(SessionStateError, ValueError):
    """A value cannot be stored as given; the message names the field and the path in it."""


class DatabaseBusy(SessionStateError):
    """The database stayed locked (or chose us as a deadlock victim) through every retry."""


class DatabaseUnavailable(SessionStateError):
    """The database server cannot be reached (down, refusing, or past the connect timeout)."""


class ConnectionLost(SessionStateError):
    """The connection died after a write was sent: it may or may not have been applied."""

    in_doubt = True


class DatabaseError(SessionStateError):
    """The database failed a statement for a reason no other error names (cause chained)."""


class InvalidTransition(SessionStateError):
    """A lifecycle change that the state's current status does not allow."""

    def __init__(self, current, requested, session_id=None):
        self.current = current
        self.requested = requested
        self.session_id = session_id
        where = " of session %s" % session_id if session_id else ""
        super().__init__(
            "cannot change the status%s from %r to %r" % (where, current, requested)
        )


class InvalidExport(SessionStateError, ValueError):
    """An import document that is not a well-formed export (the message says where)."""


class ImportConflict(AlreadyExists):
    """An import whose session or session states already exist in the target database."""


__all__ = [
    "SessionStateError",
    "ConfigurationError",
    "SchemaNotReady",
    "SessionNotFound",
    "AlreadyExists",
    "StaleStateError",
    "InvalidStateData",
    "InvalidTransition",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "ConnectionLost",
    "DatabaseError",
    "InvalidExport",
    "ImportConflict",
]
