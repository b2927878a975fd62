"""Command line: ``sessionstate`` and ``python -m sessionstate``, for operators.

    sessionstate [--database URL] [--debug] COMMAND ...

The database is --database, else $SESSIONSTATE_DATABASE_URL, else ~/.sessionstate's file.
Exit status: 0 on success, 1 on an error (one line on stderr, no traceback unless --debug),
2 on a usage error (argparse's own convention).
"""

import argparse
import datetime as dt
import json
import math
import os
import sys
import unicodedata

from . import db as db_module
from . import lifecycle, listing, state, transfer
from .errors import SessionStateError
from .migrate import migrate, migration_status, rollback
from .models import utcnow
from .validation import STATUSES

MAX_LIST = listing.MAX_LIMIT
MAX_DAYS = 100_000  # about 270 years: every cutoff stays a valid datetime
CELL_WIDTH = 40  # free text (names, user ids) is cut to this many columns in the table
MESSAGE_LIMIT = 500  # characters of an error message on stderr

# -- commands -------------------------------------------------------------------------------

def cmd_migrate(database, args):
    names = migrate(database)
    print("applied: %s" % ", ".join(names) if names else "nothing to migrate: up to date")


def cmd_rollback(database, args):
    names = rollback(database, steps=args.steps)
    print("rolled back: %s" % ", ".join(names) if names else "nothing to roll back")


def cmd_status(database, args):
    done, pending = migration_status(database)
    for name in done:
        print("applied  %s" % name)
    for name in pending:
        print("pending  %s" % name)


LIST_COLUMNS = (  # key in list_sessions' rows, table heading
    ("session_id", "SESSION"), ("name", "NAME"), ("user_id", "USER"), ("mode", "MODE"),
    ("status", "STATUS"), ("current_phase", "PHASE"), ("current_step", "STEP"),
    ("version", "VERSION"), ("updated_at", "UPDATED (UTC)"),
)
JSON_LIST_KEYS = ("session_id", "state_id", "name", "user_id", "mode", "status",
                  "current_phase", "current_step", "version", "updated_at")


def cmd_list(database, args):
    rows = listing.list_sessions(status=args.status, mode=args.mode, user_id=args.user,
                                   limit=args.limit)
    if args.json:
        items = [{key: _json_value(row[key]) for key in JSON_LIST_KEYS} for row in rows]
        print_json(items)
        return
    if not rows:
        print("no sessions")
        return
    table = [[heading for _, heading in LIST_COLUMNS]]
    table += [[_cell(key, row[key]) for key, _ in LIST_COLUMNS] for row in rows]
    widths = [max(_width(line[i]) for line in table) for i in range(len(LIST_COLUMNS))]
    for line in table:
        cells = [text + " " * (width - _width(text)) for text, width in zip(line, widths)]
        print("  ".join(cells).rstrip())


def cmd_show(database, args):
    print_json(state.get_state(args.session_id).to_dict())


def cmd_export(database, args):
    document = transfer.export_session(args.session_id)
    text = transfer.dumps(document)
    if args.output in (None, "-"):
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()
        return
    _write_file(args.output, text)
    print("exported session %s with %d state(s) to %s"
          % (args.session_id, len(document["states"]), args.output))


def cmd_import(database, args):
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(args.file, "rb") as source:
                data = source.read()
        except OSError as exc:
            raise OSError("cannot read the import file %s: %s"
                          % (args.file, exc.strerror)) from exc
    session_id, count = transfer.import_session(transfer.loads(data))
    print("imported session %s with %d state(s)" % (session_id, count))


def cmd_expire(database, args):
    count = lifecycle.expire_due()
    print("expired %d session state(s)" % count)


def cmd_purge(database, args):
    cutoff = utcnow() - dt.timedelta(days=args.older_than)
    when = cutoff.isoformat(timespec="seconds")
    if args.dry_run:
        doomed = lifecycle.purge_candidates(cutoff)
        print("dry run: would purge %d session(s) completed or expired before %s%s"
              % (len(doomed), when, ":" if doomed else ""))
        for session_id in doomed:
            print(session_id)
        return
    count = lifecycle.purge(cutoff)
    print("purged %d session(s) completed or expired before %s" % (count, when))


# -- output helpers -------------------------------------------------------------------------

def _write_file(path, text):
    """Write `text` to a regular file all at once: a failure leaves no half-written file."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        # /dev/stdout, a fifo...: written in place
        with open(path, "w", encoding="utf-8") as output:
            output.write(text)
        return
    temporary = "%s.%d.tmp" % (path, os.getpid())
    try:
        with open(temporary, "w", encoding="utf-8") as output:
            output.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        raise OSError("cannot write the export file %s: %s" % (path, exc.strerror)) from exc
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def print_json(value):
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _json_value(value):
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _cell(key, value):
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(value))
    if key != "session_id" and _width(text) > CELL_WIDTH:
        while _width(text) > CELL_WIDTH - 1:
            text = text[:-1]
        text += "…"
    return text


def _width(text):
    """Columns `text` takes on a terminal: wide East Asian characters count two."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


# -- argument parsing -----------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse, with any password in a misplaced URL masked in its usage errors."""

    def error(self, message):
        super().error(db_module.mask_password(message))


def positive_int(text, maximum=None):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1, got %d" % value)
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError("must be at most %d, got %d" % (maximum, value))
    return value


def list_limit(text):
    return positive_int(text, MAX_LIST)


def days(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of days" % text) from None
    if not math.isfinite(value) or not 0 <= value <= MAX_DAYS:
        raise argparse.ArgumentTypeError("must be a number of days from 0 to %d, got %s"
                                         % (MAX_DAYS, text))
    return value


def build_parser():
    # The global options are accepted before the command and after it. Their actions are
    # shared by every parser, so they keep SUPPRESS as default (main() fills in the rest).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", metavar="URL", default=argparse.SUPPRESS,
                        help="database URL (default: $%s or ~/.sessionstate/sessionstate.db)"
                        % db_module.ENV_VAR)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")

    parser = Parser(prog="sessionstate", description="Migrate, inspect, export, import and "
                    "clean a sessionstate database.",
                    parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=Parser)

    def command(name, run, help):
        sub = commands.add_parser(name, help=help, description=help, parents=[common])
        sub.set_defaults(run=run)
        return sub

    command("migrate", cmd_migrate, "apply pending migrations")
    back = command("rollback", cmd_rollback, "undo the last migration(s)")
    back.add_argument("--steps", type=positive_int, default=1, metavar="N",
                      help="how many migrations to undo (default 1)")
    command("status", cmd_status, "list applied and pending migrations")

    listing = command("list", cmd_list, "sessions, newest updated first, one line each")
    listing.add_argument("--status", choices=STATUSES, help="only sessions in this status")
    listing.add_argument("--mode", metavar="M", help="only sessions in this mode")
    listing.add_argument("--user", metavar="U", help="only this user's sessions")
    listing.add_argument("--limit", type=list_limit, default=100, metavar="N",
                         help="at most N sessions (default 100, at most %d)" % MAX_LIST)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    show = command("show", cmd_show, "a session's current state, as JSON")
    show.add_argument("session_id", metavar="SESSION_ID")

    export = command("export", cmd_export, "a session and all its states as a JSON document")
    export.add_argument("session_id", metavar="SESSION_ID")
    export.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE instead of standard output")

    load = command("import", cmd_import,
                   "create a session from an export document (FILE, or - for standard input)")
    load.add_argument("file", metavar="FILE")

    command("expire", cmd_expire, "expire every session state whose expires_at has passed")
    purge = command("purge", cmd_purge,
                    "delete sessions completed or expired more than DAYS days ago")
    purge.add_argument("--older-than", type=days, required=True, metavar="DAYS",
                       help="age in days (fractions allowed) of the last update")
    purge.add_argument("--dry-run", action="store_true",
                       help="print the sessions that would be deleted; delete nothing")
    return parser


# -- running --------------------------------------------------------------------------------

def describe(exc, url=None):
    """One line naming the problem, with any password masked."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, (SessionStateError, OSError, ValueError)):
        text = "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
    text = db_module.mask_password(text, url or os.environ.get(db_module.ENV_VAR))
    if len(text) > MESSAGE_LIMIT:
        text = text[:MESSAGE_LIMIT - 3] + "..."
    return text


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.database = getattr(args, "database", None)
    if args.database is not None and not args.database.strip():
        parser.error("argument --database: the URL is empty")
    args.debug = getattr(args, "debug", False)
    database = None
    try:
        database = db_module.connect(args.database)
        args.run(database, args)
    except KeyboardInterrupt:
        print("sessionstate: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print("sessionstate: error: %s" % describe(exc, args.database), file=sys.stderr)
        return 1
    finally:
        if database is not None:
            try:
                database.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                pass
    return 0
