"""JupyterLab as a way in: the slice browser, notebook defaults, `make lab`, the findings of the
opening page and the path relativisation of the book (fast unit tests; the notebooks executed
through a Jupyter server and the JupyterLab browser check are in test_smoke_book.py, on the smoke build)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from crapnet_core.book import build, execute
from crapnet_core.book import plan as book_plan
from crapnet_core.paths import default_dataset
from crapnet_core.report import findings, plots, viewer

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- slice browser
def _volume(z=12):
    img = np.random.default_rng(0).normal(size=(32, 32, z)).astype(np.float32)
    lab = np.zeros((32, 32, z), np.int16)
    lab[8:16, 8:16, 4:9] = 1
    sp = np.zeros((32, 32, z), np.int32)
    sp[:16] = 1
    sp[16:] = 2
    return img, lab, sp


def test_interesting_slices_spread_over_the_labelled_range():
    img, lab, sp = _volume()
    layers = [viewer.Layer("organs", lab, "labels", labels={"liver": 1}), viewer.Layer("sp", sp, "superpixels")]
    # labelled slices 4..8 (superpixels do not count): 3 slices at 1/4, 1/2, 3/4 of the range
    assert viewer.interesting_slices(layers, 3, img.shape[2]) == [5, 6, 7]
    # nothing labelled: the whole scan
    assert viewer.interesting_slices([viewer.Layer("sp", sp, "superpixels")], 1, 12) == [6]


def test_static_browser_is_a_figure_of_slices_by_layers():
    import matplotlib

    matplotlib.use("Agg")
    img, lab, sp = _volume()
    pred = (lab == 1).astype(np.uint8)
    layers = [
        viewer.Layer("organs", lab, "labels", labels={"liver": 1}),
        viewer.Layer("sp", sp, "superpixels"),
        viewer.Layer("prediction", pred, "mask", organ="liver", reference=lab == 1),
    ]
    fig = viewer.slice_browser(img, layers, interactive=False, n_static=2)
    assert len(fig.axes) == 2 * 4  # 2 slices x (scan + 3 layers)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("slice Dice 100.0" in t for t in titles), titles  # the prediction equals its reference
    assert any(t == "sp: 2" for t in titles), titles  # two superpixels on the slice


def test_interactive_browser_has_a_slider_and_layer_switches():
    import ipywidgets as w
    import matplotlib

    matplotlib.use("Agg")
    img, lab, sp = _volume()
    box = viewer.slice_browser(
        img,
        [viewer.Layer("organs", lab, "labels", labels={"liver": 1}), viewer.Layer("sp", sp, "superpixels")],
        interactive=True,
    )
    assert isinstance(box, w.VBox)
    controls = box.children[0].children
    slider = controls[0]
    assert isinstance(slider, w.IntSlider) and slider.max == 11 and slider.value == 6
    assert [c.description for c in controls[1:]] == ["organs", "sp"]
    slider.value = 3  # redraws without error
    controls[2].value = False


def test_browser_rejects_layers_of_another_shape():
    img, lab, _ = _volume()
    with pytest.raises(ValueError, match="layer 'organs' has shape"):
        viewer.slice_browser(
            img, [viewer.Layer("organs", lab[:, :, :5], "labels", labels={"liver": 1})], interactive=False
        )
    with pytest.raises(ValueError, match="kind"):
        viewer.slice_browser(img, [viewer.Layer("x", lab, "heatmap")], interactive=False)


# ----------------------------------------------------------------------------- notebooks by hand
def test_default_dataset_is_real_data_when_present(tmp_path, monkeypatch):
    monkeypatch.delenv("CRAPNET_DATA_ROOT", raising=False)
    assert default_dataset() == "phantom"
    assert default_dataset(tmp_path) == "phantom"
    (tmp_path / "SABS").mkdir()
    (tmp_path / "SABS" / "image_1.nii.gz").write_bytes(b"")
    assert default_dataset(tmp_path) == "sabs"
    (tmp_path / "CHAOST2").mkdir()
    (tmp_path / "CHAOST2" / "image_1.nii.gz").write_bytes(b"")
    monkeypatch.setenv("CRAPNET_DATA_ROOT", str(tmp_path))
    assert default_dataset() == "chaos"


@pytest.mark.parametrize("stem", list(book_plan.NOTEBOOKS))
def test_notebook_runs_by_hand_and_static_in_the_book(stem):
    nb = nbformat.read(str(REPO / "notebooks" / f"{stem}.ipynb"), as_version=4)
    params = execute.notebook_parameters(REPO / "notebooks" / f"{stem}.ipynb")
    assert params.get("interactive") == "True", f"{stem}: no `interactive = True` parameter"
    assert nb.metadata.kernelspec.name == "crapnet", f"{stem}: kernel {nb.metadata.kernelspec.name!r}, not crapnet"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "sys.path" not in code, f"{stem}: imports the installed crapnet_core, never a path of its own"
    assert "from crapnet_core.report.notebook import setup" in code and "setup(" in code, f"{stem}: no set-up call"
    assert "sns.set_theme" not in code and "set_style" not in code, f"{stem}: the set-up call sets the style"
    plan = book_plan.BookPlan("smoke", ["phantom"], None, "r", "s", "cpu", [])
    job = book_plan.Job(stem, {}, 0, "x", "x")
    assert execute.job_parameters(job, plan, params)["interactive"] is False  # the book renders static figures


def test_segment_notebook_calls_the_cli_function():
    nb = nbformat.read(str(REPO / "notebooks" / "08_segment_your_own_scan.ipynb"), as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from crapnet_core.engine.segment import segment_files" in code and "segment_files(" in code
    params = execute.notebook_parameters(REPO / "notebooks" / "08_segment_your_own_scan.ipynb")
    for name in ("support_image", "support_label", "organ", "query_image", "run", "out"):
        assert name in params
    plan = book_plan.plan_book("smoke", runs_root="/nonexistent/runs", results_dir="/nonexistent/results")
    assert [j.notebook for j in plan.jobs].count("08_segment_your_own_scan") == 1


def test_make_lab_registers_the_kernel_and_opens_notebooks():
    text = (REPO / "Makefile").read_text()
    lab = re.search(r"^lab:.*\n((?:\t.*\n)+)", text, re.M)
    kernel = re.search(r"^\$\(KERNEL\):.*\n((?:\t.*\n)+)", text, re.M)
    assert lab and "jupyter lab --notebook-dir=notebooks" in lab.group(1)
    assert kernel and "ipykernel install --sys-prefix --name crapnet" in kernel.group(1)
    readme = (REPO / "README.md").read_text()
    assert "make lab" in readme and "make book" in readme and "make test" in readme


# ----------------------------------------------------------------------------- findings
def _summary(folder: Path, dataset, setting, method, mean, std=None):
    folder.mkdir(parents=True)
    dice = {"left_kidney": mean, "right_kidney": mean, "spleen": mean, "liver": mean, "mean": mean}
    out = {
        "dataset": dataset,
        "setting": setting,
        "method": method,
        "profile": "lite",
        "folds": [0, 1, 2, 3, 4],
        "mean": {"dice": dice, "dice_std_over_folds": {"mean": std} if std is not None else {}},
    }
    (folder / "summary.json").write_text(json.dumps(out))


def test_findings_come_from_the_committed_summaries(tmp_path):
    _summary(tmp_path / "chaos_setting1_crapnet_lite", "chaos", 1, "crapnet", 0.4567, std=0.0312)
    _summary(tmp_path / "chaos_setting1_alpnet_lite", "chaos", 1, "alpnet", 0.5012)
    _summary(tmp_path / "sabs_setting2_crapnet_lite", "sabs", 2, "crapnet", 0.3333)
    _summary(tmp_path / "sabs_setting2_alpnet_lite", "sabs", 2, "alpnet", 0.3000)
    _summary(tmp_path / "sabs_setting2_alpnet_sup_lite", "sabs", 2, "alpnet_sup", 0.3500)
    text = findings.findings_md(tmp_path, "../notebooks/06_results__lite.ipynb", "_findings.png")
    # summaries without per-scan values: no comparison, so no sentence about one; the distance to the
    # paper from the means: CHAOS s1 CRAPNet 79.79-45.67, ALPNet 78.84-50.12, SABS s2 69.72-33.33, 63.02-30.00
    assert "28.7–36.4 Dice points below the paper's" in text
    assert "supervised ALPNet and the untrained network" in text and "+0.11 to +0.11 points" in text  # 35.11 - 35.00
    assert "cannot be told apart" not in text and "How sure" not in text
    assert "{figure} _findings.png" in text


def test_findings_without_results_say_so(tmp_path):
    text = findings.findings_md(tmp_path / "none", None, None)
    assert "No cross-validated `lite` results are committed" in text and "](" not in text


def test_findings_figure_is_a_png(tmp_path):
    _summary(tmp_path / "res" / "chaos_setting1_crapnet_lite", "chaos", 1, "crapnet", 0.4)
    path = findings.findings_figure(tmp_path / "res", tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_figure_panels_and_units():
    import matplotlib

    matplotlib.use("Agg")
    fig = plots.comparison_figure(None)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 4 and axes[0].get_ylabel() == "mean Dice over organs (0-100)"
    assert axes[0].get_ylim() == (0.0, 100.0)


# ----------------------------------------------------------------------------- paths in the book
def test_relativise_replaces_machine_paths_but_not_images(tmp_path):
    plan = book_plan.BookPlan("smoke", ["chaos"], "/data/root", str(REPO / "runs"), str(REPO / "results"), "cpu", [])
    repl = build.path_replacements(plan, REPO, REPO / "_build")
    nb = {
        "cells": [
            {
                "source": f"runs_root = '{REPO}/runs'\ndata_root = '/data/root'",
                "outputs": [
                    {"output_type": "stream", "text": f"run folder {REPO}/runs/x under {Path.home()}/y"},
                    {
                        "output_type": "display_data",
                        "data": {"text/plain": f"{REPO}/results/a", "image/png": f"{REPO}AAAA"},
                    },
                ],
            }
        ],
        "metadata": {"papermill": {"input_path": f"{REPO}/notebooks/x.ipynb"}},
    }
    out = build.relativise(nb, repl)
    cell = out["cells"][0]
    assert cell["source"] == "runs_root = 'runs'\ndata_root = '$CRAPNET_DATA_ROOT'"
    assert cell["outputs"][0]["text"] == "run folder runs/x under ~/y"
    assert cell["outputs"][1]["data"]["text/plain"] == "results/a"
    assert cell["outputs"][1]["data"]["image/png"] == f"{REPO}AAAA"  # base64 payloads untouched
    assert out["metadata"]["papermill"]["input_path"] == "./notebooks/x.ipynb"
