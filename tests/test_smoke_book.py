"""The whole research book built with the smoke profile on the phantom (the CI build), checked page
by page, in a browser, and through a real Jupyter server.

Its own file: building the smoke book is the longest single piece of the suite, and `make test`
(pytest-xdist, ``--dist loadfile``) runs one file per worker, so the rest of the suite runs beside it
(``conftest.py`` starts this file first).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from crapnet_core.book import build, driver, execute
from crapnet_core.book import plan as book_plan
from crapnet_core.paths import real_data_required

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the smoke build
def _build_smoke(out):
    """Build the smoke-profile book into ``out``: the same call for the first build and the rebuild."""
    return driver.build_book(
        "smoke",
        out_dir=out,
        runs_root=out / "runs",
        results_dir=out / "no-results",
        progress=False,
        echo=lambda m: None,
    )


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """Build the book with the smoke profile on the phantom (the CI build)."""
    out = tmp_path_factory.mktemp("book")
    t0 = time.time()
    index = _build_smoke(out)
    return dict(out=out, index=index, seconds=time.time() - t0)


@pytest.mark.slow
def test_smoke_book_has_every_page_figures_and_no_errors(smoke_book):
    out, index = smoke_book["out"], smoke_book["index"]
    html = out / "html"
    assert index == html / "index.html" and index.is_file()
    toc = yaml.safe_load((out / "source" / "_toc.yml").read_text())
    files = build.toc_files(toc)
    committed = build.toc_files(yaml.safe_load((REPO / "_toc.yml").read_text()))
    chapters = [f for f in committed if not f.startswith("notebooks/")]
    for chapter in chapters:
        if chapter == "book/method" and not (REPO / "book" / "method.md").is_file():
            continue
        assert chapter in files, f"chapter {chapter} is not in the built book"
    assert "book/this_build" in files
    plan = json.loads((out / "book.json").read_text())
    assert plan["status"] == "ok"
    executed = {j["name"] for j in plan["plan"]["jobs"]}
    assert {f"notebooks/{n}" for n in executed} <= set(files)
    for name in files:
        page = html / f"{name}.html"
        assert page.is_file(), f"{page} was not built"
        text = page.read_text()
        if name.startswith("notebooks/"):
            assert "output traceback" not in text and 'class="output error' not in text, f"{name}: error output"
            imgs = re.findall(r'<img[^>]+src="([^"]+\.png)"', text)
            assert imgs, f"{name}: no figure embedded"
            for src in imgs:
                assert (page.parent / src).resolve().is_file(), f"{name}: image {src} missing"
        # offline: no remote scripts, styles or images
        remote = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        if build._local_mathjax() is None and not real_data_required():
            # without Debian's libjs-mathjax the equations load MathJax from its CDN (CI installs it)
            remote = [u for u in remote if "mathjax" not in u.lower()]
        assert not remote, f"{name}: remote assets {remote[:3]}"
    results_page = (html / "notebooks" / "06_results__smoke.html").read_text()
    assert results_page.count("<table") >= 2 and "Synthetic data" in results_page
    assert "Provenance" in results_page and "smoke" in results_page
    this_build = (html / "book" / "this_build.html").read_text()
    assert "Left out by this profile" in this_build and "folds 1, 2, 3, 4" in this_build
    sphinx_log = (out / "logs" / "sphinx.log").read_text()
    assert "WARNING" not in sphinx_log and "ERROR" not in sphinx_log, "Sphinx warnings in the smoke build"


@pytest.mark.slow
def test_smoke_book_rebuild_reuses_executions(smoke_book):
    out = smoke_book["out"]
    t0 = time.time()
    _build_smoke(out)
    info = json.loads((out / "book.json").read_text())
    assert {e["status"] for e in info["executions"]} == {"cached"}
    assert time.time() - t0 < smoke_book["seconds"]


@pytest.mark.slow
def test_browser_renders_results_page(smoke_book):
    from e2e import browser_check

    if browser_check.find_browser() is None:
        why = "Chromium not installed (Debian package `chromium`; .ci/run installs it)"
        if real_data_required():  # CI=true: the browser check must run, not skip
            pytest.fail(why, pytrace=False)
        pytest.skip(why + "; `make e2e` runs this check where it is")
    shot = smoke_book["out"] / "screenshots" / "results.png"
    reports = browser_check.check_book(smoke_book["out"] / "html", screenshot=shot)
    for r in reports:
        assert not r.failures, (r.url, r.failures)
    # every page of the book, not only the results page
    toc = yaml.safe_load((smoke_book["out"] / "source" / "_toc.yml").read_text())
    checked = {r.url.split("/html/", 1)[1] for r in reports}
    assert {f"{name}.html" for name in build.toc_files(toc)} <= checked
    results = next(r for r in reports if "06_results__" in r.url)
    assert results.probe["tables_with_rows"] >= 2 and results.probe["images"] >= 1
    assert results.probe["overflow"] == [] and results.probe["page_scroll_x"] <= 2
    for png in (shot, shot.with_name("index.png")):
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smoke_book_shows_no_path_of_the_building_machine(smoke_book):
    out = smoke_book["out"]
    needles = {str(REPO), str(out), str(Path.home()) + "/", "/tmp/", "/work/", tempfile.gettempdir() + "/"}
    html = out / "html"
    checked = 0
    for path in html.rglob("*"):
        if path.suffix not in (".html", ".ipynb", ".md", ".txt") or "_static" in path.parts:
            continue
        text = path.read_text(errors="replace")
        checked += 1
        for needle in needles:
            assert needle not in text, f"{path.relative_to(html)} shows {needle!r}"
    assert checked > 20
    source_nb = (html / "_sources" / "notebooks" / "03_train_fold__phantom-s1-f0-crapnet.ipynb").read_text()
    assert "runs_root = " in source_nb  # the injected parameters are there, relativised


@pytest.mark.slow
def test_smoke_book_opens_on_findings_and_cites_its_references(smoke_book):
    html = smoke_book["out"] / "html"
    intro = (html / "book" / "intro.html").read_text()
    assert intro.index("Findings") < intro.index("The study in brief")
    assert "_findings.png" in intro
    assert "No cross-validated" in intro  # this build was given an empty results folder
    refs = (html / "book" / "references.html").read_text()
    # the CRAPNet paper's authors exactly as the paper prints them (../shared/paper)
    assert "Hao Ding, Changchang Sun, Hao Tang, Dawen Cai, and Yan Yan" in refs
    for title in (
        "Self-supervision with Superpixels",
        "Non-local Neural Networks",
        "CARAFE++",
        "CHAOS",
        "Multi-Atlas Labeling",
        "Rethinking Atrous Convolution",
        "Deep Residual Learning",
        "Q-Net",
        "Anomaly Detection-Inspired",
        "Recurrent Mask Refinement",
        "PANet",
        "Snakemake",
        "MONAI",
    ):
        assert title.lower() in refs.lower(), title  # the bibliography style sets titles in sentence case
    assert 'href="references.html#' in intro  # cited where used, linked to the list


# ----------------------------------------------------------------------------- through Jupyter
@pytest.fixture(scope="module")
def lab_env(tmp_path_factory):
    """The environment of a Jupyter server as a person gets it with `make lab`, without real data.

    The project's kernel ``crapnet`` (what ``make kernel`` registers in .venv) in a temporary
    JUPYTER_PATH; no CRAPNET_DATA_ROOT (so the notebooks' defaults pick the phantom) and no
    PYTHONPATH (the notebooks must find the repository themselves).
    """
    from e2e.lab import write_kernelspec

    tmp = tmp_path_factory.mktemp("jupyter")
    write_kernelspec(tmp / "share")
    env = {k: v for k, v in os.environ.items() if k not in ("CRAPNET_DATA_ROOT", "PYTHONPATH", "JUPYTER_PATH")}
    env.update(
        JUPYTER_PATH=str(tmp / "share"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def jupyter_server(lab_env):
    from e2e.lab import JupyterServer

    with JupyterServer(REPO, app="server", env=lab_env) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("stem", list(book_plan.NOTEBOOKS))
def test_notebook_runs_through_a_jupyter_server(stem, smoke_book, jupyter_server):
    """Each notebook, top to bottom with its default parameters, through a real server and kernel.

    Only the runs folder is set (the smoke build's, so the runs it trained are reused); the
    defaults are what a person gets in JupyterLab: interactive widgets, the phantom without
    CRAPNET_DATA_ROOT, the smoke profile.
    """
    from e2e.lab import execute_notebook

    path = REPO / "notebooks" / f"{stem}.ipynb"
    params = {"runs_root": str(smoke_book["out"] / "runs")} if "runs_root" in execute.notebook_parameters(path) else {}
    nb = execute_notebook(jupyter_server, f"notebooks/{stem}.ipynb", parameters=params, cell_timeout=900)
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{stem}: no figure"
    if stem in ("02_superpixels", "03_train_fold", "08_segment_your_own_scan"):  # the slice browsers
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), stem
    assert json.loads(path.read_text())["cells"][1]["outputs"] == []  # the notebook file is left as it was


@pytest.mark.slow
def test_jupyterlab_opens_and_renders_a_notebook(lab_env, smoke_book):
    from e2e import browser_check

    if browser_check.find_browser() is None:
        why = "Chromium not installed (Debian package `chromium`; .ci/run installs it)"
        if real_data_required():
            pytest.fail(why, pytrace=False)
        pytest.skip(why + "; `make e2e` runs this check where it is")
    shot = smoke_book["out"] / "screenshots" / "lab.png"
    before = (REPO / "notebooks" / "08_segment_your_own_scan.ipynb").read_bytes()
    report = browser_check.check_lab(REPO, "notebooks/08_segment_your_own_scan.ipynb", shot, env=lab_env)
    assert not report.failures, report.failures
    assert report.probe["h1"] and report.probe["h1"][0].startswith("9. Segment your own scan")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (REPO / "notebooks" / "08_segment_your_own_scan.ipynb").read_bytes() == before
