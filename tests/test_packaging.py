"""The install story stays consistent: pyproject ranges, the lock (requirements.lock) that
`make` installs, conda's environment.yml, the constraints pins, and CI calling the README's
test command."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
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
        out[pypi] = Requirement(pypi + dep[len(name) :])
    return out


def test_environment_yml_has_the_same_packages_as_pyproject():
    pyproject, conda = _pyproject_requirements(), _conda_requirements()
    assert sorted(conda) == sorted(pyproject), (
        f"only in environment.yml: {sorted(set(conda) - set(pyproject))}; "
        f"only in pyproject.toml: {sorted(set(pyproject) - set(conda))}"
    )


def _lock() -> dict[str, tuple[Version, list[str]]]:
    """requirements.lock: normalised name -> (version, its --hash lines)."""
    out: dict[str, tuple[Version, list[str]]] = {}
    name = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            out[name][1].append(line)
            continue
        req = Requirement(line.rstrip(" \\"))
        exact = [s.version for s in req.specifier if s.operator == "=="]
        assert len(exact) == 1 and not req.marker, f"requirements.lock: {line!r} is not an exact pin"
        name = canonicalize_name(req.name)
        out[name] = (Version(exact[0]), [])
    return out


def _numeric() -> set[str]:
    from crapnet_core.engine.environment import NUMERIC_PACKAGES

    return {canonicalize_name(n) for n in NUMERIC_PACKAGES}


def test_environment_yml_versions_are_compatible_with_pyproject():
    """Numeric packages: the lock's exact version (inside pyproject's range); the rest: pyproject's range."""
    pyproject, conda, lock = _pyproject_requirements(), _conda_requirements(), _lock()
    for name, req in pyproject.items():
        if canonicalize_name(name) in _numeric():
            locked = lock[canonicalize_name(name)][0]
            assert str(conda[name].specifier) == f"=={locked.public}", (
                f"{name}: environment.yml says '{conda[name].specifier}', requirements.lock has {locked}"
            )
            assert locked in req.specifier, f"{name}: the lock's {locked} is outside pyproject's {req.specifier}"
        else:
            assert conda[name].specifier == req.specifier, (
                f"{name}: environment.yml says '{conda[name].specifier}', pyproject.toml says '{req.specifier}'"
            )


def test_the_lock_pins_every_requirement_inside_its_range_with_hashes():
    pyproject, lock = _pyproject_requirements(), _lock()
    for name, req in pyproject.items():
        key = canonicalize_name(name)
        assert key in lock, f"{name}: required by pyproject.toml but missing from requirements.lock (run make lock)"
        assert req.specifier.contains(lock[key][0], prereleases=True), (
            f"{name}: requirements.lock pins {lock[key][0]}, outside pyproject's {req.specifier} (run make lock)"
        )
    assert _numeric() <= set(lock)
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pin = Requirement(line)
            assert pin.specifier.contains(lock[canonicalize_name(pin.name)][0]), (
                f"constraints.txt says {line}, requirements.lock has {lock[canonicalize_name(pin.name)][0]}"
            )
    unhashed = [n for n, (_, hashes) in lock.items() if not hashes]
    assert not unhashed, f"requirements.lock: no --hash for {unhashed}"


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
            assert Version(exact[0]) in pyproject[name].specifier, (
                f"{name}=={exact[0]} is outside pyproject's {pyproject[name].specifier}"
            )


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^CRAPNET_DATA_ROOT=\.\./shared/data make test$", ci, re.M), ci


def test_makefile_installs_the_lock_and_regenerates_it_with_the_constraints():
    makefile = (REPO / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\): (.*)$", makefile, re.M)
    assert stamp and "$(LOCK)" in stamp.group(1), "the venv must be rebuilt when requirements.lock changes"
    assert "LOCK   := requirements.lock" in makefile
    assert "--require-hashes -r $(LOCK)" in makefile and "--no-deps" in makefile
    lock_rule = makefile.split("\nlock:", 1)[1]
    assert "pip-compile" in lock_rule and "-c constraints.txt" in lock_rule and "--generate-hashes" in lock_rule
    assert "make lock" in (REPO / "README.md").read_text()
