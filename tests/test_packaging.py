"""The install story stays consistent: pyproject ranges, conda's environment.yml, the
constraints pins used by the Makefile, and CI calling the README's test command."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
#: conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}
#: environment.yml entries that are not Python packages of ours
NOT_PACKAGES = {"python", "pip"}


def _pyproject_requirements() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data["project"]
    reqs = list(project["dependencies"])
    for extra in ("book", "test"):
        reqs += project["optional-dependencies"][extra]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def _conda_requirements() -> dict[str, Requirement]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if not isinstance(dep, str):
            continue  # the pip: sub-list (installs the package itself)
        name = re.split(r"[<>=!~ ]", dep, maxsplit=1)[0].lower()
        if name in NOT_PACKAGES:
            continue
        pypi = CONDA_TO_PYPI.get(name, name)
        out[pypi] = Requirement(pypi + dep[len(name):])
    return out


def test_environment_yml_has_the_same_packages_as_pyproject():
    pyproject, conda = _pyproject_requirements(), _conda_requirements()
    assert sorted(conda) == sorted(pyproject), (
        f"only in environment.yml: {sorted(set(conda) - set(pyproject))}; "
        f"only in pyproject.toml: {sorted(set(pyproject) - set(conda))}"
    )


def test_environment_yml_versions_are_compatible_with_pyproject():
    pyproject, conda = _pyproject_requirements(), _conda_requirements()
    for name, req in pyproject.items():
        assert conda[name].specifier == req.specifier, (
            f"{name}: environment.yml says '{conda[name].specifier}', pyproject.toml says '{req.specifier}'"
        )


def test_constraints_pins_satisfy_pyproject_ranges():
    pyproject = _pyproject_requirements()
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name.lower()] = req
    assert {"torch", "torchvision"} <= set(pins), "torch and torchvision must be pinned"
    for name, pin in pins.items():
        exact = [s.version for s in pin.specifier if s.operator == "=="]
        if exact and name in pyproject:
            assert Version(exact[0]) in pyproject[name].specifier, f"{name}=={exact[0]} is outside pyproject's {pyproject[name].specifier}"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^CRAPNET_DATA_ROOT=\.\./shared/data make test$", ci, re.M), ci


def test_makefile_uses_the_constraints_file():
    makefile = (REPO / "Makefile").read_text()
    assert "-c constraints.txt" in makefile
