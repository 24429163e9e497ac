"""The import layers, checked by walking every module's imports with ``ast``.

Every ``.py`` of the package is parsed and its imports resolved (relative ones too) to the project's
modules. Three kinds are told apart: imports that run when the module is imported, imports inside a
function (they run when it is called) and imports under ``if TYPE_CHECKING:`` (they never run).

- Layer rules hold for every import a module makes, of any kind, and for what that import loads in turn
  outside the module's own layer: a layer cannot reach a forbidden one through a package ``__init__`` or
  a go-between module either. (Inside its own layer, each module answers for its own imports.)
- No import cycle: the graph of imports that run at import time (function-level and TYPE_CHECKING ones
  are left out: they do not run while the modules load) has no strongly connected component.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "multipassdedup"
ROOT = Path(__file__).resolve().parent.parent  # the repository root is the package


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


P = PACKAGE
# (importing package, packages it must not import, directly or through what it imports)
RULES: list[tuple[str, tuple[str, ...]]] = [
    (f"{P}.core", (f"{P}.daemon", f"{P}.client", f"{P}.proto", f"{P}.bench")),
    (f"{P}.daemon", (f"{P}.client",)),
    (f"{P}.core.layers", (f"{P}.core.networks", f"{P}.core.models", f"{P}.core.pipeline")),
    (f"{P}.core.networks", (f"{P}.core.models", f"{P}.core.pipeline")),
    (f"{P}.core.models", (f"{P}.core.pipeline",)),
    (f"{P}.weights", (f"{P}.daemon", f"{P}.client", f"{P}.proto", f"{P}.bench")),
    (f"{P}.proto", (f"{P}.core", f"{P}.daemon", f"{P}.client", f"{P}.bench")),
]

MODULE, DEFERRED, TYPING = "module", "deferred", "typing"


@dataclass(frozen=True)
class Import:
    """One import of a project module: who imports what, where, and when it runs."""

    source: str
    target: str
    line: int
    kind: str  # MODULE: at import time; DEFERRED: inside a function; TYPING: under TYPE_CHECKING


def project_modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of the package: the ``.py`` files in folders that have an ``__init__.py``."""
    modules: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (here / d / "__init__.py").is_file())
        prefix = [package, *here.relative_to(root).parts]
        for f in sorted(filenames):
            if f.endswith(".py"):
                modules[".".join(prefix if f == "__init__.py" else [*prefix, f[:-3]])] = here / f
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    """(module or None, level, names, line, kind) of every import statement, with when it runs."""

    def __init__(self) -> None:
        self.found: list[tuple[str | None, int, list[str], int, str]] = []
        self._kinds = [MODULE]

    def _visit_within(self, kind: str, nodes: Iterable[ast.AST]) -> None:
        outer = self._kinds[-1]
        self._kinds.append(TYPING if TYPING in (outer, kind) else kind if outer == MODULE else outer)
        for node in nodes:
            self.visit(node)
        self._kinds.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:  # noqa: N802
        for part in (*node.decorator_list, node.args):  # these run when the function is defined
            self.visit(part)
        self._visit_within(DEFERRED, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_If(self, node: ast.If) -> None:  # noqa: N802
        if _is_type_checking(node.test):
            self._visit_within(TYPING, node.body)
            for n in node.orelse:
                self.visit(n)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        for alias in node.names:
            self.found.append((alias.name, 0, [], node.lineno, self._kinds[-1]))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        self.found.append((node.module, node.level, [a.name for a in node.names], node.lineno, self._kinds[-1]))


def _resolve(source: str, is_package: bool, module: str | None, level: int) -> str:
    """The absolute name ``from {'.' * level}{module} import ...`` refers to, written in module ``source``."""
    if level == 0:
        return module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    if level - 1 >= len(base):
        raise ValueError(f"{source}: relative import beyond the top-level package")
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def project_imports(modules: dict[str, Path], package: str) -> list[Import]:
    """Every import of a project module made by a project module."""
    imports = []
    for source, path in modules.items():
        collector = _Collector()
        collector.visit(ast.parse(path.read_text(), str(path)))
        for module, level, names, line, kind in collector.found:
            target = _resolve(source, path.name == "__init__.py", module, level)
            if not _in(target, package):
                continue
            # ``from pkg import name`` imports the module pkg.name when there is one, else takes a name from pkg.
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for t in submodules or [target]:
                imports.append(Import(source, t, line, kind))
            if submodules and len(submodules) < len(names):
                imports.append(Import(source, target, line, kind))
    return imports


def layer_violations(imports: list[Import], rules: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """Each import by a module of a ruled package that reaches a forbidden package, with the chain it takes.

    The chain follows what importing a module runs at once, through modules outside the ruled package only:
    a module inside it is checked on its own.
    """
    loads: dict[str, list[str]] = {}  # what importing a module runs at once
    for i in imports:
        if i.kind == MODULE:
            loads.setdefault(i.source, []).append(i.target)
    problems = []
    for i in imports:
        for package, forbidden in rules:
            if not _in(i.source, package):
                continue
            parent = {i.target: ""}
            queue = deque([i.target])
            while queue:
                name = queue.popleft()
                if any(_in(name, f) for f in forbidden):
                    chain = [name]
                    while parent[chain[-1]]:
                        chain.append(parent[chain[-1]])
                    via = " -> ".join(reversed(chain))
                    problems.append(f"{i.source}:{i.line} ({i.kind}) imports {via}: {package} must not import "
                                    f"{', '.join(forbidden)}")
                    break
                if _in(name, package):
                    continue
                for nxt in loads.get(name, []):
                    if nxt not in parent:
                        parent[nxt] = name
                        queue.append(nxt)
    return sorted(set(problems))


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """The strongly connected components (Tarjan) of the import-time graph that are cycles."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.kind == MODULE:
            graph.setdefault(i.source, set()).add(i.target)
            graph.setdefault(i.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return project_modules(ROOT, PACKAGE)


@pytest.fixture(scope="module")
def imports(modules) -> list[Import]:
    return project_imports(modules, PACKAGE)


def test_the_walk_sees_the_whole_package(modules, imports) -> None:
    assert len(modules) > 80 and not any(".tests" in m for m in modules)
    for name in ("core", "core.layers.warp", "core.models.registry", "core.pipeline.multipass", "daemon.scheduler",
                 "weights.store", "proto.mpd_pb2", "client.main", "bench.speed", "units"):
        assert f"{PACKAGE}.{name}" in modules, name
    edges = {(i.source, i.target, i.kind) for i in imports}
    assert (f"{P}.core.models.rife", f"{P}.core.models.registry", MODULE) in edges  # relative, to a sibling
    assert (f"{P}.core.models", f"{P}.core.models.rife", MODULE) in edges  # ``from . import rife``
    assert (f"{P}.core.models.rife", f"{P}.weights", MODULE) in edges  # ``from ...weights import``
    assert (f"{P}.weights.cli", f"{P}.core.models.registry", DEFERRED) in edges  # inside a function


def test_every_project_import_names_a_module_that_exists(modules, imports) -> None:
    missing = sorted(f"{i.source}:{i.line} imports {i.target}" for i in imports if i.target not in modules)
    assert not missing, "\n".join(missing)


def test_layers_import_only_what_they_may(imports) -> None:
    problems = layer_violations(imports, RULES)
    assert not problems, "\n".join(problems)


def test_no_import_cycle(imports) -> None:
    cycles = import_cycles(imports)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_weights_imports_without_torch() -> None:
    code = ("import sys\n"
            "import multipassdedup.weights, multipassdedup.weights.cli, multipassdedup.weights.fetch\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_checks_catch_a_forbidden_import_and_a_cycle(tmp_path) -> None:
    """The walk on a small package of the same shape that breaks each rule once."""
    files = {
        "__init__.py": "",
        "units.py": "from .daemon import service\n",
        "core/__init__.py": "from .models import Interpolator\n",
        "core/layers/__init__.py": "",
        "core/layers/frames.py": "from .. import Interpolator\n",  # reaches the models through core's __init__
        "core/models/__init__.py": "from .base import Interpolator\n",
        "core/models/base.py": "from ...daemon import service\nInterpolator = object\n",
        "daemon/__init__.py": "",
        "daemon/service.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..client import main\n"
                              "def later():\n    from ..core.models import base\n"),
        "client/__init__.py": "",
        "client/main.py": "from . import watch\n",
        "client/watch.py": "import multipassdedup.client.main\n",
        "weights/__init__.py": "",
        "weights/cli.py": "from ..units import helper\n",  # reaches the daemon through a module of no layer
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = project_imports(project_modules(tmp_path, PACKAGE), PACKAGE)
    problems = [p.split(": ")[0] for p in layer_violations(found, RULES)]
    assert problems == [f"{P}.core.layers.frames:1 (module) imports {P}.core -> {P}.core.models",
                        f"{P}.core.models.base:1 (module) imports {P}.daemon.service",
                        f"{P}.daemon.service:3 (typing) imports {P}.client.main",
                        f"{P}.weights.cli:1 (module) imports {P}.units -> {P}.daemon.service"]
    # daemon.service's function-level import of core runs no rule (daemon may import core) and no cycle.
    assert import_cycles(found) == [[f"{P}.client.main", f"{P}.client.watch"]]
