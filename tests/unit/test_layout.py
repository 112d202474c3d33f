"""The structure rules of tasks/ and flows/ (issue 16), checked statically: every module is parsed with ast, none is
imported (no Ray, Keras or Prefect loads here).

An import counts wherever it is written: at module level or inside a function. Imports under `if TYPE_CHECKING:`
never run: they count for the layering rules (tasks/ never names flows or prefect), not for what runs (cycles, the
modules a Ray trial loads).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tasks", "flows")
PRIVATE_NAMES = re.compile(
    r"ray\._private|ray\._common|keras\.src|_seed_generators|_flatten_layers|ENV_VARS_TO_PROPAGATE|"
    r"checkpoint_manager\._|prefect\.[a-z_.]*\._|_parameter_openapi_schema")
MAX_TOP_LEVEL_TASKS_MODULES = 8


@dataclass
class Module:
    name: str  # tasks.data.store; a package is its __init__: tasks.data
    path: Path
    tree: ast.Module
    imports: list[tuple[str, int, bool]] = field(default_factory=list)  # (imported name, line, runs)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside `if TYPE_CHECKING:` (or `if typing.TYPE_CHECKING:`) blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for child in node.body:
                    lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(module: Module) -> list[tuple[str, int, bool]]:
    """Every import of the module as absolute dotted names: `import a.b` gives a.b; `from a import b` gives a.b
    (a submodule or a name in a: resolved against the project's modules later); relative imports made absolute."""
    type_only = _type_checking_lines(module.tree)
    package = module.name if module.path.name == "__init__.py" else module.name.rpartition(".")[0]
    found = []
    for node in ast.walk(module.tree):
        runs = getattr(node, "lineno", None) not in type_only
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, runs) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found += [(f"{stem}.{alias.name}" if alias.name != "*" else stem, node.lineno, runs) for alias in node.names]
    return found


def _load() -> dict[str, Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = Module(_module_name(path), path, ast.parse(path.read_text(), str(path)))
            module.imports = _imports(module)
            modules[module.name] = module
    return modules


MODULES = _load()


def _project_target(name: str) -> str | None:
    """The project module an imported dotted name loads: the longest prefix that is one of ours."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _edges(runtime_only: bool) -> dict[str, dict[str, int]]:
    """module -> {project module it imports: the first line}."""
    graph: dict[str, dict[str, int]] = {name: {} for name in MODULES}
    for name, module in MODULES.items():
        for imported, line, runs in module.imports:
            target = _project_target(imported)
            if target and target != name and (runs or not runtime_only):
                graph[name].setdefault(target, line)
    return graph


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].path.relative_to(ROOT)}:{line}"


def _find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _external(module: Module, top: str, runtime_only: bool = False) -> list[str]:
    """Where `module` imports the third-party package `top` (e.g. prefect), as path:line."""
    return [_where(module.name, line) for imported, line, runs in module.imports
            if imported.split(".")[0] == top and (runs or not runtime_only)]


# --- (a) no import cycle ------------------------------------------------------------------------------------------

def test_no_import_cycle_among_tasks_and_flows():
    graph = _edges(runtime_only=True)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} ({_where(a, graph[a][b])})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


# --- (b), (c) the layers: tasks/ never imports flows/ nor Prefect ---------------------------------------------------

def test_nothing_in_tasks_imports_flows():
    found = [_where(name, line) + f" imports {imported}" for name, module in MODULES.items() if name.startswith("tasks")
             for imported, line, _ in module.imports if imported.split(".")[0] == "flows"]
    assert not found, found


def test_no_module_under_tasks_imports_prefect():
    found = [where for name, module in MODULES.items() if name.startswith("tasks") for where in _external(module, "prefect")]
    assert not found, f"tasks/ is plain functions, Prefect lives in flows/: {found}"


# --- (d) what runs in a Ray trial loads no Prefect ---------------------------------------------------------------

def _loaded_by(start: str, graph: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    """The tasks modules importing `start` runs (its parent packages' __init__ too), each with the import chain."""
    chains = {start: [start]}
    queue = [start]
    while queue:
        current = queue.pop(0)
        parents = [".".join(current.split(".")[:i]) for i in range(1, current.count(".") + 1)]
        for nxt in [*graph[current], *parents]:
            if nxt.startswith("tasks") and nxt in MODULES and nxt not in chains:
                chains[nxt] = chains[current] + [nxt]
                queue.append(nxt)
    return chains


def test_the_modules_a_ray_trial_runs_load_no_prefect():
    graph = _edges(runtime_only=True)
    trial_modules = sorted(name for name in MODULES if name.startswith("tasks.model"))
    assert trial_modules, "no tasks/model/ modules found"
    found = []
    for start in trial_modules:
        for name, chain in _loaded_by(start, graph).items():
            for where in _external(MODULES[name], "prefect", runtime_only=True):
                found.append(f"{' -> '.join(chain)}: {where}")
    assert not found, found


# --- (e) private names of Ray, Keras and Prefect only in *_compat.py ------------------------------------------------

def _code_lines(path: Path, tree: ast.Module) -> list[tuple[int, str]]:
    """(line number, text) of the lines of code: comments removed, docstrings and other bare strings left out."""
    text = path.read_text()
    lines = text.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    strings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            strings.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return [(number, line) for number, line in enumerate(lines, 1) if number not in strings]


def test_private_names_of_ray_keras_and_prefect_only_in_compat_modules():
    found = [f"{module.path.relative_to(ROOT)}:{number}: {match.group(0)}"
             for module in MODULES.values() if not module.path.name.endswith("_compat.py")
             for number, line in _code_lines(module.path, module.tree)
             for match in PRIVATE_NAMES.finditer(line)]
    assert not found, f"private names outside a *_compat.py module: {found}"


# --- (f) a small top level --------------------------------------------------------------------------------------

def test_at_most_eight_modules_directly_in_tasks():
    top = sorted(path.name for path in (ROOT / "tasks").glob("*.py") if path.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_TASKS_MODULES, f"{len(top)} modules directly in tasks/: {top}"


# --- the checks themselves --------------------------------------------------------------------------------------

def test_the_checks_see_the_project_and_find_what_they_look_for():
    """The parser sees both packages, resolves relative imports, and the cycle finder and the private-name pattern
    find what they are meant to."""
    assert {"tasks", "flows", "tasks.config"} <= set(MODULES) and len(MODULES) > 20
    assert _find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": 1}, "b": {}}) is None
    for text in ("from ray._private.utils import x", "import keras.src.backend", "m._seed_generators",
                 "prefect.logging.handlers._x", "class_cache.ENV_VARS_TO_PROPAGATE"):
        assert PRIVATE_NAMES.search(text), text
    assert not PRIVATE_NAMES.search("from prefect.logging.handlers import PrefectConsoleHandler")
    relative = Module("tasks.data.store", ROOT / "tasks/data/store.py", ast.parse("from ..keys import RunPaths\n"
                                                                                 "from . import shards\n"))
    assert [name for name, _, _ in _imports(relative)] == ["tasks.keys.RunPaths", "tasks.data.shards"]
