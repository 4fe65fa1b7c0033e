#!/usr/bin/env python3
"""Codemod: move the flat modules of ``crapnet_core`` into layered packages (issue 11 §2).

    python tools/relayout.py            # move + rewrite (git mv; run from a clean work tree)
    python tools/relayout.py --check    # report what it would do (pending moves, unknown modules), change nothing

Deterministic and re-runnable: it only acts on the modules of :data:`MOVES` whose old file
still exists (a second run finds nothing pending and changes nothing). A top-level module of
``crapnet_core/`` that :data:`MOVES` does not name stops the run (exit 1) with its name:
add it to the table (the other branches' new modules) and run again.

What it does, for every pending move ``old -> new``:
1. ``git mv crapnet_core/<old>.py crapnet_core/<new as path>.py`` (``__init__.py`` for a
   module that becomes a package of the same name, e.g. ``cli``);
2. rewrites every reference in the tracked text files (``crapnet_core/``, ``tests/``,
   ``notebooks/*.ipynb`` code and markdown cells, ``benchmarks/``, ``results/*.py``,
   ``book/``, ``docs/``, workflow files, README, Makefile, pyproject, CI, ...; not the run
   outputs under ``results/*/``):
   - dotted names ``crapnet_core.<old>[.attr]`` (absolute imports, ``python -m``,
     ``mock.patch`` strings, docstrings) and paths ``crapnet_core/<old>.py``;
   - ``from crapnet_core import a, b as c`` (split per new package:
     ``from crapnet_core.data import datasets as ds``);
   - relative imports inside ``crapnet_core`` (``from .x import y``, ``from . import x``),
     resolved against the file's old place and re-emitted relative to its new place.
3. creates the packages' ``__init__.py`` (a docstring naming the layer, nothing imported,
   so importing a package never imports its modules and adds no import edges), and
   ``cli/__main__.py`` so that ``python -m crapnet_core.cli`` still runs the command.

Source-level rewriting keeps comments and formatting; only an ``from ... import`` whose
names must be split over several packages is re-emitted (one statement per package, the
comments inside that statement are dropped and reported).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

PKG = "crapnet_core"

# ----------------------------------------------------------------------------- the mapping table
#: old top-level module -> new dotted name (relative to crapnet_core). Same name = stays.
#: Layers, bottom to top (the order is defined once, in tests/test_layout.py): the package
#: root (base), data, models, engine, report, book, cli.
#: Add the modules other branches create here (one line each), then run the script.
MOVES: dict[str, str] = {
    # base: study facts and helpers every layer may use
    "facts": "facts",
    "published": "published",
    "io": "io",
    "paths": "paths",
    # data: volumes, folds, pseudo-labels, episodes
    "datasets": "data.datasets",
    "phantom": "data.phantom",
    "protocol": "data.protocol",
    "superpixels": "data.superpixels",
    "augment": "data.augment",
    "episodes": "data.episodes",
    "geometry": "data.geometry",
    "prepare": "data.prepare",
    # models: encoders, attention, CARAFE++, prototypes, the segmenter, losses
    "_torchvision": "models._torchvision",
    "config": "models.config",
    "encoders": "models.encoders",
    "attention": "models.attention",
    "carafe": "models.carafe",
    "prototypes": "models.prototypes",
    "model": "models.segmenter",
    "losses": "models.losses",
    "prototype_grid": "models.prototype_grid",
    "methods": "models.methods",  # the package of the registered methods, moved as a whole
    # engine: configs and profiles, training, checkpoints, evaluation, metrics, runs, segment
    "experiment": "engine.experiment",
    "checkpoints": "engine.checkpoints",
    "training": "engine.training",
    "metrics": "engine.metrics",
    "evaluation": "engine.evaluation",
    "runs": "engine.runs",
    "segment": "engine.segment",
    "inputs": "engine.inputs",
    "stats": "engine.stats",  # runs.cross_validate_seeds aggregates seeds with it
    "budget": "engine.budget",
    "diagnostics": "engine.diagnostics",
    # report: tables, plots, provenance
    "figures": "report.figures",
    "findings": "report.findings",
    "viewer": "report.viewer",
    # book: plan, execution and site assembly, the Snakemake driver, JupyterLab, browser check
    "book": "book.build",
    "workflow": "book.workflow",
    "lab": "book.lab",
    "browser_check": "book.browser_check",
    # cli: the `crapnet` command (cli.py becomes the package cli/__init__.py)
    "cli": "cli",
    "cli_data": "cli.data",
    "cli_train": "cli.train",
    "cli_book": "cli.book",
    "cli_stats": "cli.stats",
}

#: Sub-packages of crapnet_core that move as a whole (folder -> folder; their line is in MOVES).
MOVED_PACKAGES = {"methods"}

#: Docstrings of the package ``__init__.py`` files the script creates.
PACKAGE_DOCS = {
    "data": "Data layer: datasets and label maps on disk, scan geometry, the phantom, folds, superpixels,\n"
            "augmentation, episodes, data preparation.",
    "models": "Model layer: encoders, cycle-resemblance attention, CARAFE++, prototypes and their grid, the\n"
              "segmenter, losses, the registered methods (methods/).",
    "engine": "Engine layer: experiment configs and profiles, input checks, training, checkpoints, evaluation,\n"
              "metrics, runs and cross-validation, statistics, budget curves, diagnostics, segment.",
    "report": "Report layer: tables and plots against the paper's published numbers, provenance, findings,\n"
              "slice viewer.",
    "book": "Book layer: plan, papermill execution and jupyter-book assembly of the research book, the\n"
            "Snakemake workflow that drives it, JupyterLab, browser check.",
}

#: ``__main__.py`` for a module that becomes a package of its own name and could be run with
#: ``python -m`` (``python -m crapnet_core.cli`` keeps working).
PACKAGE_MAINS = {
    "cli": '"""``python -m crapnet_core.cli``: the ``crapnet`` command."""\n\nimport sys\n\nfrom . import main\n\n'
           'sys.exit(main())\n',
}

#: Tracked files never rewritten: run outputs and this script.
SKIP = (re.compile(r"^results/[^/]+/"), re.compile(r"^tools/relayout\.py$"), re.compile(r"^\.git/"))
#: Python sources that are not ``*.py`` (parsed as Python when they parse).
PYTHON_NAMES = re.compile(r"(\.py|Snakefile|\.smk)$")


# ----------------------------------------------------------------------------- names
def old_path(old: str) -> Path:
    return Path(PKG) / (old if old in MOVED_PACKAGES else f"{old}.py")


def new_path(old: str) -> Path:
    new = MOVES[old]
    if old in MOVED_PACKAGES:
        return Path(PKG, *new.split("."))
    if new == old and "." not in new:
        # stays, except a module that becomes a package of its own name (cli -> cli/__init__.py)
        if any(v.startswith(new + ".") for v in MOVES.values()):
            return Path(PKG, new, "__init__.py")
        return old_path(old)
    return Path(PKG, *new.split(".")).with_suffix(".py")


def is_package_init(old: str) -> bool:
    return new_path(old).name == "__init__.py"


def pending(root: Path) -> dict[str, str]:
    """Moves still to do: ``{old: new}`` for the modules whose old file exists and must move."""
    return {o: n for o, n in MOVES.items() if (root / old_path(o)).exists() and new_path(o) != old_path(o)}


def unknown_modules(root: Path) -> list[str]:
    """Top-level ``crapnet_core/*.py`` and sub-packages the table does not know (other branches' new modules)."""
    layers = {v.split(".")[0] for v in MOVES.values() if "." in v}
    modules = [p.stem for p in (root / PKG).glob("*.py") if p.stem != "__init__" and p.stem not in MOVES]
    packages = [p.parent.name for p in (root / PKG).glob("*/__init__.py")
                if p.parent.name not in MOVES and p.parent.name not in layers]
    return sorted(modules + packages)


def moved_file(rel: Path, moves: dict[str, str]) -> Path:
    """Where the tracked file ``rel`` goes: a moved module, a file of a moved package, or nowhere."""
    if rel.parts[0] != PKG:
        return rel
    if len(rel.parts) == 2 and rel.suffix == ".py" and rel.stem in moves:
        return new_path(rel.stem)
    if len(rel.parts) > 2 and rel.parts[1] in moves and rel.parts[1] in MOVED_PACKAGES:
        return Path(new_path(rel.parts[1]), *rel.parts[2:])
    return rel


# ----------------------------------------------------------------------------- text rewriting
def text_rewriter(moves: dict[str, str]):
    """Rewrite ``crapnet_core.<old>`` dotted names and ``crapnet_core/<old>.py`` (``crapnet_core/<package>``) paths."""
    if not moves:
        return lambda s: s
    alt = "|".join(sorted(map(re.escape, moves), key=len, reverse=True))
    dotted = re.compile(rf"(?<![\w.]){PKG}\.({alt})(?![\w])")
    path = re.compile(rf"(?<![\w.]){PKG}/({alt})\.py\b")
    packages = [p for p in moves if p in MOVED_PACKAGES]
    package_path = re.compile(rf"(?<![\w.]){PKG}/({'|'.join(map(re.escape, packages))})(?![\w.])") if packages else None

    def path_sub(m: re.Match) -> str:
        return new_path(m.group(1)).as_posix()

    def rewrite(s: str) -> str:
        s = dotted.sub(lambda m: f"{PKG}.{moves[m.group(1)]}", s)
        s = path.sub(path_sub, s)
        return package_path.sub(path_sub, s) if package_path else s

    return rewrite


# ----------------------------------------------------------------------------- import rewriting
def module_of(path: Path) -> tuple[str, bool]:
    """Dotted module name of a file under crapnet_core and whether it is a package ``__init__``."""
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def new_module_name(old_abs: str, moves: dict[str, str]) -> str:
    """New absolute name of an old absolute module name (``crapnet_core.x`` -> ``crapnet_core.a.x``)."""
    parts = old_abs.split(".")
    if len(parts) >= 2 and parts[0] == PKG and parts[1] in moves:
        return ".".join([PKG, *moves[parts[1]].split("."), *parts[2:]])
    return old_abs


def relative_ref(from_package: str, target: str) -> str:
    """``from <ref> import`` text that names ``target`` from inside ``from_package``."""
    a, b = from_package.split("."), target.split(".")
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    return "." * (len(a) - common + 1) + ".".join(b[common:])


class ImportRewriter:
    """Rewrites ``from crapnet_core import ...`` and relative imports of one Python source."""

    def __init__(self, moves: dict[str, str], old_file: Path | None, new_file: Path | None):
        self.moves = moves
        self.notes: list[str] = []
        if old_file is not None and old_file.parts[0] == PKG:
            old_mod, old_init = module_of(old_file)
            new_mod, new_init = module_of(new_file)
            self.old_pkg = old_mod if old_init else old_mod.rpartition(".")[0]
            self.new_pkg = new_mod if new_init else new_mod.rpartition(".")[0]
        else:
            self.old_pkg = self.new_pkg = None

    def _is_module(self, abs_name: str) -> bool:
        parts = abs_name.split(".")
        return len(parts) == 2 and parts[0] == PKG and parts[1] in MOVES

    def _ref(self, target: str, relative: bool) -> str:
        return relative_ref(self.new_pkg, target) if relative else target

    def statements(self, node: ast.ImportFrom) -> list[str] | str | None:
        """Whole replacement statements (a list, without indentation), or the new module part
        only (a str: the names stay as written), or None to keep the node."""
        relative = node.level > 0
        if relative:
            if self.old_pkg is None:
                return None
            base_parts = self.old_pkg.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not (base == PKG or base.startswith(PKG + ".")):
            return None
        if not relative and base != PKG:
            return None  # absolute crapnet_core.x: already rewritten by the dotted-name pass
        names = [(a.name, a.asname) for a in node.names]
        if base == PKG and any(self._is_module(f"{PKG}.{n}") for n, _ in names):
            groups: dict[str, list[str]] = {}
            for name, asname in names:
                if self._is_module(f"{PKG}.{name}"):
                    parent, _, leaf = new_module_name(f"{PKG}.{name}", self.moves).rpartition(".")
                    bound = asname or name
                    groups.setdefault(parent, []).append(leaf if leaf == bound else f"{leaf} as {bound}")
                else:
                    groups.setdefault(PKG, []).append(name if asname is None else f"{name} as {asname}")
            return [f"from {self._ref(p, relative)} import {', '.join(items)}" for p, items in groups.items()]
        target = new_module_name(base, self.moves)
        ref = self._ref(target, relative)
        return ref

    def rewrite(self, source: str, where: str) -> str:
        masked = "\n".join("#" + l[1:] if l.lstrip().startswith(("%", "!")) else l for l in source.split("\n"))
        try:
            tree = ast.parse(masked)
        except SyntaxError:
            # not Python as a whole (e.g. Snakemake rules): its one-line import statements only
            # (the text rewrite did the dotted names)
            lines = source.split("\n")
            for i, line in enumerate(lines):
                stripped = line.lstrip()
                if stripped.startswith(("from ", "import ")):
                    try:
                        ast.parse(stripped)
                    except SyntaxError:
                        continue
                    lines[i] = line[: len(line) - len(stripped)] + self.rewrite(stripped, f"{where}:{i + 1}")
            return "\n".join(lines)
        lines = source.split("\n")
        edits = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                out = self.statements(node)
                if out is not None:
                    edits.append((node, out))
        for node, out in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
            first = node.lineno - 1
            line = lines[first]
            if isinstance(out, str):
                m = re.compile(r"from\s+([.\w]+)\s+import").match(line, node.col_offset)
                if m is None:
                    raise SystemExit(f"{where}:{node.lineno}: cannot find the module of this import: {line!r}")
                lines[first] = line[: m.start(1)] + out + line[m.end(1):]
                continue
            indent = line[: node.col_offset]
            span = lines[first : node.end_lineno]
            if len(span) > 1 or "#" in span[0]:
                self.notes.append(f"{where}:{node.lineno}: import re-emitted, comments in it dropped")
            tail = lines[node.end_lineno - 1][node.end_col_offset:]
            new = [indent + s for s in out]
            new[-1] += tail
            lines[first : node.end_lineno] = new
        return "\n".join(lines)


# ----------------------------------------------------------------------------- files
def tracked_files(root: Path) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True).stdout
    files = []
    for name in sorted(filter(None, out.decode().split("\0"))):
        if any(p.search(name) for p in SKIP) or not (root / name).is_file():
            continue
        files.append(Path(name))
    return files


def rewrite_python(source: str, rel: Path, moves, text) -> tuple[str, list[str]]:
    old_file = rel if rel.parts[0] == PKG else None
    new_file = moved_file(rel, moves) if old_file is not None else None
    rw = ImportRewriter(moves, old_file, new_file)
    # dotted names first (absolute imports, strings), then the import statements the dotted
    # pattern cannot see (from crapnet_core import x; relative imports, resolved at the old place)
    return rw.rewrite(text(source), str(rel)), rw.notes


def rewrite_notebook(raw: str, rel: Path, moves, text) -> tuple[str, list[str]]:
    nb = json.loads(raw)
    notes: list[str] = []
    for i, cell in enumerate(nb.get("cells", [])):
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        if cell.get("cell_type") == "code":
            rw = ImportRewriter(moves, None, None)
            new = rw.rewrite(text(src), f"{rel}[cell {i}]")
            notes += rw.notes
        else:
            new = text(src)
        if new != src:
            cell["source"] = new.splitlines(keepends=True)
    out = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    return out, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="report pending moves and unknown modules; change nothing")
    ap.add_argument("--root", default=".", help="repository root (default: .)")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    if not (root / PKG).is_dir():
        print(f"relayout: {root}: no {PKG}/ here (run from the repository root or pass --root)", file=sys.stderr)
        return 2
    unknown = unknown_modules(root)
    if unknown:
        print("relayout: modules not in the MOVES table of tools/relayout.py (add one line each, e.g. "
              f"\"{unknown[0]}\": \"engine.{unknown[0]}\"): " + ", ".join(f"{PKG}/{u}.py" for u in unknown),
              file=sys.stderr)
        return 1
    moves = pending(root)
    bad_targets = [f"{o} -> {new_path(o)}" for o in moves if (root / new_path(o)).exists()]
    if bad_targets:
        print("relayout: target already exists: " + ", ".join(bad_targets), file=sys.stderr)
        return 1
    if not moves:
        print("relayout: nothing to move (already laid out)")
        return 0
    for o in sorted(moves):
        print(f"move {old_path(o)} -> {new_path(o)}")
    if args.check:
        return 0
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
        print("relayout: the work tree has uncommitted changes; commit or stash them first", file=sys.stderr)
        return 1

    text = text_rewriter(moves)
    # 1. new contents, computed at the old places
    contents: dict[Path, str] = {}
    notes: list[str] = []
    n_changed = 0
    for rel in tracked_files(root):
        try:
            raw = (root / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        if rel.suffix == ".ipynb":
            new, n = rewrite_notebook(raw, rel, moves, text)
            if json.loads(new) == json.loads(raw):
                new = raw
        elif PYTHON_NAMES.search(rel.name):
            new, n = rewrite_python(raw, rel, moves, text)
        else:
            new, n = text(raw), []
        notes += n
        if moved_file(rel, moves) != rel and "__file__" in raw:
            notes.append(f"{rel}: uses __file__ and moves one folder down; check paths built from it")
        if new != raw:
            contents[rel] = new
            n_changed += 1
    # 2. git mv, then write the rewritten contents at the new places
    for o in sorted(moves, key=lambda o: is_package_init(o)):  # plain moves first
        src, dst = old_path(o), new_path(o)
        (root / dst.parent).mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "mv", str(src), str(dst)], cwd=root, check=True)
    for rel, new in contents.items():
        (root / moved_file(rel, moves)).write_text(new, encoding="utf-8")
    # 3. package __init__.py files (docstring only)
    for pkg, doc in PACKAGE_DOCS.items():
        init = root / PKG / pkg / "__init__.py"
        if (root / PKG / pkg).is_dir() and not init.exists():
            init.write_text(f'"""{doc}\n\nImports nothing: the layer order is checked by tests/test_layout.py.\n"""\n',
                            encoding="utf-8")
            subprocess.run(["git", "add", str(init.relative_to(root))], cwd=root, check=True)
    for pkg, text in PACKAGE_MAINS.items():
        main_py = root / PKG / pkg / "__main__.py"
        if pkg in moves and is_package_init(pkg) and not main_py.exists():
            main_py.write_text(text, encoding="utf-8")
            subprocess.run(["git", "add", str(main_py.relative_to(root))], cwd=root, check=True)
    subprocess.run(["git", "add", "-u"], cwd=root, check=True)
    for n in notes:
        print("note:", n)
    print(f"relayout: moved {len(moves)} modules, rewrote {n_changed} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
