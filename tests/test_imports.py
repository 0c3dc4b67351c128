"""The package's import structure, read with ``ast`` (nothing is imported or executed).

Every ``import`` counts, wherever it stands: at module level, inside a function, or under
``if TYPE_CHECKING:``. An import inside a function that dodges a circular import is a cycle all the
same; the cure is to move the shared thing down a layer. Importing ``croft_core.a.b`` from outside the
package ``croft_core.a`` also runs ``croft_core/a/__init__.py``, so that counts as an import of
``croft_core.a`` too.
"""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "croft_core"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (packages by ``__init__``)."""
    root = package_dir.name
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [root, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def imported_modules(name: str, tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``name``'s source imports (any depth): ``from pkg import module`` names
    the module, ``from module import attribute`` the module."""
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = node.module
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                      for a in node.names}
    return found & set(modules)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports, with the ``__init__`` files such imports run."""
    modules = module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        running = set(_ancestors(name)) | {name}  # already being imported when ``name`` runs
        graph[name] = set()
        for target in imported_modules(name, ast.parse(path.read_text(), str(path)), modules):
            graph[name] |= {target} | {a for a in _ancestors(target) if a in modules and a not in running}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Shortest cycles, e.g. ``[a, b, a]``: one through each module of every strongly connected
    component (Tarjan) that has a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        if len(component) == 1 and component[0] not in graph.get(component[0], ()):
            continue
        for start in component:  # a shortest cycle through each member, each cycle once
            cycle = _canonical(_shortest_cycle(start, set(component), graph))
            if cycle not in cycles:
                cycles.append(cycle)
    return sorted(cycles)


def _shortest_cycle(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside its component (breadth first)."""
    paths = {w: [start, w] for w in sorted(graph[start]) if w in members}
    frontier = list(paths)
    while start not in paths:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return paths[start]


def _canonical(cycle: list[str]) -> list[str]:
    """The same cycle, started at its smallest module: ``[b, a, b]`` -> ``[a, b, a]``."""
    ring = cycle[:-1]
    i = ring.index(min(ring))
    ring = ring[i:] + ring[:i]
    return ring + ring[:1]


# --- the finder itself, on small packages written for the purpose -------------------------------

def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_finder_sees_function_level_and_relative_imports(tmp_path):
    pkg = _write_package(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "from .b import thing\n",
        "b.py": "def f():\n    from pkg import a\n    return a\n",
        "c.py": "import pkg.b\n",
    })
    assert find_cycles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_finder_sees_subpackages_and_their_init(tmp_path):
    pkg = _write_package(tmp_path / "pkg", {
        "__init__.py": "",
        "sub/__init__.py": "from .inner import x\n",
        "sub/inner.py": "x = 1\n",
        "other.py": "from .sub.inner import x\n",
        "sub/back.py": "from .. import other\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.other"] == {"pkg.sub", "pkg.sub.inner"}  # the package's __init__ runs too
    assert graph["pkg.sub.back"] == {"pkg.other"}
    assert graph["pkg.sub"] == {"pkg.sub.inner"} and find_cycles(graph) == []
    (pkg / "sub" / "inner.py").write_text("def h():\n    from ..other import x\n")
    assert find_cycles(import_graph(pkg)) == [["pkg.other", "pkg.sub", "pkg.sub.inner", "pkg.other"],
                                              ["pkg.other", "pkg.sub.inner", "pkg.other"]]


def test_finder_reports_every_cycle_and_self_imports(tmp_path):
    pkg = _write_package(tmp_path / "pkg", {
        "__init__.py": "", "a.py": "from . import b\n", "b.py": "from . import a\n",
        "c.py": "from . import d\n", "d.py": "import pkg.c as c\n", "e.py": "from .e import x\n",
    })
    assert find_cycles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.c", "pkg.d", "pkg.c"],
                                              ["pkg.e", "pkg.e"]]


# --- croft_core ---------------------------------------------------------------------------------

def test_croft_core_has_no_import_cycles():
    cycles = find_cycles(import_graph(PACKAGE_DIR))
    assert not cycles, "import cycles in croft_core:\n" + "\n".join(" -> ".join(c) for c in cycles)


@functools.cache
def _all_trees() -> tuple[tuple[str, ast.AST], ...]:
    return tuple((name, ast.parse(path.read_text(), str(path)))
                 for name, path in module_files(PACKAGE_DIR).items())


def _imported_top_packages(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def _reads_argv(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "argv" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "sys" and \
                any(a.name == "argv" for a in node.names):
            return True
    return False


def test_the_library_never_imports_gradio():
    offenders = sorted(n for n, tree in _all_trees() if {"gradio", "gradio_client"} & _imported_top_packages(tree))
    assert not offenders, f"croft_core modules importing gradio: {offenders}"


def test_only_the_cli_parses_argv():
    offenders = sorted(n for n, tree in _all_trees() if n != "croft_core.cli" and
                       ("argparse" in _imported_top_packages(tree) or _reads_argv(tree)))
    assert not offenders, f"croft_core modules other than cli.py that import argparse or read sys.argv: {offenders}"


@pytest.mark.parametrize("source, expected", [("import sys\nsys.argv[1:]\n", True),
                                              ("from sys import argv\n", True),
                                              ("import sys\nsys.exit(0)\n", False)])
def test_argv_reader_detection(source, expected):
    assert _reads_argv(ast.parse(source)) is expected


def test_plotly_stays_in_viz():
    offenders = sorted(n for n, tree in _all_trees() if n != "croft_core.runs.figures" and
                       "plotly" in _imported_top_packages(tree))
    assert not offenders, f"plotly belongs in croft_core/runs/figures.py only (the app extra); imported by {offenders}"


def test_the_public_api_resolves():
    import croft_core

    assert len(set(croft_core.__all__)) == len(croft_core.__all__)
    assert [n for n in croft_core.__all__ if not hasattr(croft_core, n)] == []


# --- layers: imports run one way, top to bottom ------------------------------------------------

REPO = PACKAGE_DIR.parent
# The one table of layers (docs/ARCHITECTURE.md draws it). A module may import its own floor or a
# lower one, never a higher one. Longest prefix wins; a package's ``__init__`` sits on its floor.
LAYERS = {
    "croft_core.errors": 0, "croft_core.seeds": 0, "croft_core.offline": 0,   # foundations
    "croft_core.data": 1,         # sources, layouts, images, vocabularies, benchmarks, the shapes world
    "croft_core.clip": 2,         # backbones, text classifiers, prompts, feature extraction
    "croft_core.ood": 3,          # scores, negative labels, threshold detector, metrics
    "croft_core.heads": 4,        # CRoFT head, baseline heads, probe, checkpoint, Hub I/O
    "croft_core.objectives": 5,   # loss terms and training steps
    "croft_core.runs": 6,         # train, evaluate, pipeline, report, figures, torchrun, pretrain
    "croft_core.cli": 7, "croft_core": 7,   # the command and the public API facade
    "croft_app.service": 8,       # what the app decides without gradio
    "croft_app.ui": 9, "croft_app": 9,      # gradio layout and wiring
}
NAMES = {0: "foundations", 1: "data", 2: "clip", 3: "ood", 4: "heads", 5: "objectives", 6: "runs",
         7: "library interface", 8: "app service", 9: "app ui"}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    raise KeyError(f"{module} is in no layer of LAYERS: add it to the table")


def upward_imports(package_dirs) -> list[str]:
    """``a -> b`` for every direct import (function-level ones included) from a lower floor up."""
    modules = {}
    for d in package_dirs:
        modules |= module_files(d)
    found = []
    for name, path in modules.items():
        for target in imported_modules(name, ast.parse(path.read_text(), str(path)), modules):
            if layer_of(target) > layer_of(name):
                found.append(f"{name} ({NAMES[layer_of(name)]}) -> {target} ({NAMES[layer_of(target)]})")
    return sorted(found)


def test_imports_run_one_way_down_the_layers():
    offenders = upward_imports([PACKAGE_DIR, REPO / "croft_app"])
    assert not offenders, "imports from a lower layer up to a higher one:\n" + "\n".join(offenders)


def test_layer_check_catches_an_upward_import(tmp_path):
    root = _write_package(tmp_path, {"croft_core/__init__.py": "", "croft_core/data/__init__.py": "",
                                     "croft_core/data/x.py": "def f():\n    from croft_core.runs import y\n",
                                     "croft_core/runs/__init__.py": "", "croft_core/runs/y.py": ""})
    assert upward_imports([root / "croft_core"]) == ["croft_core.data.x (data) -> croft_core.runs.y (runs)"]


def test_every_module_has_a_layer_and_the_top_level_stays_small():
    for d in (PACKAGE_DIR, REPO / "croft_app"):
        for name in module_files(d):
            layer_of(name)
    top = sorted(p.name for p in PACKAGE_DIR.glob("*.py"))
    assert len(top) <= 8, top


def test_no_module_is_shadowed_by_a_public_name():
    """``import croft_core.runs.train`` gives the module: no package binds a public name that is
    also one of its submodules (``croft_core.train`` is the function; no module has that name)."""
    import importlib

    shadowed = []
    for d in (PACKAGE_DIR, REPO / "croft_app"):
        for name, path in module_files(d).items():
            if path.name != "__init__.py":
                continue
            package = importlib.import_module(name)
            subs = {p.stem for p in path.parent.glob("*.py")} | {p.parent.name for p in path.parent.glob("*/__init__.py")}
            for sub in subs - {"__init__"}:
                value = getattr(package, sub, None)
                if value is not None and not inspect.ismodule(value):
                    shadowed.append(f"{name}.{sub}")
    assert not shadowed, f"names that hide a submodule: {shadowed}"


def test_app_functions_stay_short():
    """Functions of the app (ui and service) are under 60 lines: a longer one is doing two jobs."""
    long = []
    for path in sorted((REPO / "croft_app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 59:
                long.append(f"{path.relative_to(REPO)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
