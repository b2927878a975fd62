"""Compiled statements: a query turned into SQL by peewee once per database, then only executed.

Compiling a query is most of what a small call costs in peewee. The hot paths run
statements of a fixed shape, so each is built once per database and shape with
placeholders (``param(name)``) where a call's values go, compiled with the public
``query.sql()``, and executed with ``Database.execute_sql`` and the call's values (already
converted by the fields' ``db_value``, as peewee would).

    statement = compiled(database, "key", lambda: Model.select().where(Model.x == param("x")))
    cursor = statement.execute({"x": value})
"""

import weakref

import peewee as pw

from . import dialects


class Slot:
    """Stands, in a compiled statement's parameters, for the value called `name`."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "Slot(%r)" % (self.name,)


def param(name):
    """A placeholder for the value `name`: passed through to the parameters unconverted."""
    return pw.Value(Slot(name), converter=False)


class Statement:
    """A query compiled once: its SQL, and its parameters with Slots where values go."""

    __slots__ = ("database", "dialect", "sql", "params", "slots")

    def __init__(self, database, query):
        self.database = database
        self.dialect = dialects.of(database)
        self.sql, params = query.sql()
        self.params = list(params)
        self.slots = [(index, value.name) for index, value in enumerate(self.params)
                      if isinstance(value, Slot)]

    def bound(self, values):
        """(sql, params) with `values` (name -> database value) in place, for the driver."""
        params = self.params.copy()
        for index, name in self.slots:
            params[index] = values[name]
        return self.dialect.bind_large(self.sql, params)

    def execute(self, values):
        """Run the statement with `values` (name -> database value); returns the cursor."""
        return self.database.execute_sql(*self.bound(values))

    def rows(self, values):
        return self.execute(values).fetchall()

    def rows_affected(self, values):
        return self.database.rows_affected(self.execute(values))


class Read:
    """An operation that is one read: its statement and values, and result(rows), what the
    rows become. The sync API runs it through execution.read; aio awaits the statement
    itself, without the greenlet bridge."""

    __slots__ = ("statement", "values", "result")

    def __init__(self, statement, values, result):
        self.statement, self.values, self.result = statement, values, result

    def rows(self):
        return self.statement.rows(self.values)


class Step:
    """One statement of a Write, bound to its values (sql, params as the driver takes them),
    and on_conflict(exc): the error a peewee IntegrityError stands for (a taken id...)."""

    __slots__ = ("sql", "params", "on_conflict")

    def __init__(self, statement, values, on_conflict):
        self.sql, self.params = statement.bound(values)
        self.on_conflict = on_conflict

    def run(self, database):
        try:
            return database.execute_sql(self.sql, self.params)
        except pw.IntegrityError as exc:
            raise self.on_conflict(exc) from exc


class Write:
    """An operation that is fixed statements in one transaction (Steps, on `database`), and
    result(), what the call returns once they have run. The sync API runs it through
    execution.write; aio awaits its statements itself, without the greenlet bridge."""

    __slots__ = ("database", "steps", "result")

    def __init__(self, database, steps, result):
        self.database, self.steps, self.result = database, steps, result

    def run(self):
        for step in self.steps:
            step.run(self.database)
        return self.result()


# database -> {key: Statement}; weak, so a closed and dropped database takes its cache along
# (kept here rather than on peewee's database object, which is not ours to extend).
_CACHE = weakref.WeakKeyDictionary()


def compiled(database, key, build):
    """The Statement for `key` on `database`, built by build() and compiled on first use."""
    cache = _CACHE.get(database)
    if cache is None:
        cache = _CACHE[database] = {}
    statement = cache.get(key)
    if statement is None:
        statement = cache[key] = Statement(database, build())
    return statement
