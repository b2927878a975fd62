"""Compiled statements, kept per database: built and compiled by peewee once, then only executed.

Compiling a query is most of what a small call costs in peewee: two thirds of a get_state()
of a short history go to turning the query into SQL. The hot paths run statements of a fixed
shape, so each is built once per database and per shape, with placeholders (param(name))
where a call's values go; a call puts its values (already converted by the fields'
db_value, as peewee would) in place of the placeholders and executes the same SQL text
peewee would have produced.

    statement = compiled(database, "key", lambda: Model.select().where(Model.x == param("x")))
    rows = statement.rows({"x": value})
"""

import peewee as pw


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
    """A query compiled once: its SQL, its parameters with Slots, and the query for its rows."""

    __slots__ = ("database", "query", "sql", "params", "slots", "columns")

    def __init__(self, database, query):
        self.database = database
        self.query = query
        self.sql, params = query.sql()
        self.params = list(params)
        self.slots = [(index, value.name) for index, value in enumerate(self.params)
                      if isinstance(value, Slot)]
        self.columns = None  # how peewee's row wrapper read the result's columns, once known

    def execute(self, values):
        """Run the statement with `values` (name -> database value); returns the cursor."""
        params = self.params.copy()
        for index, name in self.slots:
            params[index] = values[name]
        return self.database.execute_sql(self.sql, params)

    def rows(self, values, query=None):
        """The rows, as the query (or `query`, of the same shape) would give them.

        peewee's row wrapper works out, from the cursor's description, which column is which
        field and how to convert it, at every execution; the result's columns are the same
        every time here, so what it worked out the first time is handed to the next wrappers.
        """
        query = self.query if query is None else query  # (a query's truth runs it)
        wrapper = query._get_cursor_wrapper(self.execute(values))
        known = self.columns
        if known is not None and type(wrapper) is known[0]:
            wrapper.__dict__.update(known[1])
            wrapper.initialized = True
        rows = list(wrapper)
        if known is None and wrapper.initialized:
            self.columns = (type(wrapper), {name: wrapper.__dict__[name] for name in
                                            _WRAPPER_COLUMNS if name in wrapper.__dict__})
        return rows

    def rows_affected(self, values):
        return self.database.rows_affected(self.execute(values))


# What peewee's model row wrappers compute in initialize() (peewee 4.x): the columns and
# their fields and converters.
_WRAPPER_COLUMNS = ("columns", "fields", "converters", "no_convert", "convert", "ncols",
                    "unique_columns")


def compiled(database, key, build):
    """The Statement for `key` on `database`, built by build() and compiled on first use."""
    cache = database.__dict__.get("_sessionstate_statements")
    if cache is None:
        cache = database._sessionstate_statements = {}
    statement = cache.get(key)
    if statement is None:
        statement = cache[key] = Statement(database, build())
    return statement


def plain(values):
    """True when every value is a plain parameter (no SQL expression to compile in)."""
    return not any(isinstance(value, pw.Node) for value in values)
