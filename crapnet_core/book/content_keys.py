"""Content keys of the study's jobs: what each job's result depends on, as one SHA-256.

Every rule of the workflow (``workflow/Snakefile``, :mod:`crapnet_core.book.workflow`) has a ``key``
parameter: a SHA-256 (:func:`content_key`) over what its result depends on, i.e. its own parameters,
the notebook's cell sources (notebooks), the ``crapnet_core`` modules it imports directly or
indirectly (:func:`library_closure`, read with :mod:`ast`) and, for the HTML build, the committed
book pages. Snakemake re-runs a job whose recorded key differs (rerun trigger ``params``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import crapnet_core

PACKAGE = crapnet_core.__name__
PACKAGE_DIR = Path(crapnet_core.__file__).resolve().parent  # wherever this module sits inside it


# ---------------------------------------------------------------------------- library dependencies
def _imported_modules(tree: ast.AST, package_of: str = PACKAGE) -> set[str]:
    """``crapnet_core`` modules named by the imports anywhere in ``tree`` (also inside functions).

    Relative imports (``from .x import y``, ``from ..data import x``) are resolved against
    ``package_of``, the package of the importing module. ``from a import b`` names ``a`` and
    ``a.b`` (a module or not: :func:`module_file` tells).
    """
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package_of.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] == PACKAGE:
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def module_file(module: str) -> Path | None:
    """The source file of a ``crapnet_core`` module (None for a name that is not a module)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    path = PACKAGE_DIR.joinpath(*parts[1:])
    for cand in (path.with_suffix(".py"), path / "__init__.py"):
        if cand.is_file():
            return cand
    return None


#: What decides each kind of job's result: these modules and everything they import (content keys).
SUPERPIXEL_MODULES = (f"{PACKAGE}.data.superpixels",)
TRAIN_MODULES = (f"{PACKAGE}.engine.training",)
EVAL_MODULES = (f"{PACKAGE}.engine.evaluation",)
BOOK_MODULES = (f"{PACKAGE}.book.build",)


def _dynamic_imports(module: str) -> set[str]:
    """Modules that ``module`` imports by name at run time (``importlib``), which :mod:`ast` cannot see:
    the method registry's modules (:data:`crapnet_core.facts.METHODS_REGISTRY`) for its package."""
    methods = f"{PACKAGE}.models.methods"
    if module != methods:
        return set()
    from ..facts import METHODS_REGISTRY

    return {f"{methods}.{m.module}" for m in METHODS_REGISTRY.values() if m.module}


def library_closure(modules: Iterable[str]) -> list[Path]:
    """Source files of ``modules`` and of every ``crapnet_core`` module they import, transitively.

    Imports are read with :mod:`ast` (module-level and function-level imports alike), so the
    answer is conservative: a module imported anywhere counts; the registry's method modules,
    imported by name at run time, count for :mod:`crapnet_core.models.methods`. The ``__init__``
    of the package and of every sub-package a module sits in is included (Python runs it on every
    import of a module inside it). ValueError for a name in ``modules`` that is no module of the
    package (a key built from a stale name would silently stop tracking the library).
    """
    modules = list(modules)
    missing = [m for m in modules if module_file(m) is None]
    if missing:
        raise ValueError(f"library_closure: not a {PACKAGE} module: {', '.join(missing)}")
    seen: dict[str, Path] = {}
    todo = [PACKAGE, *modules]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or name in seen:
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.append(package)
        found = _imported_modules(ast.parse(path.read_text(), str(path)), package) | _dynamic_imports(name)
        todo.extend(found - set(seen))
    return sorted(set(seen.values()))


def notebook_modules(path: str | os.PathLike) -> set[str]:
    """``crapnet_core`` modules imported by the code cells of a notebook (IPython magics skipped;
    names imported from a module are not modules and are left out)."""
    nb = json.loads(Path(path).read_text())
    found: set[str] = set()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = "\n".join(
            ln for ln in "".join(cell.get("source", "")).splitlines() if not ln.lstrip().startswith(("%", "!"))
        )
        try:
            found |= _imported_modules(ast.parse(src))
        except SyntaxError:
            found |= {f"{PACKAGE}.{m}" for m in re.findall(rf"{PACKAGE}\.(\w+)", src)} | {PACKAGE}
    return {m for m in found if module_file(m) is not None}  # ``from a import b``: b may be a name, not a module


def content_key(files: Iterable[str | os.PathLike] = (), **values: Any) -> str:
    """SHA-256 (16 hex digits) of the contents of ``files`` and of JSON-able ``values``."""
    h = hashlib.sha256()
    for f in sorted({Path(p).resolve() for p in files}):
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    h.update(json.dumps(values, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
