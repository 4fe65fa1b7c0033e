"""Shared fixtures.

Real data: tests marked ``realdata`` take the folders from ``CRAPNET_DATA_ROOT``. When the
data is missing they skip on a developer machine but FAIL under ``CI=true`` (CI must never
pass by silently skipping the real-data tests).

Cache: tests use a cache folder inside the repository (``.cache/pytest``, ignored by git)
unless ``CRAPNET_CACHE`` is already set, so they never touch a user's own cache and so
re-runs reuse superpixels and the phantom.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CRAPNET_CACHE", str(REPO / ".cache" / "pytest"))

# `make test` runs pytest-xdist with one worker per core. Each worker's torch would otherwise start
# one OpenMP thread per core, and the workers' threads would spin against each other on the same
# cores; give each worker its share of the cores. Set here because conftest is imported before any
# test module imports torch (OpenMP reads these at start-up); subprocesses inherit them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _share = str(max(1, _cores // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _share)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _need_real_data(sub: str) -> Path:
    from crapnet_core.paths import real_data_required

    root = os.environ.get("CRAPNET_DATA_ROOT")
    path = Path(root).expanduser() / sub if root else None
    if path is not None and path.is_dir() and any(path.glob("image_*.nii.gz")):
        return path.resolve()
    why = f"real data folder {sub}/ not found (CRAPNET_DATA_ROOT={root!r})"
    if real_data_required():
        pytest.fail(why + " and CI=true: real-data tests must not be skipped", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def chaos_dir() -> Path:
    """The CHAOS T2-SPIR folder (``$CRAPNET_DATA_ROOT/CHAOST2``)."""
    return _need_real_data("CHAOST2")


@pytest.fixture(scope="session")
def sabs_dir() -> Path:
    """The Synapse/SABS CT folder (``$CRAPNET_DATA_ROOT/SABS``)."""
    return _need_real_data("SABS")


@pytest.fixture(autouse=True)
def _restore_locale():
    """Tests that write DICOM with SimpleITK directly: GDCM may leave the process locale at "C"
    (ASCII default encoding), which would break later tests' UTF-8 text reads. The library's
    own SimpleITK calls restore it (crapnet_core.io.keep_locale); this does it for the tests."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    yield
    if locale.setlocale(locale.LC_ALL) != saved:
        locale.setlocale(locale.LC_ALL, saved)


#: The longest single unit of `make test` (it builds the whole smoke book); started first so that the
#: other worker takes the rest of the suite beside it (the Makefile passes --no-loadscope-reorder).
LONGEST_FILE = "test_smoke_book.py"


def pytest_collection_modifyitems(session, config, items):
    first = [item for item in items if item.path.name == LONGEST_FILE]
    if first:
        items[:] = first + [item for item in items if item.path.name != LONGEST_FILE]
