"""The shape of the code (issue 16): static measures of a source tree, and the walk of the run config at run time.

    .venv/bin/python benchmarks/code_shape.py [ROOT] [--json]
    .venv/bin/python benchmarks/code_shape.py walk [--root ROOT] [--json] [--keep] [--save FILE] [-- FMNIST ARGS ...]
    .venv/bin/python benchmarks/code_shape.py walk --show FILE [--json]

Static measures (`ast` only: the project is never imported; ROOT defaults to the repository this script lives in)
of every `.py` file under ROOT/tasks and ROOT/flows:

- Lines (all lines, and non-blank ones) per subsystem. A module under tasks/<package>/ belongs to that package
  (data, model, tune, runs, predict); a module directly in tasks/ is "top"; everything under flows/ is "flows".
  In the old flat layout (tasks/ without sub-packages) each old module is mapped to the subsystem it moved to:
  dataset, shards, store -> data; architectures, recipes, protocol, training, artifacts -> model; fanout, search,
  progress, tune_state -> tune; runs, lease, champion, reporting, plots, runlist -> runs; predict -> predict;
  errors, config, jsonfile, processes (and anything unmapped, listed) -> top.
- The 5 longest modules (by all lines, like `wc -l`) and the 10 longest functions (methods and nested functions
  included, each counted from its `def` line to its last line, decorators not counted).
- Which modules import Ray (`import ray…` / `from ray… import`), at module level, inside functions, or only under
  `if TYPE_CHECKING:`.
- The import graph among the modules of tasks/ and flows/: a node per module (package `__init__.py` files
  included), an arrow per distinct importer -> imported pair, from imports anywhere in the file (module level and
  inside functions). `from P import x` points at module P.x when that is a module, else at P. Importing a
  sub-module does not count as importing its parent packages. Floors: the number of modules on the longest chain
  of imports, after collapsing each cycle into one node (a module importing no project module is on floor 1).
  Cycles: strongly connected components of more than one module, with the import lines that close them. Given
  for tasks/+flows/ and for tasks/ alone, each with the imports that run, and again adding those under
  `if TYPE_CHECKING:` (which never run, but a reader and a type checker follow them).
- Lines naming private internals: the regex PRIVATE below, per line, in tasks/ and flows/, with whether the
  file is a `*_compat.py` (comment lines are marked).

The walk of the config (`walk`): runs one small real `fmnist run` in this process (flows.cli.main, in a fresh
temporary working folder, store there; default options in DEFAULT_RUN, or the arguments after `--`), with
`sys.setprofile` (and `threading.setprofile` for threads started later) recording every Python function CALL
(a "call" event; a generator or coroutine counts at its start, not at each resume) of a function defined in a
file under ROOT/tasks or ROOT/flows whose ARGUMENTS (the parameters, `*args` and `**kwargs` included, read from
the frame's locals at the call) hold the run config, which is any of:
  a. a `PipelineConfig` (any class of that name in the object's MRO: SearchConfig too);
  b. the config as a dict (`config.model_dump()`, or Tune's trial config built from it): a dict holding at least
     the keys "architectures", "max_epochs" and "run_id";
  c. a trial spec: an object of a class defined in tasks/ or flows/ whose name ends in "Spec";
  d. one level down: an argument whose attributes (its `__dict__`), dict values or tuple/list items include a, b
     or c (a `Run` with `.config`, Tune's `Trial` with `.config`, a `result` dict with "config").
A method or property called on the config or on what holds it (`PipelineConfig.protocol`, `Run.run_id`: `self`
is the only argument holding the config) is recorded too; the counts are also given without those calls.

Ray's trials run in other processes, which are not profiled: each call of `ray.tune.Tuner.fit` is recorded as
ONE call of the trainable, in the module that defines it (the trainable given to `Tuner(...)` /
`Tuner.restore(...)`, unwrapped through `tune.with_parameters`/`with_resources` by its closure and
`__wrapped__`), placed where `fit` starts. Tune's callbacks run in this process during `fit` and are profiled.

From the recorded calls, in order:
- a "stay" is a maximal run of consecutive calls in the same module; stays = their number, modules = distinct
  modules among them;
- layering: flows/* = 0, a module directly in tasks/ (tasks/__init__.py too) = 1, a module in a sub-package of
  tasks/ = 2 (in the old flat layout every tasks/ module is 1);
- a "climb" is a move from one stay to the next whose layer number is LOWER (back up toward the CLI);
- a "return to flows" is a climb into a flows/ module after the walk has been in tasks/;
- "climbs by import floor" (a second measure, comparable between flat and nested layouts): a move to a module on
  a HIGHER import floor (above: tasks/+flows/, the imports that run) than the one it leaves.
Counts are given for the whole walk (from the CLI) and from the first call of a flow (a flows/ function whose name
ends in "_flow", e.g. run_flow) onwards. The walk needs the Fashion-MNIST source (FASHION_MNIST_DIR or Debian's
/usr/share/datasets/fashion-mnist), starts a local Ray (or joins $RAY_ADDRESS) and, unless PREFECT_API_URL is
set, Prefect's temporary server with PREFECT_HOME in the temporary folder; it stops its Ray (`ray.shutdown()`).

To measure another checkout's code, run from it (ROOT defaults to the current folder when it holds tasks/ and
flows/, else this script's repository): ROOT goes first on sys.path and on PYTHONPATH (for Ray's workers), and
the walk refuses to run if `tasks`/`flows` are imported from anywhere else.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
PACKAGES = ("tasks", "flows")
SUBSYSTEMS = ("data", "model", "tune", "runs", "predict", "top", "flows")
OLD_MAP = {
    **dict.fromkeys(("dataset", "shards", "store"), "data"),
    **dict.fromkeys(("architectures", "recipes", "protocol", "training", "artifacts"), "model"),
    **dict.fromkeys(("fanout", "search", "progress", "tune_state"), "tune"),
    **dict.fromkeys(("runs", "lease", "champion", "reporting", "plots", "runlist"), "runs"),
    "predict": "predict",
    **dict.fromkeys(("errors", "config", "jsonfile", "processes", "__init__"), "top"),
}
PRIVATE = re.compile(r"ray\._private|ray\._common|keras\.src|_seed_generators|_flatten_layers|ENV_VARS_TO_PROPAGATE"
                     r"|checkpoint_manager\._")
DEFAULT_RUN = ["run", "--preset", "quick", "--architectures", "baseline", "--max-epochs", "1", "--train-rows", "600",
               "--test-rows", "200"]


# ---------------------------------------------------------------------------------------------------- static


class Module:
    def __init__(self, root: Path, path: Path):
        self.path = path
        self.rel = path.relative_to(root).as_posix()
        parts = list(path.relative_to(root).with_suffix("").parts)
        self.is_package = parts[-1] == "__init__"
        if self.is_package:
            parts = parts[:-1]
        self.name = ".".join(parts)
        self.in_subpackage = parts[0] == "tasks" and len(path.relative_to(root / "tasks").parts) > 1
        self.text = path.read_text(encoding="utf-8")
        self.lines = self.text.splitlines()
        self.tree = ast.parse(self.text, filename=str(path))

    @property
    def nonblank(self) -> int:
        return sum(1 for line in self.lines if line.strip())


def find_modules(root: Path) -> list[Module]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found.append(Module(root, path))
    return found


def is_flat(root: Path) -> bool:
    return not any(p.is_dir() and (p / "__init__.py").is_file() for p in (root / "tasks").iterdir())


def subsystem(module: Module, flat: bool, unmapped: list[str]) -> str:
    if module.name.split(".")[0] == "flows":
        return "flows"
    if module.in_subpackage:
        return module.rel.split("/")[1]
    stem = module.path.stem
    if flat:
        if stem not in OLD_MAP:
            unmapped.append(module.rel)
        return OLD_MAP.get(stem, "top")
    return "top"


def functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    """(qualified name, def line, lines from def to end) of every function, methods and nested ones included."""
    out: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                out.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with where it is: "module", "function" or "type_checking"."""
    out: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, where))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function" if where != "type_checking" else where)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit(ast.Module(body=[statement], type_ignores=[]), "type_checking")
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), where)
            else:
                visit(child, where)

    visit(tree, "module")
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def import_targets(module: Module, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        targets = [_resolve(alias.name, known) for alias in node.names]
    else:
        if node.level:
            base_parts = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
            base_parts = base_parts[:len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        targets = []
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            targets.append(candidate if candidate in known else _resolve(base, known))
    return [t for t in targets if t and t != module.name]


def imports_ray(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name == "ray" or a.name.startswith("ray.") for a in node.names)
    return not node.level and bool(node.module) and (node.module == "ray" or node.module.startswith("ray."))


def strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:  # recursive Tarjan: the graph has tens of nodes
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(sorted(component))

    for v in nodes:
        if v not in index:
            connect(v)
    return components


def graph_measures(nodes: list[str], edges: dict[str, set[str]], where: dict[tuple[str, str], list[str]]) -> dict:
    """Arrows, floors (modules on the longest import chain, cycles collapsed), each module's floor, cycles."""
    node_set = set(nodes)
    edges = {a: {b for b in edges.get(a, ()) if b in node_set} for a in nodes}
    components = strongly_connected(nodes, edges)
    component_of = {v: i for i, comp in enumerate(components) for v in comp}
    floor_of_component: dict[int, int] = {}

    def floor(i: int) -> int:
        if i not in floor_of_component:
            floor_of_component[i] = 0  # guard; the condensation is acyclic
            below = {component_of[w] for v in components[i] for w in edges[v]} - {i}
            floor_of_component[i] = 1 + max((floor(j) for j in below), default=0)
        return floor_of_component[i]

    floors = {v: floor(component_of[v]) for v in nodes}
    cycles = []
    for comp in components:
        if len(comp) > 1:
            members = set(comp)
            cycles.append({"modules": comp,
                           "imports": [f"{a} -> {b} ({', '.join(where[(a, b)])})" for a in comp
                                       for b in sorted(edges[a] & members)]})
    return {"modules": len(nodes), "arrows": sum(len(v) for v in edges.values()),
            "floors": max(floors.values(), default=0), "floor_of": floors, "cycles": cycles}


def git_commit(root: Path) -> str:
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", *PACKAGES],
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + (" (tasks/ or flows/ changed since)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def analyse(root: Path) -> dict[str, Any]:
    root = root.resolve()
    if not all((root / p / "__init__.py").is_file() for p in PACKAGES):
        raise SystemExit(f"{root}: no tasks/ and flows/ packages here")
    modules = find_modules(root)
    flat = is_flat(root)
    unmapped: list[str] = []
    by_sub: dict[str, dict[str, int]] = defaultdict(lambda: {"modules": 0, "lines": 0, "nonblank": 0})
    module_rows, function_rows, ray_rows, private_rows = [], [], [], []
    known = {m.name for m in modules}
    edges: dict[str, set[str]] = defaultdict(set)  # imports that run
    edges_all: dict[str, set[str]] = defaultdict(set)  # and those under `if TYPE_CHECKING:`
    edge_where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in modules:
        sub = subsystem(m, flat, unmapped)
        by_sub[sub]["modules"] += 1
        by_sub[sub]["lines"] += len(m.lines)
        by_sub[sub]["nonblank"] += m.nonblank
        module_rows.append({"module": m.rel, "subsystem": sub, "lines": len(m.lines), "nonblank": m.nonblank})
        for name, line, length in functions(m.tree):
            function_rows.append({"function": name, "where": f"{m.rel}:{line}", "lines": length})
        ray_where: dict[str, list[int]] = defaultdict(list)
        for node, where in imports(m.tree):
            if imports_ray(node):
                ray_where[where].append(node.lineno)
            for target in import_targets(m, node, known):
                if where != "type_checking":
                    edges[m.name].add(target)
                edges_all[m.name].add(target)
                edge_where[(m.name, target)].append(f"{m.rel}:{node.lineno}"
                                                    + (" (TYPE_CHECKING)" if where == "type_checking" else ""))
        if ray_where:
            ray_rows.append({"module": m.rel, **{f"{k}_lines": v for k, v in sorted(ray_where.items())}})
        for number, line in enumerate(m.lines, 1):
            if PRIVATE.search(line):
                private_rows.append({"where": f"{m.rel}:{number}", "compat": m.path.name.endswith("_compat.py"),
                                     "comment": line.strip().startswith("#"), "text": line.strip()[:140]})
    names = [m.name for m in modules]
    tasks_names = [n for n in names if n.split(".")[0] == "tasks"]
    order = list(SUBSYSTEMS) + sorted(set(by_sub) - set(SUBSYSTEMS))
    return {
        "root": str(root),
        "commit": git_commit(root),
        "layout": "flat (old)" if flat else "sub-packages",
        "unmapped_to_top": unmapped,
        "subsystems": [{"subsystem": s, **by_sub[s]} for s in order if s in by_sub],
        "total": {"modules": len(modules), "lines": sum(len(m.lines) for m in modules),
                  "nonblank": sum(m.nonblank for m in modules)},
        "modules": sorted(module_rows, key=lambda r: (-r["lines"], r["module"])),
        "longest_functions": sorted(function_rows, key=lambda r: (-r["lines"], r["where"]))[:10],
        "ray_imports": ray_rows,
        "graph": {
            "tasks+flows": graph_measures(names, edges, edge_where),
            "tasks": graph_measures(tasks_names, edges, edge_where),
            "tasks+flows with TYPE_CHECKING": graph_measures(names, edges_all, edge_where),
            "tasks with TYPE_CHECKING": graph_measures(tasks_names, edges_all, edge_where),
        },
        "private_names": private_rows,
    }


def static_markdown(r: dict[str, Any]) -> str:
    out = [f"## Code shape of `{r['root']}` at {r['commit']} ({r['layout']} layout)", ""]
    out += ["### Lines per subsystem", "", "| subsystem | modules | lines | non-blank |", "|---|---:|---:|---:|"]
    for s in r["subsystems"]:
        label = {"top": "tasks/ top level", "flows": "flows/"}.get(s["subsystem"], f"tasks/{s['subsystem']}")
        out.append(f"| {label} | {s['modules']} | {s['lines']:,} | {s['nonblank']:,} |")
    t = r["total"]
    out.append(f"| **total** | {t['modules']} | {t['lines']:,} | {t['nonblank']:,} |")
    if r["unmapped_to_top"]:
        out.append(f"\nNot in the old-module map (counted as top level): {', '.join(r['unmapped_to_top'])}")
    out += ["", "### The 5 longest modules", "", "| module | subsystem | lines | non-blank |", "|---|---|---:|---:|"]
    out += [f"| {m['module']} | {m['subsystem']} | {m['lines']} | {m['nonblank']} |" for m in r["modules"][:5]]
    out += ["", "### The 10 longest functions", "", "| lines | function | where |", "|---:|---|---|"]
    out += [f"| {f['lines']} | `{f['function']}` | {f['where']} |" for f in r["longest_functions"]]
    ray = r["ray_imports"]
    out += ["", f"### Modules importing Ray: {len(ray)} of {t['modules']}", "",
            "| module | module level (lines) | inside functions (lines) | TYPE_CHECKING only |", "|---|---|---|---|"]
    for row in ray:
        cells = [", ".join(map(str, row.get(f"{k}_lines", []))) or "-" for k in ("module", "function", "type_checking")]
        out.append(f"| {row['module']} | {' | '.join(cells)} |")
    out += ["", "### Import graph (imports at module level and inside functions)", "",
            "| scope | imports counted | modules | arrows | floors | cycles |", "|---|---|---:|---:|---:|---|"]
    for scope in ("tasks+flows", "tasks", "tasks+flows with TYPE_CHECKING", "tasks with TYPE_CHECKING"):
        g = r["graph"][scope]
        cycles = "; ".join(" ↔ ".join(c["modules"]) for c in g["cycles"]) or "none"
        kind = "+ `if TYPE_CHECKING:`" if "TYPE_CHECKING" in scope else "those that run"
        label = scope.split(" ")[0].replace("+", "/ + ") + "/"
        out.append(f"| {label} | {kind} | {g['modules']} | {g['arrows']} | {g['floors']} | {cycles} |")
    shown = set()
    for scope in ("tasks+flows", "tasks+flows with TYPE_CHECKING"):
        for c in r["graph"][scope]["cycles"]:
            if tuple(c["modules"]) not in shown:
                shown.add(tuple(c["modules"]))
                out.append(f"\nCycle {' ↔ '.join(c['modules'])}: " + "; ".join(c["imports"]))
    priv = r["private_names"]
    files = sorted({p["where"].rsplit(":", 1)[0] for p in priv})
    compat = sum(1 for p in priv if p["compat"])
    out += ["", (f"### Lines naming private internals: {len(priv)} in {len(files)} files "
                f"({compat} in *_compat.py, {len(priv) - compat} elsewhere)"), ""]
    if priv:
        out += ["| where | *_compat.py | line |", "|---|---|---|"]
        out += [f"| {p['where']} | {'yes' if p['compat'] else 'no'} | `{p['text'].replace('|', '¦')}`"
                f"{' (comment)' if p['comment'] else ''} |" for p in priv]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------- walk

_MISSING = object()
_TUNER = "tuner"
_CONFIG_KEYS = frozenset(("architectures", "max_epochs", "run_id"))
_GENERATOR_FLAGS = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR


class Recorder:
    """The profile function: records the calls of project functions whose arguments hold the config."""

    def __init__(self, root: Path):
        import dis

        self.prefixes = tuple(str(root / p) + os.sep for p in PACKAGES)
        self.root = root
        self.resume_op = dis.opmap.get("RESUME")
        self.code_module: dict[Any, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.trainable: tuple[str, str, str] | None = None
        self.param_space_carries: str | None = None
        self.errors: list[str] = []

    # which code objects matter
    def _classify(self, code) -> Any:
        filename = code.co_filename
        if filename.startswith(self.prefixes):
            rel = Path(filename).relative_to(self.root)
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            level = 0 if parts[0] == "flows" else (2 if len(rel.parts) > 2 else 1)
            return (".".join(parts), level, rel.as_posix())
        if filename.replace(os.sep, "/").endswith("ray/tune/tuner.py") and code.co_name in ("__init__", "fit",
                                                                                             "restore"):
            return (_TUNER, code.co_name)
        return None

    def module_of(self, code) -> Any:
        info = self.code_module.get(code, _MISSING)
        if info is _MISSING:
            info = self.code_module[code] = self._classify(code)
        return info

    # what holds the config
    def _direct(self, value: Any) -> str | None:
        cls = type(value)
        if cls is dict:
            return "config dict" if _CONFIG_KEYS <= value.keys() else None
        try:
            names = [k.__name__ for k in cls.__mro__]
        except Exception:  # noqa: BLE001  (an odd proxy type)
            return None
        if "PipelineConfig" in names:
            return cls.__name__
        if cls.__name__.endswith("Spec") and str(getattr(cls, "__module__", "")).split(".")[0] in PACKAGES:
            return cls.__name__
        return None

    def holds(self, value: Any) -> str | None:
        found = self._direct(value)
        if found:
            return found
        try:
            if isinstance(value, dict):
                items = list(value.items())[:64]
            elif isinstance(value, (list, tuple)):
                items = list(enumerate(value[:64]))
            else:
                attributes = getattr(value, "__dict__", None)
                items = list(attributes.items())[:64] if isinstance(attributes, dict) else []
        except Exception:  # noqa: BLE001
            return None
        for key, inner in items:
            found = self._direct(inner)
            if found:
                return f"{type(value).__name__}[{key!r}]: {found}" if isinstance(value, (dict, list, tuple)) \
                    else f"{type(value).__name__}.{key}: {found}"
        return None

    def _project_function(self, obj: Any, depth: int = 0) -> tuple[str, str, str] | None:
        if obj is None or depth > 4:
            return None
        code = getattr(obj, "__code__", None)
        if code is not None:
            info = self.module_of(code)
            if isinstance(info, tuple) and info[0] != _TUNER:
                return info[0], getattr(obj, "__qualname__", code.co_name), f"{info[2]}:{code.co_firstlineno}"
        if isinstance(obj, type):
            module = sys.modules.get(getattr(obj, "__module__", ""), None)
            file = getattr(module, "__file__", "") or ""
            if file.startswith(self.prefixes):
                return obj.__module__, obj.__qualname__, Path(file).relative_to(self.root).as_posix()
            for base in obj.__mro__[1:]:
                found = self._project_function(base, depth + 1) if base is not object else None
                if found:
                    return found
        for candidate in [getattr(obj, "__wrapped__", None)] + [c for c in (getattr(obj, "__closure__", None) or ())]:
            try:
                inner = candidate.cell_contents if type(candidate).__name__ == "cell" else candidate
            except ValueError:
                continue
            if callable(inner):
                found = self._project_function(inner, depth + 1)
                if found:
                    return found
        return None

    def __call__(self, frame, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        info = self.code_module.get(code, _MISSING)
        if info is _MISSING:
            info = self.code_module[code] = self._classify(code)
        if info is None:
            return
        try:
            self._record(frame, code, info)
        except Exception as exc:  # noqa: BLE001  (never break the run being measured)
            if len(self.errors) < 20:
                self.errors.append(f"{code.co_filename}:{code.co_firstlineno}: {type(exc).__name__}: {exc}")

    def _record(self, frame, code, info: tuple) -> None:
        if info[0] == _TUNER:
            local = frame.f_locals
            if info[1] in ("__init__", "restore"):
                self.trainable = self._project_function(local.get("trainable"))
                if info[1] == "__init__":
                    self.param_space_carries = self.holds(local.get("param_space")) or "no"
            elif info[1] == "fit":
                module, name, where = self.trainable or ("<trainable not found>", "?", "?")
                self.events.append({"module": module, "level": 2 if module.count(".") >= 2 else
                                    (0 if module.startswith("flows") else 1), "function": name, "where": where,
                                    "holds": [(f"Ray trial (another process, not profiled; param_space holds the "
                                              f"config: {self.param_space_carries})")],
                                    "trial": True})
            return
        if code.co_flags & _GENERATOR_FLAGS and self.resume_op is not None:
            raw = code.co_code
            if not (raw[frame.f_lasti] == self.resume_op and raw[frame.f_lasti + 1] == 0):
                return  # a generator or coroutine resumed, not called
        count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)
        if not count:
            return
        local = frame.f_locals
        names = code.co_varnames[:count]
        star = names[code.co_argcount + code.co_kwonlyargcount] if code.co_flags & 0x04 else None
        double = names[-1] if code.co_flags & 0x08 else None
        held = []
        for name in names:
            value = local.get(name)
            if name in (star, double) and isinstance(value, (tuple, dict)):  # each of *args, **kwargs by itself
                parts = value.items() if isinstance(value, dict) else enumerate(value)
                for key, inner in list(parts)[:64]:
                    found = self.holds(inner)
                    if found:
                        held.append(f"{name}[{key!r}]: {found}")
                continue
            found = self.holds(value)
            if found:
                held.append(f"{name}: {found}")
        if held:
            self.events.append({"module": info[0], "level": info[1], "function": code.co_qualname
                                if hasattr(code, "co_qualname") else code.co_name,
                                "where": f"{info[2]}:{code.co_firstlineno}", "holds": held,
                                "trial": False})


def stays_of(events: list[dict]) -> list[dict]:
    stays: list[dict] = []
    for e in events:
        if stays and stays[-1]["module"] == e["module"]:
            stays[-1]["calls"].append(e)
        else:
            stays.append({"module": e["module"], "level": e["level"], "calls": [e]})
    return stays


def walk_counts(events: list[dict], floor_of: dict[str, int]) -> dict[str, Any]:
    stays = stays_of(events)
    climbs = returns = floor_climbs = 0
    seen_tasks = False
    marks = []
    for i, stay in enumerate(stays):
        mark = ""
        if stay["module"].startswith("tasks"):
            seen_tasks = True
        if i:
            before = stays[i - 1]
            if stay["level"] < before["level"]:
                climbs += 1
                mark = "↑"
                if stay["level"] == 0 and seen_tasks:
                    returns += 1
                    mark = "⇑"
            if floor_of.get(stay["module"], 0) > floor_of.get(before["module"], 0):
                floor_climbs += 1
        marks.append(mark)
    return {"stays": len(stays), "modules": len({s["module"] for s in stays}), "climbs": climbs,
            "returns_to_flows": returns, "climbs_by_import_floor": floor_climbs, "calls": len(events),
            "sequence": [{"module": s["module"], "level": s["level"], "calls": len(s["calls"]), "climb": m,
                          "functions": list(dict.fromkeys(c["function"] for c in s["calls"]))}
                         for s, m in zip(stays, marks)]}


def _walk_root(given: str | None) -> Path:
    if given:
        return Path(given).resolve()
    here = Path.cwd()
    if all((here / p / "__init__.py").is_file() for p in PACKAGES):
        return here.resolve()
    return HERE


def walk(argv: list[str]) -> None:
    fmnist_args = None
    if "--" in argv:
        at = argv.index("--")
        argv, fmnist_args = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="code_shape.py walk", description="Follow the run config at run time.")
    parser.add_argument("--root", help="the checkout whose code runs (default: the current folder if it holds tasks/ "
                                       "and flows/, else this script's repository)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (store, Prefect home)")
    parser.add_argument("--save", metavar="FILE", help="also write the result as JSON to FILE")
    parser.add_argument("--show", metavar="FILE", help="print a result saved with --save; runs nothing")
    args = parser.parse_args(argv)
    if args.show:
        saved = json.loads(Path(args.show).read_text())
        if "floor_of" not in saved:
            saved["floor_of"] = analyse(Path(saved["root"]))["graph"]["tasks+flows"]["floor_of"]
        saved = summarise(saved)
        print(json.dumps(saved, indent=1) if args.json else walk_markdown(saved))
        return
    save = Path(args.save).resolve() if args.save else None
    root = _walk_root(args.root)
    shape = analyse(root)  # before importing anything of the project
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    import tempfile
    import traceback

    work = Path(tempfile.mkdtemp(prefix="code-shape-walk-"))
    if not os.environ.get("PREFECT_API_URL"):  # Prefect's temporary server, on a database of its own
        os.environ["PREFECT_HOME"] = str(work / "prefect-home")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a new database, 2 cores
    import flows
    import tasks
    for package in (tasks, flows):
        if not Path(package.__file__).resolve().is_relative_to(root):
            raise SystemExit(f"{package.__name__} is imported from {package.__file__}, not from {root}: "
                             f"run from {root} or give --root")
    from flows.cli import main

    os.chdir(work)
    command = (fmnist_args or DEFAULT_RUN) + ([] if fmnist_args else ["--store", str(work / "store")])
    for heavy in ("prefect", "prefect.main", "ray", "ray.tune", "pyarrow", "numpy"):  # imported before profiling
        try:
            __import__(heavy)
        except ImportError:
            pass
    import threading

    recorder = Recorder(root)
    started = time.perf_counter()
    threading.setprofile(recorder)
    sys.setprofile(recorder)
    failure = None
    try:
        code = main(command)
    except BaseException as exc:  # noqa: BLE001  (report what was recorded up to here)
        code, failure = None, "".join(traceback.format_exception(exc)[-3:])
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        wall = time.perf_counter() - started
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except Exception as exc:  # noqa: BLE001
            print(f"ray.shutdown(): {exc}", file=sys.stderr)
    elsewhere = sorted(name for name, m in list(sys.modules.items()) if name.split(".")[0] in PACKAGES
                       and getattr(m, "__file__", None) and not Path(m.__file__).resolve().is_relative_to(root))
    result = summarise({
        "root": str(root), "commit": shape["commit"], "layout": shape["layout"], "command": ["fmnist", *command],
        "exit_code": code, "failure": failure, "wall_s": round(wall, 1), "work": str(work),
        "modules_imported_from_elsewhere": elsewhere, "profiler_errors": recorder.errors,
        "floor_of": shape["graph"]["tasks+flows"]["floor_of"], "calls": recorder.events,
    })
    if save:
        save.write_text(json.dumps(result, indent=1))
    if not args.keep:
        import shutil

        os.chdir(root)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1) if args.json else walk_markdown(result))
    if code != 0:
        sys.exit(f"fmnist exited {code}: the walk is incomplete" + (f"\n{failure}" if failure else ""))


def _self_only(call: dict) -> bool:
    """A method or property called on the config or on what holds it (PipelineConfig.protocol, Run.run_id):
    `self` is the only argument holding the config."""
    return not call.get("trial") and all(h.startswith("self: ") for h in call["holds"])


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    """The counts, from the recorded calls: from the CLI, and from the first call of a flow (`*_flow` in flows/);
    each also without the calls where only `self` holds the config."""
    calls, floor_of = r["calls"], r["floor_of"]
    start = next((i for i, c in enumerate(calls) if c["module"].startswith("flows")
                  and c["function"].split(".")[-1].endswith("_flow")), None)
    r["from_cli"] = walk_counts(calls, floor_of)
    r["from_cli_no_self"] = walk_counts([c for c in calls if not _self_only(c)], floor_of)
    r["from_flow_function"] = calls[start]["function"] if start is not None else None
    r["from_flow"] = walk_counts(calls[start:], floor_of) if start is not None else None
    r["from_flow_no_self"] = None if start is None else {
        k: v for k, v in walk_counts([c for c in calls[start:] if not _self_only(c)], floor_of).items()
        if k != "sequence"}
    return r


def _sequence_line(counts: dict) -> str:
    return " → ".join(f"{s['climb']}{s['module']}" + (f"×{s['calls']}" if s["calls"] > 1 else "")
                      for s in counts["sequence"])


def _counts_line(counts: dict) -> str:
    return (f"**{counts['stays']} stays in {counts['modules']} modules, {counts['climbs']} climbs "
            f"({counts['returns_to_flows']} returns to flows/)**; climbs by import floor: "
            f"{counts['climbs_by_import_floor']}; {counts['calls']} calls")


def walk_markdown(r: dict[str, Any]) -> str:
    out = [f"## The walk of the run config: `{r['root']}` at {r['commit']} ({r['layout']} layout)", "",
           f"`{' '.join(r['command'])}` → exit {r['exit_code']}, {r['wall_s']:.0f} s (profiled)", ""]
    if r.get("failure"):
        out.append(f"INCOMPLETE: the run raised {r['failure'].strip().splitlines()[-1]}\n")
    if r["modules_imported_from_elsewhere"]:
        out.append(f"WARNING: imported from outside the root: {', '.join(r['modules_imported_from_elsewhere'])}\n")
    if r["profiler_errors"]:
        out.append(f"Profiler errors (those calls not recorded): {'; '.join(r['profiler_errors'])}\n")
    out.append(f"- From the CLI: {_counts_line(r['from_cli'])}")
    w = r["from_cli_no_self"]
    out.append(f"  - without methods called on the config or its holder (only `self` holds it): {w['stays']} stays "
               f"in {w['modules']} modules, {w['climbs']} climbs ({w['returns_to_flows']} returns to flows/), "
               f"{w['climbs_by_import_floor']} by import floor")
    if r["from_flow"]:
        out.append(f"- From `{r['from_flow_function']}`: {_counts_line(r['from_flow'])}")
        w = r["from_flow_no_self"]
        out.append(f"  - without methods called on the config or its holder: {w['stays']} stays in {w['modules']} "
                   f"modules, {w['climbs']} climbs ({w['returns_to_flows']} returns to flows/), "
                   f"{w['climbs_by_import_floor']} by import floor")
    out += ["", "Sequence (↑ a climb, ⇑ a climb that returns to flows/, ×N calls in one stay):", "",
            _sequence_line(r["from_cli"]), "", "Without methods called on the config or its holder:", "",
            _sequence_line(r["from_cli_no_self"]), "", "| # | layer | module | calls | functions (in order) |",
            "|---:|---:|---|---:|---|"]
    for i, s in enumerate(r["from_cli"]["sequence"], 1):
        out.append(f"| {i} | {s['level']} | {s['climb']} {s['module']} | {s['calls']} | "
                   f"{', '.join(s['functions'])} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "walk":
        walk(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="The walk of the config at run time: code_shape.py walk --help; the "
                                            "definitions: the module's docstring.")
    parser.add_argument("root", nargs="?", default=str(HERE), help="the source tree (default: this repository)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    result = analyse(Path(args.root))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(static_markdown(result))


if __name__ == "__main__":
    main()
