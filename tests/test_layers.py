"""The import layers, checked by walking every module's imports with ``ast``.

Every ``.py`` of the package is parsed and its imports resolved (relative ones too) to the project's
modules. Three kinds are told apart: imports that run when the module is imported, imports inside a
function (they run when it is called) and imports under ``if TYPE_CHECKING:`` (they never run).

- Layer rules hold for every import a module makes, of any kind, and for what that import loads in turn
  outside the module's own layer: a layer cannot reach a forbidden one through a package ``__init__`` or
  a go-between module either. (Inside its own layer, each module answers for its own imports.)
- No import cycle: the graph of imports that can run (function-level ones included; TYPE_CHECKING ones
  never run) has no strongly connected component.
- A rule may also name a watched outside package (PyAV, ``av``): the torch-free, PyAV-free parts of
  the client are checked the same way.
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
C = f"{P}.client"
#: The modules every layer shares (settings, escaping, signals, ...): they import nothing of the package.
SHARED = tuple(f"{P}.{m}" for m in ("settings", "escaping", "stop_signals", "systemd_notify", "units", "engine_extra"))
#: The client's base: its errors, rates and progress line, the engine flags, what every part of the client uses.
CLIENT_BASE = (f"{C}.errors", f"{C}.rates", f"{C}.progress", f"{C}.engine_flags")
#: The client's command-line layer, on top of its parts: nothing below it imports it.
CLIENT_COMMANDS = (f"{C}.main", f"{C}.options", f"{C}.demo")
#: The VapourSynth filter's public entry, ``multipassdedup.vapoursynth`` (its code is in ``client.vapoursynth``).
VAPOURSYNTH = f"{P}.vapoursynth"
LAYERS = (f"{P}.core", f"{P}.daemon", f"{P}.client", f"{P}.proto", f"{P}.bench", f"{P}.weights", f"{P}.commands")
# (importing package or module, what it must not import, directly or through what it imports); "av" is PyAV
RULES: list[tuple[str, tuple[str, ...]]] = [
    (f"{P}.core", (f"{P}.daemon", f"{P}.client", f"{P}.proto", f"{P}.bench", f"{P}.commands")),
    (f"{P}.daemon", (f"{P}.client", f"{P}.commands")),
    (f"{P}.client", (f"{P}.daemon", f"{P}.commands")),
    (f"{P}.core.layers", (f"{P}.core.networks", f"{P}.core.models", f"{P}.core.pipeline")),
    (f"{P}.core.networks", (f"{P}.core.models", f"{P}.core.pipeline")),
    (f"{P}.core.models", (f"{P}.core.pipeline",)),
    (f"{P}.weights", (f"{P}.core", f"{P}.daemon", f"{P}.client", f"{P}.proto", f"{P}.bench", f"{P}.commands")),
    (f"{P}.proto", (f"{P}.core", f"{P}.daemon", f"{P}.client", f"{P}.bench", f"{P}.commands")),
    *((shared, LAYERS + tuple(s for s in SHARED if s != shared)) for shared in SHARED),
    # the client's parts: base < media, remote < engine, placement < pipe, file < chunks < commands; watch apart
    *((base, (f"{C}.media", f"{C}.remote", f"{C}.pipe", f"{C}.file", f"{C}.chunks", f"{C}.watch", f"{C}.engine",
              f"{C}.placement", *CLIENT_COMMANDS)) for base in CLIENT_BASE),
    (f"{C}.media", (f"{C}.remote", f"{C}.pipe", f"{C}.file", f"{C}.chunks", f"{C}.watch", f"{C}.engine",
                    f"{C}.placement", *CLIENT_COMMANDS, f"{P}.proto")),
    (f"{C}.remote", ("av", f"{C}.media", f"{C}.pipe", f"{C}.file", f"{C}.chunks", f"{C}.watch", f"{C}.engine",
                     f"{C}.placement", *CLIENT_COMMANDS)),
    (f"{C}.engine", ("av", f"{C}.remote", f"{C}.pipe", f"{C}.file", f"{C}.chunks", f"{C}.watch",
                     f"{C}.placement", *CLIENT_COMMANDS)),
    (f"{C}.placement", ("av", f"{C}.pipe", f"{C}.file", f"{C}.chunks", f"{C}.watch", *CLIENT_COMMANDS)),
    (f"{C}.pipe", (f"{C}.file", f"{C}.chunks", f"{C}.watch", *CLIENT_COMMANDS)),
    (f"{C}.file", (f"{C}.pipe", f"{C}.chunks", f"{C}.watch", *CLIENT_COMMANDS)),
    (f"{C}.chunks", (f"{C}.pipe", f"{C}.watch", *CLIENT_COMMANDS)),
    # the drop folder runs mpd-client processes: no engine, no media of its own, no gRPC session
    (f"{C}.watch", ("av", f"{P}.core", f"{C}.media", f"{C}.pipe", f"{C}.file", f"{C}.chunks",
                    f"{C}.remote.session", *CLIENT_COMMANDS)),
    # the VapourSynth filter and its public entry: torch-free (the in-process engine only through placement), no
    # daemon, no pipe or file mode, no command line
    *((vs_part, (f"{P}.core", f"{P}.daemon", f"{P}.commands", f"{C}.pipe", f"{C}.file", f"{C}.watch",
                 *CLIENT_COMMANDS)) for vs_part in (f"{C}.vapoursynth", VAPOURSYNTH)),
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

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for part in (*node.decorator_list, node.args):  # these run when the function is defined
            self.visit(part)
        self._visit_within(DEFERRED, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._visit_within(TYPING, node.body)
            for n in node.orelse:
                self.visit(n)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, 0, [], node.lineno, self._kinds[-1]))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
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


#: Outside packages that a rule may name (PyAV: the parts of the client that must work without it).
WATCHED_EXTERNAL = ("av",)


def project_imports(modules: dict[str, Path], package: str) -> list[Import]:
    """Every import of a project module made by a project module, and of the watched outside packages."""
    imports = []
    for source, path in modules.items():
        collector = _Collector()
        collector.visit(ast.parse(path.read_text(), str(path)))
        for module, level, names, line, kind in collector.found:
            target = _resolve(source, path.name == "__init__.py", module, level)
            if not _in(target, package):
                top = target.split(".")[0] if target else ""
                for name in [top] if top else [n.split(".")[0] for n in names]:
                    if name in WATCHED_EXTERNAL:
                        imports.append(Import(source, name, line, kind))
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
    """The strongly connected components (Tarjan) of the import graph that are cycles.

    Function-level imports count: a cycle through one is still two modules that each need the other.
    Imports under ``if TYPE_CHECKING:`` do not (they never run).
    """
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.kind != TYPING:
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
    assert (f"{P}.commands", f"{P}.core.models.registry", DEFERRED) in edges  # inside a function
    assert (f"{P}.client.media.colour", "av", MODULE) in edges  # a watched outside package


def test_every_project_import_names_a_module_that_exists(modules, imports) -> None:
    missing = sorted(f"{i.source}:{i.line} imports {i.target}" for i in imports
                     if i.target not in modules and i.target not in WATCHED_EXTERNAL)
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
    assert problems == [f"{P}.client.watch:1 (module) imports {P}.client.main",
                        f"{P}.core.layers.frames:1 (module) imports {P}.core -> {P}.core.models",
                        f"{P}.core.models.base:1 (module) imports {P}.daemon.service",
                        f"{P}.daemon.service:3 (typing) imports {P}.client.main",
                        f"{P}.units:1 (module) imports {P}.daemon.service",
                        f"{P}.weights.cli:1 (module) imports {P}.units -> {P}.daemon.service"]
    # daemon.service's function-level import of core breaks no rule (daemon may import core), but closes a cycle
    # through core.models.base's import of the daemon: function-level imports count.
    assert import_cycles(found) == [[f"{P}.client.main", f"{P}.client.watch"],
                                    [f"{P}.core.models.base", f"{P}.daemon.service"]]


def _first_module(package: str) -> str:
    """A module of ``package``: the package's ``probe`` module, or the module itself when the rule names one."""
    is_module = package in SHARED or package in CLIENT_BASE or package == VAPOURSYNTH or \
        package.endswith((".engine", ".placement"))
    return package if is_module else package + ".probe"


@pytest.mark.parametrize("rule", RULES, ids=[r[0].removeprefix(P + ".") for r in RULES])
def test_each_rule_catches_an_injected_violation(tmp_path, rule) -> None:
    """For every rule: a module of the ruled package that imports each forbidden one inside a function is caught."""
    package, forbidden = rule
    source = _first_module(package)
    files: dict[str, str] = {"__init__.py": ""}

    def add_module(name: str, text: str) -> None:
        parts = name.split(".")[1:]
        for i in range(1, len(parts)):
            files.setdefault("/".join(parts[:i]) + "/__init__.py", "")
        files["/".join(parts) + ".py"] = text

    body = "".join(f"    import {f}\n" for f in forbidden)
    add_module(source, f"def later():\n{body}")
    for f in forbidden:
        if f not in WATCHED_EXTERNAL and "/".join(f.split(".")[1:]) + ".py" not in files:
            add_module(f, "")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = project_imports(project_modules(tmp_path, PACKAGE), PACKAGE)
    caught = {p.split(" imports ")[1].split(":")[0] for p in layer_violations(found, [rule])}
    assert caught == set(forbidden)
