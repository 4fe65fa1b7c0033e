"""The import graph of crapnet_core: layers, bottom to top, no upward import, no cycle.

Every import counts, also those inside functions (``ast.walk`` over the whole module) and
module names given as strings to ``importlib.import_module`` (the CLI's sub-command
modules). Layers are the sub-packages; modules at the package root are the ``base`` layer
(study facts, the paper's published numbers, io, paths).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

#: The layer order, bottom to top (defined once, here). A module may import modules of its
#: own layer and of the layers below it.
LAYERS = ("base", "data", "models", "engine", "report", "study", "book", "cli")

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "crapnet_core"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module and package ``__init__`` under ``package_dir``."""
    top = package_dir.name
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [top, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` (at ``path``) imports, lazily or not."""
    top = name.split(".")[0]
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import name`: the module pkg.name when there is one, else pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
            targets = [node.value]  # importlib.import_module("crapnet_core.cli.data")
        else:
            continue
        for t in targets:
            if t == top or t.startswith(top + "."):
                # `import a.b.c` imports a.b.c; keep the longest known module name
                while t not in modules and "." in t:
                    t = t.rpartition(".")[0]
                if t != name:
                    found.add(t)
    return found


def layer_of(name: str, modules: dict[str, Path]) -> str:
    parts = name.split(".")
    if len(parts) == 1 or (len(parts) == 2 and modules[name].name != "__init__.py"):
        return "base"
    return parts[1]


def layout_problems(package_dir: Path, layers: tuple[str, ...] = LAYERS) -> list[str]:
    """Upward imports, unknown layers and import cycles, one line each."""
    modules = module_names(package_dir)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    problems = []
    for name in sorted(graph):
        layer = layer_of(name, modules)
        if layer not in layers:
            problems.append(f"{name}: sub-package {layer!r} is not a layer ({', '.join(layers)})")
            continue
        for dep in sorted(graph[name]):
            dep_layer = layer_of(dep, modules)
            if dep_layer in layers and layers.index(dep_layer) > layers.index(layer):
                problems.append(f"{name} ({layer}) imports {dep} ({dep_layer}): upward")
    for group in cycles(graph):
        problems.append("import cycle among: " + ", ".join(group))
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that import each other (strongly connected, more than one module)."""
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        reach[start] = seen
    groups = {tuple(sorted(n for n in graph if n in reach[m] and m in reach[n])) for m in graph}
    return sorted(list(g) for g in groups if len(g) > 1)


def test_no_upward_imports_and_no_cycles():
    modules = module_names(PACKAGE_DIR)
    assert {layer_of(m, modules) for m in modules} == set(LAYERS), "every layer has modules"
    assert layout_problems(PACKAGE_DIR) == []


def test_the_root_holds_only_the_base_modules():
    root = sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")
    assert root == ["facts", "io", "paths", "published"], "a new root module belongs in a layer's sub-package"


def test_notebooks_import_no_batch_runner_internals():
    """Notebooks call the library (facts, paths, engine, report), not the book runner that executes them."""
    import json

    offenders = []
    for path in sorted((PACKAGE_DIR.parent / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            masked = "\n".join("#" + ln if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())
            for node in ast.walk(ast.parse(masked)):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                offenders += [
                    f"{path.name}: {n}"
                    for n in names
                    if n == "crapnet_core.book" or n.startswith(("crapnet_core.book.", "crapnet_core.cli"))
                ]
    assert offenders == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_checker_finds_upward_lazy_imports_and_cycles(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "facts.py": "X = 1\n",
            "data/__init__.py": "",
            "data/a.py": "from ..facts import X\nfrom . import b\n",
            "data/b.py": "def f():\n    from .a import g\n",  # lazy: a <-> b
            "engine/__init__.py": "",
            "engine/run.py": "import pkg.data.a\n",
            "engine/low.py": "def f():\n    from ..report import tables\n",  # lazy and upward
            "report/__init__.py": "",
            "report/tables.py": "import importlib\nM = importlib.import_module('pkg.engine.run')\n",
        },
    )
    problems = layout_problems(pkg, ("base", "data", "engine", "report"))
    assert "pkg.engine.low (engine) imports pkg.report.tables (report): upward" in problems
    assert "import cycle among: pkg.data.a, pkg.data.b" in problems
    assert len(problems) == 2, problems


@pytest.mark.parametrize("layers", [("base", "data")])
def test_checker_rejects_a_sub_package_that_is_no_layer(tmp_path, layers):
    pkg = _write(tmp_path, {"__init__.py": "", "data/__init__.py": "", "misc/__init__.py": "", "misc/x.py": ""})
    assert layout_problems(pkg, layers) == [
        "pkg.misc: sub-package 'misc' is not a layer (base, data)",
        "pkg.misc.x: sub-package 'misc' is not a layer (base, data)",
    ]
