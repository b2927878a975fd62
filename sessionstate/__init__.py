"""sessionstate: persistent, shareable session state for multi-agent applications.

    import sessionstate
    db = sessionstate.connect()          # URL argument, SESSIONSTATE_DATABASE_URL, or ~/.sessionstate
    sessionstate.migrate(db)
"""

from .db import connect, get_database
from .errors import (
    ConfigurationError,
    InvalidStateData,
    InvalidTransition,
    SchemaNotReady,
    SessionNotFound,
    SessionStateError,
    StaleStateError,
)
from .migrate import migrate, migration_status, rollback
from .models import Session, SessionState
from .state import update_state

__version__ = "0.1.0"

__all__ = [
    "connect",
    "get_database",
    "migrate",
    "rollback",
    "migration_status",
    "update_state",
    "Session",
    "SessionState",
    "SessionStateError",
    "ConfigurationError",
    "SchemaNotReady",
    "SessionNotFound",
    "StaleStateError",
    "InvalidStateData",
    "InvalidTransition",
]
