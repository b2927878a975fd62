"""The error tree: one base class, one subclass per condition a caller can act on.

Every refusal the library makes is one of these, so a caller can catch
``SessionStateError`` and never see a driver exception for a condition we know about.
"""


class SessionStateError(Exception):
    """Base class of every error raised by sessionstate."""


class ConfigurationError(SessionStateError):
    """The database URL or the environment is unusable (unknown scheme, missing driver...)."""


class SchemaNotReady(SessionStateError):
    """The database has not been migrated to the schema this code needs."""

    def __init__(self, pending):
        self.pending = list(pending)
        super().__init__(
            "the database is not migrated: pending migrations %s; apply them with "
            "`make migrate`, `sessionstate migrate` or sessionstate.migrate(db)"
            % ", ".join(self.pending)
        )


class SessionNotFound(SessionStateError):
    """No session or session state has the given id."""


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


class ImportConflict(SessionStateError):
    """An import whose session or session states already exist in the target database."""


__all__ = [
    "SessionStateError",
    "ConfigurationError",
    "SchemaNotReady",
    "SessionNotFound",
    "StaleStateError",
    "InvalidStateData",
    "InvalidTransition",
    "DatabaseBusy",
    "InvalidExport",
    "ImportConflict",
]
