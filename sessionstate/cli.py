"""Command line: ``sessionstate`` and ``python -m sessionstate``, for operators.

Exit status: 0 on success, 1 on an error (one line on stderr, no traceback unless --debug),
2 on a usage error (argparse's own convention).
"""

import argparse
import sys

from . import db as db_module
from .errors import SessionStateError
from .migrate import migrate, migration_status, rollback


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


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1, got %d" % value)
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="sessionstate", description=__doc__.splitlines()[0])
    parser.add_argument("--database", metavar="URL",
                        help="database URL (default: $%s or ~/.sessionstate/sessionstate.db)"
                        % db_module.ENV_VAR)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("migrate", help="apply pending migrations").set_defaults(run=cmd_migrate)
    back = commands.add_parser("rollback", help="undo the last migration(s)")
    back.add_argument("--steps", type=positive_int, default=1)
    back.set_defaults(run=cmd_rollback)
    commands.add_parser("status", help="applied and pending migrations").set_defaults(
        run=cmd_status)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        database = db_module.connect(args.database)
        args.run(database, args)
    except (SessionStateError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print("sessionstate: error: %s" % exc, file=sys.stderr)
        return 1
    return 0
