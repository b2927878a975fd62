"""sessionstate: persistent, shareable session state for multi-agent applications.

    import sessionstate
    db = sessionstate.connect()          # URL argument, SESSIONSTATE_DATABASE_URL, or ~/.sessionstate
    sessionstate.migrate(db)
"""

from .db import connect, get_database
from .errors import (
    AlreadyExists,
    ConfigurationError,
    ConnectionLost,
    DatabaseBusy,
    DatabaseError,
    DatabaseUnavailable,
    ImportConflict,
    InvalidExport,
    InvalidStateData,
    InvalidTransition,
    SchemaNotReady,
    SessionNotFound,
    SessionStateError,
    StaleStateError,
)
from .lifecycle import (
    complete,
    create_session,
    delete_session,
    expire,
    expire_due,
    purge,
    resume,
    suspend,
)
from .listing import list_sessions
from .migrate import migrate, migration_status, rollback
from .models import Session, SessionState
from .state import (append_messages, clear_messages, get_state, modify_state, pop_message,
                    recent_messages, update_state)
from .transfer import export_session, import_session

__version__ = "0.1.0"

__all__ = [
    "connect",
    "get_database",
    "migrate",
    "rollback",
    "migration_status",
    "update_state",
    "create_session",
    "get_state",
    "append_messages",
    "recent_messages",
    "pop_message",
    "clear_messages",
    "modify_state",
    "suspend",
    "resume",
    "complete",
    "expire",
    "expire_due",
    "purge",
    "delete_session",
    "list_sessions",
    "export_session",
    "import_session",
    "Session",
    "SessionState",
    "SessionStateError",
    "ConfigurationError",
    "SchemaNotReady",
    "SessionNotFound",
    "StaleStateError",
    "InvalidStateData",
    "InvalidTransition",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "ConnectionLost",
    "DatabaseError",
    "AlreadyExists",
    "InvalidExport",
    "ImportConflict",
]
