"""The notebooks as they are kept in git: outputs stripped, a `parameters` cell, in the book.

Every notebook under notebooks/ must
- be valid nbformat 4 with no outputs and no execution counts (executed copies live under
  _build/, never in git);
- have exactly one code cell tagged ``parameters`` holding only assignments (papermill
  injects the values of a run after it), and a Markdown title first;
- be listed in crapnet_core.book.plan.NOTEBOOKS and in the top-level _toc.yml;
- declare every parameter that the smoke, lite and paper plans pass to it.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

from crapnet_core.book import build, execute
from crapnet_core.book import plan as book_plan

REPO = Path(__file__).resolve().parents[1]


def _notebooks() -> list[Path]:
    """Notebooks tracked by git (all under notebooks/ when git has none tracked yet)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "notebooks/*.ipynb"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        out = []
    tracked = [REPO / p for p in out]
    present = sorted((REPO / "notebooks").glob("*.ipynb"))
    return sorted(set(tracked) | set(present))


NOTEBOOKS = _notebooks()


def test_the_notebooks_exist():
    names = [p.stem for p in NOTEBOOKS]
    assert names == list(book_plan.NOTEBOOKS), names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_parameterised(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name}: no code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"{path.name}: code cell {i} has outputs (strip them before committing)"
        assert cell.execution_count is None, f"{path.name}: code cell {i} has an execution count"
    for key in ("papermill", "crapnet_book", "widgets"):
        assert key not in nb.metadata, f"{path.name}: execution metadata {key!r} left in the notebook"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', expected 1"
    assert tagged[0].cell_type == "code"
    tree = ast.parse(tagged[0].source)
    assert tree.body and all(isinstance(node, ast.Assign) for node in tree.body), (
        f"{path.name}: the parameters cell must hold only assignments"
    )
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), (
        f"{path.name}: the first cell must be a Markdown title (# ...)"
    )
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_every_notebook_is_in_the_toc():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = set(build.toc_files(toc))
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in files, f"{path.name} is not in _toc.yml"


@pytest.fixture(scope="module")
def fake_data_root(tmp_path_factory):
    """A data root that *looks* complete (the plan only checks for image files)."""
    root = tmp_path_factory.mktemp("data")
    for sub in ("CHAOST2", "SABS"):
        (root / sub).mkdir()
        (root / sub / "image_1.nii.gz").write_bytes(b"")
    return root


@pytest.mark.parametrize("profile", book_plan.PROFILES)
def test_plans_pass_only_declared_parameters(profile, fake_data_root, tmp_path):
    plan = book_plan.plan_book(
        profile, data_root=fake_data_root, runs_root=tmp_path / "runs", results_dir=tmp_path / "results"
    )
    declared = {stem: execute.notebook_parameters(REPO / "notebooks" / f"{stem}.ipynb") for stem in book_plan.NOTEBOOKS}
    for job in plan.jobs:
        params = execute.job_parameters(job, plan, declared[job.notebook])  # raises on an undeclared one
        json.dumps(params)  # papermill parameters must be plain data
        assert params["profile"] == profile
