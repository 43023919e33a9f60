"""The engine package's architecture, checked from source with `ast` (nothing is imported):

(a) nothing under `cdm_core/` imports Streamlit, in any form, at any depth (function bodies too);
(b) the layers, lowest first, are foundation (config, errors, settings, runtime) -> data ->
    engine -> latent -> pipeline -> analysis -> report -> cli (`LAYERS`, and the lists in
    docs/architecture.md, docs/README.md and the package docstring, checked to match); a module
    imports only from its own layer or lower ones
    (absolute and relative imports, module-level and function-level alike). `cdm_core/__init__.py`
    and `cdm_core/__main__.py` may import anything; importing the package root from inside the
    package counts as importing everything the root imports;
(c) the module import graph (function-level imports included) has no cycles;
(d) the engine is pure: it imports only the foundation and the `Dataset` container, and calls no
    file-system function (files, caches, the latent space and Ray live in cdm_core.pipeline).

The checker works on a {path: source} mapping, so the tests at the bottom feed it synthetic
packages with known violations and make sure each one is reported (and a clean one is not).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "cdm_core"
LAYERS = ("foundation", "data", "engine", "latent", "pipeline", "analysis", "report", "cli")  # lowest first
FOUNDATION = {"cdm_core.config", "cdm_core.errors", "cdm_core.settings", "cdm_core.runtime", "cdm_core.patches"}
FREE = {"cdm_core", "cdm_core.__main__"}  # the package root and the entry point may import anything
FORBIDDEN = "streamlit"


# --------------------------------------------------------------------------------------------
# the checker


@dataclass(frozen=True)
class Import:
    path: str  # file, relative to the repository root
    line: int
    importer: str  # dotted module name of the importing file
    name: str  # absolute dotted name as written (relative imports resolved), e.g. cdm_core.data.files.load_bytes
    target: str | None  # the module of `cdm_core` it resolves to; None outside the package
    text: str  # the import statement as written
    in_function: bool

    def where(self) -> str:
        scope = "inside a function" if self.in_function else "at module level"
        return f"{self.path}:{self.line} ({scope}): `{self.text}`"


def module_name(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: str) -> bool:
    return Path(path).name == "__init__.py"


def layer_of(module: str) -> int | None:
    """Index into LAYERS; None for the modules that may import anything. Raises KeyError for a
    module assigned to no layer (a new top-level module must be placed in the table above)."""
    if module in FREE:
        return None
    if module in FOUNDATION:
        return 0
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == PKG and parts[1] in LAYERS[1:]:
        return LAYERS.index(parts[1])
    raise KeyError(module)


class _Collector(ast.NodeVisitor):
    def __init__(self, path: str, source: str, modules: set[str], packages: set[str]):
        self.path, self.source, self.modules, self.packages = path, source, modules, packages
        self.module = module_name(path)
        self.depth = 0
        self.found: list[Import] = []

    def _resolve(self, dotted: str) -> str | None:
        """The module of the package that importing `dotted` runs: the longest existing prefix
        (`from cdm_core import settings` -> cdm_core.settings; `from cdm_core import
        __version__` -> cdm_core, the root)."""
        if dotted.startswith("?"):
            return dotted  # a relative import above the top package
        if dotted != PKG and not dotted.startswith(PKG + "."):
            return None
        parts = dotted.split(".")
        for k in range(len(parts), 0, -1):
            candidate = ".".join(parts[:k])
            if candidate in self.modules:
                return candidate
            if candidate in self.packages:  # a namespace package (no __init__.py): only its own name
                return candidate if k == len(parts) else "?" + dotted
        return "?" + dotted  # names nothing that exists under cdm_core

    def _add(self, node: ast.AST, dotted: str, text: str | None = None) -> None:
        self.found.append(Import(self.path, node.lineno, self.module, dotted, self._resolve(dotted),
                                 text or ast.get_source_segment(self.source, node) or ast.unparse(node),
                                 self.depth > 0))

    def _scoped(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scoped

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".")
            if not is_package(self.path):
                base = base[:-1]
            base = base[:len(base) - (node.level - 1)]
            if not base:
                self._add(node, "?" + "." * node.level + (node.module or ""))
                return
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module
        for alias in node.names:
            # `from a import b` runs a.b when that is a module, else just a
            self._add(node, prefix if alias.name == "*" else f"{prefix}.{alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("x") and __import__("x") count as imports of "x"
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            self._add(node, node.args[0].value)
        self.generic_visit(node)


def collect_imports(sources: dict[str, str]) -> list[Import]:
    """Every import in every file of {path relative to the repository root: source}."""
    modules = {module_name(p) for p in sources}
    packages = {".".join(Path(p).parts[:k]) for p in sources for k in range(1, len(Path(p).parts))}
    found = []
    for path, source in sorted(sources.items()):
        c = _Collector(path, source, modules, packages)
        c.visit(ast.parse(source, filename=path))
        found += c.found
    return found


def streamlit_imports(imports: list[Import]) -> list[str]:
    return [f"{i.importer} imports {i.name.split('.')[0]} at {i.where()}" for i in imports
            if i.name == FORBIDDEN or i.name.startswith(FORBIDDEN + ".")]


def unresolved_imports(imports: list[Import]) -> list[str]:
    return [f"{i.importer} imports {i.name.lstrip('?')}, which is no module under {PKG}, at {i.where()}"
            for i in imports if i.target is not None and i.target.startswith("?")]


def graph(imports: list[Import]) -> dict[str, dict[str, Import]]:
    """importer -> {imported module: first import statement that makes the edge}."""
    g: dict[str, dict[str, Import]] = {}
    for i in imports:
        g.setdefault(i.importer, {})
        if i.target is not None and not i.target.startswith("?"):
            g[i.importer].setdefault(i.target, i)
    return g


def effective_layer(module: str, g: dict[str, dict[str, Import]]) -> int:
    """A module's own layer; for the package root, the highest layer it imports directly
    (importing the root runs those modules; each of them is checked on its own)."""
    own = layer_of(module)
    if own is not None:
        return own
    seen, stack, top = {module}, [module], 0
    while stack:
        for nxt in g.get(stack.pop(), {}):
            if nxt in seen:
                continue
            seen.add(nxt)
            try:
                layer = layer_of(nxt)
            except KeyError:
                continue  # reported as unassigned on its own
            if layer is None:
                stack.append(nxt)  # through the root or the entry point: what they import
            else:
                top = max(top, layer)
    return top


def layer_violations(imports: list[Import]) -> list[str]:
    g = graph(imports)
    problems, unassigned = [], set()
    for importer in sorted(g):
        try:
            own = layer_of(importer)
        except KeyError:
            unassigned.add(importer)
            continue
        if own is None:
            continue
        for target, imp in sorted(g[importer].items()):
            try:
                theirs = effective_layer(target, g)
            except KeyError:
                unassigned.add(target)
                continue
            if theirs > own:
                via = "" if layer_of(target) is not None else \
                    f" (the package root, which pulls in the {LAYERS[theirs]} layer)"
                problems.append(f"{importer} ({LAYERS[own]} layer) imports {target} ({LAYERS[theirs]} layer){via} "
                                f"at {imp.where()}")
    problems += [f"{m} is in no layer: add it to FOUNDATION or put it under one of "
                 f"{', '.join(f'{PKG}/{layer}/' for layer in LAYERS[1:])}" for m in sorted(unassigned)]
    return problems


def import_cycles(imports: list[Import]) -> list[str]:
    """One cycle per strongly connected component of the module graph (Tarjan), spelled out with
    the import statement behind each edge."""
    g = graph(imports)
    index, low, on_stack, stack, sccs, counter = {}, {}, set(), [], [], [0]

    def strongconnect(v: str) -> None:  # the graph has tens of nodes: recursion is fine
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, {})):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strongconnect(v)

    cycles = []
    for comp in sccs:
        members = set(comp)
        start = comp[0]
        if len(comp) == 1 and start not in g.get(start, {}):
            continue
        # shortest path from start back to start inside the component (breadth first)
        prev, frontier, found = {}, [start], None
        while frontier and found is None:
            nxt_frontier = []
            for v in frontier:
                for w in sorted(g.get(v, {})):
                    if w == start:
                        found = v
                        break
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt_frontier.append(w)
                if found is not None:
                    break
            frontier = nxt_frontier
        path, v = [start], found
        while v != start:
            path.insert(1, v)
            v = prev[v]
        path.append(start)
        edges = "; ".join(f"{a} -> {b} at {g[a][b].where()}" for a, b in zip(path, path[1:]))
        cycles.append(f"import cycle {' -> '.join(path)} ({edges})")
    return cycles


def package_sources(root: Path = ROOT) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted((root / PKG).rglob("*.py")) if "__pycache__" not in p.parts}


# --------------------------------------------------------------------------------------------
# the real package


@pytest.fixture(scope="module")
def real_imports() -> list[Import]:
    sources = package_sources()
    assert len(sources) > 10 and f"{PKG}/__init__.py" in sources
    return collect_imports(sources)


def test_cdm_core_never_imports_streamlit(real_imports):
    problems = streamlit_imports(real_imports)
    assert not problems, "cdm_core must not depend on Streamlit:\n" + "\n".join(problems)


def test_cdm_core_imports_resolve(real_imports):
    problems = unresolved_imports(real_imports)
    assert not problems, "\n".join(problems)


def test_layers_import_only_their_own_or_lower_layers(real_imports):
    problems = layer_violations(real_imports)
    assert not problems, "layer order " + " -> ".join(LAYERS) + " broken:\n" + \
        "\n".join(problems)


def test_no_import_cycles(real_imports):
    cycles = import_cycles(real_imports)
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_the_known_edges(real_imports):
    """Guards against a checker that finds nothing: edges that exist today, of each kind."""
    g = graph(real_imports)
    assert "cdm_core.errors" in g["cdm_core.data.files"]  # module level, from-import
    assert "cdm_core.cli.main" in g["cdm_core.__main__"]
    assert sum(map(len, g.values())) > 30
    assert any(i.in_function and i.target and not i.target.startswith("?") for i in real_imports)


# --------------------------------------------------------------------------------------------
# the checker on synthetic packages

CLEAN = {
    "cdm_core/__init__.py": "from cdm_core.engine.run import go\nfrom cdm_core.errors import Bad\n__version__ = '1'\n",
    "cdm_core/__main__.py": "from cdm_core.cli.main import main\n",
    "cdm_core/errors.py": "class Bad(ValueError):\n    pass\n",
    "cdm_core/settings.py": "import os\nfrom cdm_core.errors import Bad\n",
    "cdm_core/config.py": "from .errors import Bad\n",
    "cdm_core/data/files.py": "import numpy\nfrom cdm_core import settings\nfrom cdm_core.errors import Bad\n",
    "cdm_core/engine/run.py": "from cdm_core.data import files\nfrom ..config import Bad\nfrom . import util\n",
    "cdm_core/engine/util.py": "import math\n",
    "cdm_core/report/export.py": "def version():\n    from cdm_core import __version__\n    return __version__\n",
    "cdm_core/cli/main.py": "import cdm_core.report.export\nfrom cdm_core.analysis import stats\n",
    "cdm_core/analysis/stats.py": "from cdm_core.engine.run import go\n",
}


def check_all(sources: dict[str, str]) -> list[str]:
    imports = collect_imports(sources)
    return streamlit_imports(imports) + unresolved_imports(imports) + layer_violations(imports) + import_cycles(imports)


def with_file(path: str, source: str) -> dict[str, str]:
    return CLEAN | {path: source}


def test_checker_passes_a_clean_package():
    assert check_all(CLEAN) == []
    g = graph(collect_imports(CLEAN))
    assert g["cdm_core.data.files"].keys() == {"cdm_core.settings", "cdm_core.errors"}  # not the root
    assert g["cdm_core.engine.run"].keys() == {"cdm_core.data.files", "cdm_core.config", "cdm_core.engine.util"}
    assert g["cdm_core.report.export"].keys() == {"cdm_core"}  # the root, for a name defined there


@pytest.mark.parametrize("source", [
    "import streamlit\n",
    "import streamlit as st\n",
    "import streamlit.components.v1 as components\n",
    "from streamlit import session_state\n",
    "from streamlit.runtime import exists\n",
    "def f():\n    import streamlit as st\n    return st\n",
    "class A:\n    def m(self):\n        if True:\n            from streamlit import cache_data\n",
    "import importlib\nst = importlib.import_module('streamlit')\n",
    "st = __import__('streamlit.delta_generator')\n",
    "try:\n    import streamlit\nexcept ImportError:\n    streamlit = None\n",
])
def test_checker_reports_any_streamlit_import(source):
    problems = streamlit_imports(collect_imports(with_file("cdm_core/report/figures.py", source)))
    assert len(problems) == 1, problems
    assert problems[0].startswith("cdm_core.report.figures imports streamlit at cdm_core/report/figures.py:")
    assert "streamlit" in problems[0].split("`")[1]  # quotes the statement


@pytest.mark.parametrize("path,source,importer,target,statement", [
    ("cdm_core/data/bad.py", "from cdm_core.engine.run import go\n", "cdm_core.data.bad", "cdm_core.engine.run",
     "from cdm_core.engine.run import go"),
    ("cdm_core/data/bad.py", "def f():\n    from ..engine import run\n", "cdm_core.data.bad", "cdm_core.engine.run",
     "from ..engine import run"),
    ("cdm_core/errors.py", "import cdm_core.data.files\n", "cdm_core.errors", "cdm_core.data.files",
     "import cdm_core.data.files"),
    ("cdm_core/settings.py", "def f():\n    from cdm_core.cli import main\n", "cdm_core.settings", "cdm_core.cli.main",
     "from cdm_core.cli import main"),
    ("cdm_core/engine/bad.py", "from cdm_core.analysis.stats import x\n", "cdm_core.engine.bad",
     "cdm_core.analysis.stats", "from cdm_core.analysis.stats import x"),
    # the root imports the engine, so a data module that imports the root depends on the engine
    ("cdm_core/data/bad.py", "from cdm_core import __version__\n", "cdm_core.data.bad", "cdm_core",
     "from cdm_core import __version__"),
])
def test_checker_reports_an_upward_import(path, source, importer, target, statement):
    problems = layer_violations(collect_imports(with_file(path, source)))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{importer} (") and f" imports {target} (" in problems[0], problems
    assert f"{path}:" in problems[0] and f"`{statement}`" in problems[0], problems


def test_checker_reports_a_module_in_no_layer():
    problems = layer_violations(collect_imports(with_file("cdm_core/misc.py", "from cdm_core.errors import Bad\n")))
    assert len(problems) == 1 and problems[0].startswith("cdm_core.misc is in no layer"), problems


def test_checker_reports_an_import_of_nothing():
    sources = with_file("cdm_core/engine/x.py", "from cdm_core.engine.nope import y\n")
    problems = unresolved_imports(collect_imports(sources))
    assert len(problems) == 1 and "cdm_core.engine.nope.y" in problems[0] and "cdm_core/engine/x.py:1" in problems[0]


def test_checker_reports_a_cycle_through_a_function_level_import():
    sources = CLEAN | {"cdm_core/engine/a.py": "from cdm_core.engine.b import g\n",
                       "cdm_core/engine/b.py": "def g():\n    from cdm_core.engine import c\n",
                       "cdm_core/engine/c.py": "import cdm_core.engine.a\n"}
    cycles = import_cycles(collect_imports(sources))
    assert len(cycles) == 1, cycles
    assert cycles[0].startswith("import cycle cdm_core.engine.a -> cdm_core.engine.b -> cdm_core.engine.c -> "
                                "cdm_core.engine.a")
    assert "cdm_core/engine/b.py:2 (inside a function): `from cdm_core.engine import c`" in cycles[0]
    assert layer_violations(collect_imports(sources)) == []  # same layer: only the cycle check sees it


def test_checker_reports_a_cycle_through_the_package_root():
    # root -> run -> util -> root
    sources = with_file("cdm_core/engine/util.py", "def f():\n    from cdm_core import go\n")
    cycles = import_cycles(collect_imports(sources))
    assert len(cycles) == 1, cycles
    assert "cdm_core -> cdm_core.engine.run -> cdm_core.engine.util -> cdm_core" in cycles[0], cycles


def test_checker_reports_a_module_importing_itself():
    cycles = import_cycles(collect_imports(with_file("cdm_core/engine/util.py", "from cdm_core.engine import util\n")))
    assert cycles == ["import cycle cdm_core.engine.util -> cdm_core.engine.util (cdm_core.engine.util -> "
                      "cdm_core.engine.util at cdm_core/engine/util.py:1 (at module level): "
                      "`from cdm_core.engine import util`)"]


def test_checker_finds_bad_imports_added_to_a_copy_of_the_real_package():
    """The real sources, in memory, with three bad imports appended to one module's copy."""
    sources = package_sources()
    sources["cdm_core/data/files.py"] += ("\n\ndef _bad():\n    import streamlit as st\n"
                                          "    from cdm_core.report.export import export_bundle\n"
                                          "    from cdm_core import sample\n")
    imports = collect_imports(sources)
    assert any(p.startswith("cdm_core.data.files imports streamlit at cdm_core/data/files.py:")
               for p in streamlit_imports(imports))
    upward = [p for p in layer_violations(imports) if p.startswith("cdm_core.data.files (data layer)")]
    assert len(upward) == 2, upward
    assert any(" imports cdm_core.report.export (report layer) " in p for p in upward)
    assert any(" imports cdm_core (pipeline layer) (the package root" in p for p in upward)
    # data.files -> root -> data.registry -> data.files
    assert any(c.startswith("import cycle ") and "cdm_core.data.files -> cdm_core" in c for c in import_cycles(imports))


# --------------------------------------------------------------------------------------------
# the pure engine and the documented layers

# What the engine may import from the rest of the package: the foundation and the data set
# container (a Dataset is arrays with a name). Never files, caches, the latent space, Ray's
# lifecycle, analysis, reports, the CLI or the UI (those sit in cdm_core.pipeline and above).
ENGINE_MAY_IMPORT = FOUNDATION | {"cdm_core.data.dataset"}
FILE_CALLS = {"open", "load", "save", "savez", "savez_compressed", "fromfile", "tofile", "read_bytes",
              "read_text", "write_bytes", "write_text", "memmap", "mkdir", "unlink"}


def engine_impurities(sources: dict[str, str]) -> list[str]:
    """Imports of engine modules outside the engine and ENGINE_MAY_IMPORT, and file-system calls."""
    problems = [f"{i.importer} imports {i.target} at {i.where()}" for i in collect_imports(sources)
                if i.importer.startswith(f"{PKG}.engine") and i.target is not None
                and not i.target.startswith(f"{PKG}.engine") and i.target not in ENGINE_MAY_IMPORT]
    for path, source in sorted(sources.items()):
        if not path.startswith(f"{PKG}/engine/"):
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
                if name in FILE_CALLS:
                    problems.append(f"{path}:{node.lineno} calls {name}() (the engine reads and writes no files)")
    return problems


def test_the_engine_is_pure(real_imports):
    problems = engine_impurities(package_sources())
    assert not problems, "\n".join(problems)
    engine = {i.importer for i in real_imports if i.importer.startswith(f"{PKG}.engine")}
    assert {"cdm_core.engine.sampler", "cdm_core.engine.models", "cdm_core.engine.sharded"} <= engine


@pytest.mark.parametrize("source", [
    "from cdm_core.latent.space import latent_space\n",
    "def f():\n    from cdm_core.pipeline.prepared import prepare\n",
    "from cdm_core.data.files import read_npy_bytes\n",
    "def f(p):\n    return open(p, 'rb').read()\n",
    "import numpy as np\ndef f(p):\n    return np.load(p)\n",
])
def test_the_purity_check_sees_an_impure_engine(source):
    sources = package_sources() | {"cdm_core/engine/bad.py": source}
    assert len(engine_impurities(sources)) == 1, source


def documented_layers(text: str) -> tuple[str, ...]:
    """The layer list written as `a` -> `b` -> ... (backticks optional, -> or →) on one line
    that starts with 'Layers'."""
    import re
    for line in text.splitlines():
        if line.lstrip("#>*- ").startswith("Layers"):
            names = re.findall(r"`?([a-z]+)`?\s*(?:->|→)", line) + re.findall(r"(?:->|→)\s*`?([a-z]+)`?", line)[-1:]
            if len(names) > 2:
                return tuple(names)
    return ()


@pytest.mark.parametrize("doc", ["docs/architecture.md", "docs/README.md", "cdm_core/__init__.py"])
def test_documented_layers_are_the_checked_ones(doc):
    """The layer lists in the docs are the ones this file enforces."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert documented_layers(text) == LAYERS, f"{doc}: the line starting 'Layers' must list {' -> '.join(LAYERS)}"


def test_documented_layers_parser():
    assert documented_layers("Layers: `foundation` -> `data` → `engine`\n") == ("foundation", "data", "engine")
    assert documented_layers("no list here -> at -> all\n") == ()
