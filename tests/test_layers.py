"""The package's layers import only downward, without cycles, on peewee's public API only.

Read from the source (ast), so a new upward import, a cycle, an unexplained lazy import or a
peewee private attribute fails here before a reviewer has to find it.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "sessionstate"

# Lowest first; a module may import only from layers below its own.
LAYERS = [
    {"errors", "migrations"},  # migrations: the scripts' package, data for the runner
    {"validation", "jsoncodec"},
    {"dialects", "aiodrivers"},  # aiodrivers: pwasyncio's databases, for aio
    {"execution", "statements"},
    {"models"},
    {"db"},
    {"migrate"},
    {"state", "lifecycle", "listing", "transfer"},
    {"cli", "aio"},
    {"openai_agents"},  # the OpenAI Agents SDK Session, on aio
    {"__init__", "__main__"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}
# peewee objects' underscore names we may touch (models' metadata, as peewee's docs do).
ALLOWED_PRIVATE = {"_meta"}
# aiodrivers, and nowhere else: aiosqlite's way to run one function on its thread (which
# pwasyncio itself uses), for a SQLite statement in one hop instead of three; and the two
# connection hooks of pwasyncio it overrides to keep an idle connection at hand. Each is
# explained where it is used, and test_aiodrivers fails loudly if one disappears.
ALLOWED_DRIVER_PRIVATE = {("aiodrivers", "_execute"), ("aiodrivers", "_conn"),
                          ("aiodrivers", "_acquire_conn_async"),
                          ("aiodrivers", "_release_conn")}


def modules():
    return sorted(path for path in PACKAGE.glob("*.py"))


def package_imports(tree):
    """(module imported, line, inside a function?) for each import of a package module."""
    found = []
    functions = [node for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(inner) for function in functions for inner in ast.walk(function)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found += [(name.split(".")[0], node.lineno, id(node) in nested) for name in names]
    return found


def test_every_module_has_a_layer():
    assert {path.stem for path in modules()} <= set(LAYER_OF)


@pytest.mark.parametrize("path", modules(), ids=lambda path: path.stem)
def test_imports_point_only_downward(path):
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    for name, line, lazy in package_imports(tree):
        assert LAYER_OF[name] < LAYER_OF[path.stem], (
            "%s.py:%d imports %s, which is not in a lower layer" % (path.stem, line, name))
        if lazy:  # a lazy import says why, in a comment just above it
            above = " ".join(lines[max(0, line - 4):line - 1])
            assert "#" in above, "%s.py:%d: lazy import of %s without a comment saying why" % (
                path.stem, line, name)


def test_no_cycles():
    graph = {path.stem: {name for name, _, _ in package_imports(ast.parse(path.read_text()))}
             for path in modules()}

    def visit(node, trail):
        assert node not in trail, "import cycle: %s" % " -> ".join(trail + [node])
        for target in graph.get(node, ()):
            visit(target, trail + [node])

    for node in graph:
        visit(node, [])


@pytest.mark.parametrize("path", modules(), ids=lambda path: path.stem)
def test_no_private_attribute_of_another_object(path):
    """No `something._name` except self's and cls's own, and _meta."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            assert (node.attr in ALLOWED_PRIVATE or owner in ("self", "cls")
                    or (path.stem, node.attr) in ALLOWED_DRIVER_PRIVATE), (
                "%s.py:%d uses the private attribute %s" % (path.stem, node.lineno, node.attr))


def test_no_attribute_is_set_on_a_database():
    """The package adds nothing to peewee's Database objects (`database.x = ...`)."""
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                        assert target.value.id not in ("database", "db"), (
                            "%s.py:%d sets %s on a database" % (path.stem, node.lineno,
                                                                 target.attr))
