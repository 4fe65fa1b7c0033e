"""The research book: plans per profile, the papermill batch runner, the toc, the figures' data.
The whole smoke build, checked page by page and in a browser, is in ``test_smoke_book.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from crapnet_core import facts
from crapnet_core.book import build, content_keys, driver, execute, gpus
from crapnet_core.book import plan as book_plan
from crapnet_core.book import workflow as wf
from crapnet_core.report import figures, provenance, tables

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake_data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for sub in ("CHAOST2", "SABS"):
        (root / sub).mkdir()
        (root / sub / "image_1.nii.gz").write_bytes(b"")
    return root


# ----------------------------------------------------------------------------- plans
def _needed_configs(plan: book_plan.BookPlan) -> set[str]:
    """Config hashes that the notebooks read (written out here independently of workflow.runs_read)."""
    need = set()
    for job in plan.jobs:
        p = job.params
        if job.notebook == "03_train_fold":
            need.add(
                book_plan.run_config(
                    p["profile"],
                    p["dataset"],
                    p["setting"],
                    p["fold"],
                    p["method"],
                    p["blocks"],
                    p["branches"],
                    p["test_group"],
                ).config_hash()
            )
        elif job.notebook == "04_ablation":
            need |= {
                book_plan.run_config(p["profile"], p["dataset"], 1, f, "crapnet", **{p["axis"]: v}).config_hash()
                for f in p["folds"]
                for v in p["values"]
            }
        elif job.notebook == "05_qualitative":
            need |= {
                book_plan.run_config(p["profile"], p["dataset"], 1, p["fold"], m).config_hash() for m in p["methods"]
            }
        elif job.notebook == "07_inside_attention":
            need.add(
                book_plan.run_config(p["profile"], p["dataset"], p["setting"], p["fold"], p["method"]).config_hash()
            )
        elif job.notebook == "06_results":
            need |= {
                book_plan.run_config(p["profile"], d, 1, p["run_fold"], m).config_hash()
                for d in p["run_datasets"]
                for m in p["run_methods"]
            }
            for t in p["tables"]:  # the declared tables the page cross-validates: one run per fold and group
                groups = (
                    ([None] if t["setting"] == 1 else ["kidneys", "liver_spleen"])
                    if t["method"] != "alpnet_sup"
                    else ["kidneys", "liver_spleen"]
                )
                need |= {
                    book_plan.run_config(
                        p["profile"], t["dataset"], t["setting"], f, t["method"], test_group=g, overrides=t["overrides"]
                    ).config_hash()
                    for f in t["folds"]
                    for g in groups
                }
    return need


@pytest.mark.parametrize("profile", book_plan.PROFILES)
def test_plan_trains_every_run_the_notebooks_read_once(profile, fake_data_root, tmp_path):
    plan = book_plan.plan_book(profile, data_root=fake_data_root, runs_root=tmp_path)
    trained = [book_plan._config_hash(j) for j in plan.jobs if j.notebook == "03_train_fold"]
    assert len(trained) == len(set(trained)), "two executions would train the same run"
    reads = {
        h
        for job in plan.jobs
        for h in (
            book_plan.run_config(**{k: v for k, v in a.items() if k != "data_root"}).config_hash()
            for a in wf.runs_read(job)
        )
    }
    assert reads == _needed_configs(plan), "the workflow would not train every run a notebook reads"
    assert set(trained) <= reads
    stages = {j.notebook: j.stage for j in plan.jobs}
    assert stages["01_data_exploration"] == stages["02_superpixels"] == 0
    assert stages["03_train_fold"] == 1
    assert {stages[n] for n in ("04_ablation", "05_qualitative", "06_results", "07_inside_attention")} == {2}
    assert sorted(j.params["axis"] for j in plan.by_notebook()["04_ablation"]) == ["blocks", "branches"]
    assert set(plan.by_notebook()) == set(book_plan.NOTEBOOKS), "every notebook runs in every profile"
    names = [j.name for j in plan.jobs]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[0-9a-z_.-]+__[0-9a-z_.-]+", n) for n in names), names


def test_smoke_plan_is_phantom_and_lists_what_it_leaves_out(fake_data_root):
    plan = book_plan.plan_book("smoke", data_root=fake_data_root)
    assert plan.datasets == ["phantom"]
    assert any("phantom" in n for n in plan.notes)
    text = "\n".join(plan.left_out)
    assert "folds 1, 2, 3, 4" in text
    assert "7, 9, 12, 15 attention blocks" in text
    ablations = {j.params["axis"]: j.params["values"] for j in plan.by_notebook()["04_ablation"]}
    assert ablations == {"blocks": [1, 5], "branches": [2, 1]}


def test_lite_plan_real_data_and_phantom_fallback(fake_data_root, monkeypatch):
    plan = book_plan.plan_book("lite", data_root=fake_data_root)
    assert plan.datasets == ["chaos", "sabs"]
    trains = plan.by_notebook()["03_train_fold"]
    assert {j.params["dataset"] for j in trains} == {"chaos"}
    assert {j.params["fold"] for j in trains} == {0} and {j.params["setting"] for j in trains} == {1}
    ablations = {j.params["axis"]: j.params["values"] for j in plan.by_notebook()["04_ablation"]}
    assert ablations == {"blocks": list(book_plan.PAPER_BLOCKS), "branches": list(book_plan.PAPER_BRANCHES)}
    assert len(trains) == 3 + 5 + 1  # methods, block counts other than 5, one-branch
    assert any("Synapse/SABS CT" in item for item in plan.left_out)
    assert {j.params["dataset"] for j in plan.by_notebook()["01_data_exploration"]} == {"chaos", "sabs"}
    monkeypatch.delenv("CRAPNET_DATA_ROOT", raising=False)
    fallback = book_plan.plan_book("lite")
    assert fallback.datasets == ["phantom"] and any("CRAPNET_DATA_ROOT" in n for n in fallback.notes)


def test_paper_plan_runs_everything_and_needs_data(fake_data_root, monkeypatch):
    plan = book_plan.plan_book("paper", data_root=fake_data_root)
    trains = plan.by_notebook()["03_train_fold"]
    assert {(j.params["dataset"], j.params["fold"], j.params["setting"]) for j in trains} >= {
        (d, f, s) for d in ("chaos", "sabs") for f in range(5) for s in (1, 2)
    }
    assert [i for i in plan.left_out if "fold" in i.lower()] == []
    monkeypatch.delenv("CRAPNET_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="paper needs the real data"):
        book_plan.plan_book("paper")
    with pytest.raises(ValueError, match="--profile"):
        book_plan.plan_book("huge")


# ----------------------------------------------------------------------------- toc
def test_expand_toc_replaces_notebooks_with_executed_copies():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    copies = {stem: [f"notebooks/{stem}__a"] for stem in book_plan.NOTEBOOKS}
    copies["03_train_fold"] = ["notebooks/03_train_fold__x", "notebooks/03_train_fold__y"]
    del copies["05_qualitative"]
    out, dropped = build.expand_toc(toc, copies, {"book/reproduce": ["book/this_build"]})
    files = build.toc_files(out)
    assert dropped == ["05_qualitative"]
    assert "notebooks/03_train_fold__x" in files and "notebooks/03_train_fold__y" in files
    assert files.index("notebooks/03_train_fold__y") == files.index("notebooks/03_train_fold__x") + 1
    assert files.index("book/this_build") == files.index("book/reproduce") + 1
    assert not any(f.startswith("notebooks/") and "__" not in f for f in files)
    assert "book/qualitative" in files  # the chapter stays when its notebook is dropped


def test_committed_toc_and_config_describe_an_offline_book():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = build.toc_files(toc)
    for name in (
        "book/intro",
        "book/method",
        "book/data",
        "book/reproduce",
        "book/results",
        "book/ablations",
        "book/qualitative",
        "book/limitations",
    ):
        assert name in files
    for name in files:
        if not name.startswith("notebooks/"):
            assert (REPO / f"{name}.md").is_file() or name == "book/method", f"{name}.md missing"
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    extensions = config["sphinx"]["config"]["extensions"]
    assert "sphinx_thebe" not in extensions and "sphinx.ext.intersphinx" not in extensions
    assert config["html"]["comments"] == {"hypothesis": False, "utterances": False}
    launch = config["launch_buttons"]
    assert not launch["binderhub_url"] and not launch["colab_url"] and launch["thebe"] is False


def test_prune_missing_pages(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.md").write_text("# a\n")
    toc = {"format": "jb-book", "root": "book/a", "chapters": [{"file": "book/gone", "sections": [{"file": "book/a"}]}]}
    out, missing = build.prune_missing(toc, tmp_path)
    assert missing == ["book/gone"]
    assert out["chapters"] == [{"file": "book/a"}]


# ----------------------------------------------------------------------------- batch runner
def _write_nb(path: Path, cells: list[tuple[str, str, list[str]]]) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    for kind, src, tags in cells:
        cell = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def _run_workflow(plan: book_plan.BookPlan, out: Path, root: Path, targets: list[str], messages: list[str]) -> int:
    plan_file = book_plan.save_plan(plan, out / "plan.json")
    cmd = driver.snakemake_command(out, plan_file, "smoke", 2, notebooks_root=root, targets=targets)
    return driver.run_snakemake(cmd, out / "logs" / "snakemake.log", echo=messages.append)


@pytest.mark.slow
def test_workflow_reuses_completed_notebooks_and_reports_failures(tmp_path):
    """A failure names notebook, parameters and cell and keeps the partial notebook; completed
    executions are reused; a changed notebook or parameter re-runs exactly that execution."""
    root = tmp_path / "repo"
    _write_nb(
        root / "notebooks" / "ok.ipynb",
        [("md", "# OK", []), ("code", "x = 1\nprofile = 'smoke'", ["parameters"]), ("code", "print(x * 2)", [])],
    )
    _write_nb(
        root / "notebooks" / "bad.ipynb",
        [
            ("md", "# Bad", []),
            ("code", "x = 1\nprofile = 'smoke'", ["parameters"]),
            ("code", "y = 3", []),
            ("code", "raise ValueError(f'broken on purpose {x}')", []),
        ],
    )
    jobs = [book_plan.Job("ok", {"x": 5}, 0, "five", "five"), book_plan.Job("bad", {"x": 7}, 1, "seven", "seven")]
    plan = book_plan.BookPlan("smoke", ["phantom"], None, str(tmp_path / "runs"), str(tmp_path / "res"), "cpu", jobs)
    out = tmp_path / "out"
    targets = ["notebooks/ok__five.ipynb", "notebooks/bad__seven.ipynb"]
    messages: list[str] = []
    since = time.time()
    assert _run_workflow(plan, out, root, targets, messages) != 0
    text = "\n".join(driver._failures(out, since))
    assert "bad.ipynb" in text and '"x": 7' in text
    assert "code cell 4" in text and "raise ValueError" in text  # 4: after papermill's injected cell
    assert "broken on purpose 7" in text
    partial = out / "notebooks" / "bad__seven.ipynb"
    assert str(partial) in text and partial.is_file()
    assert json.loads(partial.read_text())["metadata"]["crapnet_book"]["status"] == "failed"
    assert (out / "logs" / "bad__seven.log").is_file() and (out / "logs" / "bad__seven.params.yaml").is_file()
    done = json.loads((out / "notebooks" / "ok__five.ipynb").read_text())
    assert done["metadata"]["crapnet_book"]["status"] == "ok"
    assert any("10" in "".join(o.get("text", "")) for c in done["cells"] for o in c.get("outputs", []))
    # fix the notebook: "ok" is reused, "bad" runs again
    _write_nb(root / "notebooks" / "bad.ipynb", [("md", "# Bad", []), ("code", "x = 1", ["parameters"])])
    ok_started = done["metadata"]["crapnet_book"]["started"]
    assert _run_workflow(plan, out, root, targets, messages) == 0
    results = {r.job.name: r for r in execute.executed_results(plan, out)}
    assert results["bad__seven"].status == "ok"
    assert (
        json.loads((out / "notebooks" / "ok__five.ipynb").read_text())["metadata"]["crapnet_book"]["started"]
        == ok_started
    )
    # touched but unchanged: nothing runs; changed parameters: only that execution runs
    (root / "notebooks" / "ok.ipynb").touch()
    plan.jobs[1] = book_plan.Job("bad", {"x": 8}, 1, "seven", "seven")
    messages.clear()
    assert _run_workflow(plan, out, root, targets, messages) == 0
    ran = [m for m in messages if "wildcards: name=" in m]
    assert [m.split("=", 1)[1].strip() for m in ran] == ["bad__seven"], ran


def test_content_keys_and_undeclared_parameters(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    k1 = content_keys.content_key([a, b], p=1)
    assert k1 == content_keys.content_key([b, a], p=1)
    assert k1 != content_keys.content_key([a, b], p=2)
    os.utime(a, (0, 0))
    assert k1 == content_keys.content_key([a, b], p=1), "a file's time is not its content"
    a.write_text("x = 3\n")
    assert k1 != content_keys.content_key([a, b], p=1)
    plan = book_plan.BookPlan("smoke", ["phantom"], None, "r", "s", "cpu", [])
    with pytest.raises(book_plan.BookError, match="does not declare nope"):
        execute.job_parameters(book_plan.Job("01_data_exploration", {"nope": 1}, 0, "t", "t"), plan, ["profile"])
    assert book_plan.slugify("CHAOS s1/f0 b5") == "chaos-s1-f0-b5"


def test_library_dependencies_follow_the_imports():
    package = REPO / "crapnet_core"
    names = lambda files: {p.relative_to(package).with_suffix("").as_posix() for p in files}  # noqa: E731
    train = names(content_keys.library_closure(["crapnet_core.engine.training"]))
    assert {
        "engine/training",
        "models/segmenter",
        "models/attention",
        "data/episodes",
        "data/superpixels",
        "engine/experiment",
        "engine/checkpoints",
        "__init__",
        "engine/__init__",
    } <= train
    assert not any(n.startswith(("book/", "cli/", "report/")) for n in train)
    sp = names(content_keys.library_closure(["crapnet_core.data.superpixels"]))
    assert "data/superpixels" in sp and "models/segmenter" not in sp and "engine/training" not in sp
    mods = content_keys.notebook_modules(REPO / "notebooks" / "03_train_fold.ipynb")
    assert {"crapnet_core.engine.runs", "crapnet_core.report.plots", "crapnet_core.engine.training"} <= mods
    assert "models/segmenter" in names(content_keys.library_closure(mods))


def test_content_keys_track_the_whole_library():
    """Each job kind's key covers the modules that decide its result, including the registry's
    method modules (imported by name at run time); a stale module name is an error, not a key
    over the package ``__init__`` alone (which would never re-run anything after a change)."""
    package = REPO / "crapnet_core"
    names = lambda files: {p.relative_to(package).with_suffix("").as_posix() for p in files}  # noqa: E731
    train = names(content_keys.library_closure(content_keys.TRAIN_MODULES))
    assert {
        "engine/training",
        "models/attention",
        "models/methods/rpnet",
        "models/methods/qnet",
        "models/methods/adnet",
        "models/methods/alpnet_sup",
        "data/superpixels",
    } <= train
    assert {"engine/evaluation", "models/methods/rpnet", "engine/metrics"} <= names(
        content_keys.library_closure(content_keys.EVAL_MODULES)
    )
    assert "data/superpixels" in names(content_keys.library_closure(content_keys.SUPERPIXEL_MODULES))
    assert {"book/build", "report/figures"} <= names(content_keys.library_closure(content_keys.BOOK_MODULES))
    with pytest.raises(ValueError, match="crapnet_core.training"):
        content_keys.library_closure(["crapnet_core.training"])  # the flat layout's name


def test_study_keys_change_only_where_the_notebook_changed(tmp_path, monkeypatch):
    monkeypatch.delenv("CRAPNET_DATA_ROOT", raising=False)
    root = tmp_path / "repo"
    import shutil

    shutil.copytree(REPO / "notebooks", root / "notebooks")
    shutil.copytree(REPO / "book", root / "book")
    plan = book_plan.plan_book("smoke", runs_root=tmp_path / "runs")
    before = wf.study(plan, root).keys
    nb = json.loads((root / "notebooks" / "05_qualitative.ipynb").read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": ["changed"]})
    (root / "notebooks" / "05_qualitative.ipynb").write_text(json.dumps(nb))
    after = wf.study(plan, root).keys
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"notebook:05_qualitative__phantom"}
    assert any(k.startswith("train:") for k in before) and any(k.startswith("superpixels:") for k in before)


def test_gpu_jobs_get_one_device_each(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with gpus.claim_gpu(tmp_path, 0) as none:
        assert none is None
    with gpus.claim_gpu(tmp_path, 2) as first:
        with gpus.claim_gpu(tmp_path, 2) as second:
            assert {first, second} == {"0", "1"}
    with gpus.claim_gpu(tmp_path, 2) as again:
        assert again == "0", "a released device is free again"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with gpus.claim_gpu(tmp_path, 2) as first, gpus.claim_gpu(tmp_path, 2) as second:
        assert (first, second) == ("3", "5")
    # --per-gpu 2: two trainings share each device, spread over the devices first
    with (
        gpus.claim_gpu(tmp_path / "s", 2, slots=2) as a,
        gpus.claim_gpu(tmp_path / "s", 2, slots=2) as b,
        gpus.claim_gpu(tmp_path / "s", 2, slots=2) as c,
        gpus.claim_gpu(tmp_path / "s", 2, slots=2) as d,
    ):
        assert [a, b, c, d] == ["3", "5", "3", "5"]


def test_snakemake_command_local_and_slurm(tmp_path):
    local = driver.snakemake_command(tmp_path, tmp_path / "plan.json", "lite", 4, gpus=2, gpus_per_job=1)
    assert local[1:3] == ["-m", "snakemake"] and "--cores" in local and "gpu=2" in local
    assert str(REPO / "workflow" / "profiles" / "lite") in local and "gpus_per_job=1" in local
    slurm = driver.snakemake_command(
        tmp_path,
        tmp_path / "plan.json",
        "paper",
        50,
        gpus_per_job=1,
        executor="slurm",
        cluster_profile=REPO / "workflow" / "profiles" / "slurm",
        partition="gpu",
        account="lab",
    )
    assert slurm[slurm.index("--executor") + 1] == "slurm" and "--cores" not in slurm
    assert "slurm_partition=gpu" in slurm and "slurm_account=lab" in slurm
    assert (REPO / "workflow" / "profiles" / "slurm" / "config.yaml").is_file()
    for profile in book_plan.PROFILES:
        cfg = yaml.safe_load((REPO / "workflow" / "profiles" / profile / "config.yaml").read_text())
        assert cfg["config"]["profile"] == profile and "mtime" not in cfg["rerun-triggers"]
        assert cfg["keep-incomplete"] is True


def test_book_plan_is_the_workflow_dry_run(tmp_path, capsys, monkeypatch):
    from crapnet_core.cli import main

    monkeypatch.delenv("CRAPNET_DATA_ROOT", raising=False)
    assert (
        main(["book", "--profile", "smoke", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), "--plan"])
        == 0
    )
    text = capsys.readouterr().out
    assert "This was a dry-run" in text
    counts = dict(re.findall(r"^\s*(notebook|train|evaluate|superpixels|html)\s+(\d+)$", text, re.M))
    plan = book_plan.plan_book("smoke", runs_root=tmp_path / "runs")
    assert int(counts["notebook"]) == len(plan.jobs) and int(counts["html"]) == 1
    assert int(counts["train"]) == int(counts["evaluate"]) == len(wf.study(plan).runs) == 17
    assert len(re.findall(r"^\s+notebook\s+\d+$", text, re.M)) == 1, "the job table is printed once"
    assert "left out:" in text and "not implemented" not in text
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists(), "a dry run writes nothing"
    assert re.search(r"^cost: 16 training\(s\), 48 steps, 17 evaluation\(s\)", text, re.M)
    assert main(["book", "--profile", "smoke", "--partition", "p"]) == 2


@pytest.mark.parametrize("profile", book_plan.PROFILES)
def test_every_method_and_ablation_point_is_planned_or_truthfully_left_out(profile, fake_data_root, tmp_path):
    """Issue 24: each method of the registry and each ablation point of the declaration is trained by the
    plan, shown from committed results, or in the plan's left-out list, with a reason that holds."""
    from crapnet_core.facts import METHODS
    from crapnet_core.study.declaration import load_declaration

    decl = load_declaration()
    plan = book_plan.plan_book(
        profile,
        data_root=fake_data_root,
        runs_root=tmp_path,
        results_dir=REPO / "results" if profile == "lite" else tmp_path / "no-results",
    )
    configs = wf.plan_configs(plan)
    trained = {c.model.method for c in configs}
    results = next(j for j in plan.jobs if j.notebook == "06_results").params
    shown = {decl.table(t).method for t in results["committed"]}
    scope = decl.book[profile]
    left_methods = {m for item in scope.left_out for m in item.methods}
    for m in METHODS:
        assert m in trained | shown | left_methods, f"{profile}: {m} is neither planned nor left out"
    # every ablation point declared at any profile: trained (on the ablation pages) or left out
    points = {
        ("blocks", c.model.n_blocks)
        for t in decl.tables.values()
        if t.page == "ablations" and not t.pending
        for c in t.configs(t.seeds[0], t.folds[0])
    }
    points |= {("branches", 1)}
    planned = {(j.params["axis"], v) for j in plan.jobs if j.notebook == "04_ablation" for v in j.params["values"]}
    left_points = {(axis, v) for item in scope.left_out for axis, vs in item.points.items() for v in vs}
    for point in points:
        assert point in planned | left_points, f"{profile}: ablation point {point} is neither planned nor left out"
    # truthful: nothing left out is also trained in what the item names; committed tables exist
    for item in scope.left_out:
        for m in item.methods:
            clash = [
                c
                for c in configs
                if c.model.method == m
                and (not item.settings or c.data.setting in item.settings)
                and (not item.folds or c.data.fold in item.folds)
            ]
            assert not clash, f"{profile}: {m} is left out ({item.why}) but trained: {clash[0].run_name()}"
        for axis, vs in item.points.items():
            assert not {(axis, v) for v in vs} & planned, f"{profile}: ablation point left out and planned"
        for f in item.folds:
            assert all(c.data.fold != f for c in configs), f"{profile}: fold {f} left out but trained"
        for v in item.variants:
            assert all(c.model.variant_name() != v for c in configs), f"{profile}: variant {v} left out but trained"
    for name in results["committed"]:
        assert (REPO / "results" / name / "summary.json").is_file()
    text = "\n".join(plan.left_out)
    assert "not implemented" not in text
    if profile == "paper":  # every row of the paper's tables and the later methods, 5 folds, both settings
        assert {(c.model.method, c.data.setting) for c in configs} == {(m, s) for m in METHODS for s in (1, 2)}
        assert {c.data.fold for c in configs} == {0, 1, 2, 3, 4}
        lines = wf.plan_summary(plan)
        assert any(re.match(r"cost: \d+ training\(s\), [\d,]+ steps, .* GPU-hours \(the paper", ln) for ln in lines)


# ----------------------------------------------------------------------------- figures
@pytest.mark.parametrize("table", [1, 2, 3, 4])
def test_published_tables_are_transcribed_consistently(table):
    """Each published row's mean equals the mean of its four organs (to the paper's rounding)."""
    frame = tables.published_frame(table)
    assert set(frame["source"]) == {"published"}
    keys = ["dataset", "method", "variant"]
    for (dataset, method, variant), rows in frame.fillna({"variant": -1}).groupby(keys):
        organs = rows[rows.organ != "mean"]["dice"].to_numpy()
        mean = float(rows[rows.organ == "mean"]["dice"].iloc[0])
        assert len(organs) == 4
        key = (f"table{table}", dataset, method) if table in (1, 2) else (f"table{table}", int(variant))
        if key in tables.PUBLISHED_INCONSISTENT:  # the paper's own slip, listed and checked as such
            printed, actual = tables.PUBLISHED_INCONSISTENT[key]
            assert mean == printed and organs.mean() == pytest.approx(actual)
            assert abs(organs.mean() - mean) > 0.011
        else:
            assert abs(organs.mean() - mean) < 0.011, rows


def test_published_headline_numbers():
    t1 = tables.published_frame(1)
    row = t1[(t1.dataset == "chaos") & (t1.method == "CRAPNet") & (t1.organ == "mean")]
    assert float(row.dice.iloc[0]) == 79.79
    t2 = tables.published_frame(2)
    assert float(t2[(t2.dataset == "sabs") & (t2.method == "CRAPNet") & (t2.organ == "mean")].dice.iloc[0]) == 69.72
    t3 = tables.published_frame(3)
    assert sorted(set(t3.variant)) == list(book_plan.PAPER_BLOCKS)


def _metrics(method: str, dice: dict[str, float], setting: int = 1, dataset: str = "chaos") -> dict:
    return {
        "dataset": dataset,
        "setting": setting,
        "fold": 0,
        "method": method,
        "profile": "lite",
        "organs": list(dice),
        "per_organ": {
            o: {"dice_mean": d, "dice_std": 0.0, "hd95_mean": 5.0, "asd_mean": 1.0, "n_scans": 4}
            for o, d in dice.items()
        },
        "mean": {"dice": float(np.mean(list(dice.values()))), "hd95": 5.0, "asd": 1.0},
    }


def test_comparison_table_puts_ours_under_published():
    ours = tables.run_frame(
        [_metrics("crapnet", {o: 0.5 for o in facts.ORGANS}), _metrics("alpnet", {o: 0.25 for o in facts.ORGANS})]
    )
    assert set(ours.dice.dropna()) == {50.0, 25.0}
    table = tables.comparison_table(ours, 1, "chaos")
    assert list(table.columns) == ["LK", "RK", "Spleen", "Liver", "Mean"]
    idx = list(table.index)
    assert idx.index(("CRAPNet", "ours")) == idx.index(("CRAPNet", "published")) + 1
    assert table.loc[("CRAPNet", "ours"), "Mean"] == 50.0
    assert table.loc[("CRAPNet", "published"), "RK"] == 86.42
    assert ("SSL-RPNet", "published") in idx  # methods we do not implement stay for reference
    phantom = tables.comparison_table(ours.assign(dataset="phantom"), 1, "phantom", reference="chaos")
    assert ("CRAPNet", "published (Abdominal-MRI (CHAOS))") in list(phantom.index)


def test_summary_frame_reads_cross_validation_summaries():
    from crapnet_core.engine.runs import summarize_runs  # noqa: F401  (the layout read below)

    summary = {
        "dataset": "sabs",
        "setting": 2,
        "method": "alpnet",
        "profile": "lite",
        "folds": [0, 1, 2, 3, 4],
        "mean": {
            "dice": {"left_kidney": 0.4, "right_kidney": 0.5, "spleen": 0.6, "liver": 0.7, "mean": 0.55},
            "dice_std_over_folds": {"liver": 0.1},
            "hd95": {"liver": 9.0},
            "asd": {},
        },
    }
    frame = tables.summary_frame([summary])
    assert list(frame.organ) == [*facts.ORGANS, "mean"]
    assert frame.set_index("organ").loc["liver", "dice"] == pytest.approx(70.0)
    assert frame.set_index("organ").loc["liver", "dice_std"] == pytest.approx(10.0)
    assert set(frame.n_folds) == {5}
    with pytest.raises(ValueError, match="mean.dice"):
        tables.summary_frame([{"dataset": "x"}])


def test_ablation_table_layout():
    ours = tables.run_frame(_metrics("crapnet", {o: 0.3 for o in facts.ORGANS}), variant=7)
    t3 = tables.ablation_table(ours, 3)
    assert ("7", "ours") in [(str(a), b) for a, b in t3.index]
    assert t3.loc[(15, "published"), "Mean"] == 78.31
    t4 = tables.ablation_table(tables.run_frame(_metrics("crapnet", {"liver": 0.9}), variant=1), 4)
    assert list(t4.index.get_level_values(0))[:1] == [2]  # two-branch first, as the paper
    assert t4.loc[(1, "ours"), "Liver"] == 90.0


def test_best_superpixel_dice_on_a_constructed_slice():
    sp = np.zeros((8, 8), dtype=np.int32)
    sp[:, :4] = 1
    sp[:, 4:] = 2
    sp[0, :] = 0  # outside the body
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:, 4:] = True  # exactly superpixel 2
    assert figures.best_superpixel_dice(sp, mask) == (1.0, 2)
    mask2 = np.zeros((8, 8), dtype=bool)
    mask2[1:5, 0:4] = True  # 16 of superpixel 1's 28 pixels
    dice, k = figures.best_superpixel_dice(sp, mask2)
    assert k == 1 and dice == pytest.approx(2 * 16 / (28 + 16))
    assert figures.best_superpixel_dice(sp, np.zeros((8, 8), bool)) == (0.0, 0)
    with pytest.raises(ValueError, match="differ in shape"):
        figures.best_superpixel_dice(sp, np.zeros((4, 4), bool))


def test_provenance_flags_the_phantom():
    text = provenance.provenance_md("smoke", ["phantom"])
    assert "`smoke`" in text and "Synthetic data" in text and "{warning}" in text
    real = provenance.provenance_md("lite", ["chaos"], data_root="/data")
    assert "/data/CHAOST2" in real and "Synthetic" not in real
    assert "cores" in real  # names the machine
    assert "left out" in provenance.left_out_md("Folds", [0], [0, 1, 2])
    assert "as the paper" in provenance.left_out_md("Settings", [1, 2], [1, 2])


def test_load_summaries_with_their_run_info(tmp_path):
    summary = {
        "dataset": "chaos",
        "setting": 1,
        "method": "crapnet",
        "profile": "lite",
        "folds": [0, 1],
        "mean": {"dice": {"liver": 0.5, "mean": 0.5}},
    }
    for name in ("chaos_setting1_crapnet_lite", "chaos_setting1_crapnet_smoke"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(dict(summary, profile=name.rsplit("_", 1)[1])))
    (tmp_path / "chaos_setting1_crapnet_lite" / "run_info.json").write_text(
        json.dumps({"machine": "2-core test box", "wall_seconds": 12, "command": "crapnet cross-validate ..."})
    )
    found = tables.load_summaries(tmp_path, profile="lite")
    assert [Path(s["_path"]).parent.name for s in found] == ["chaos_setting1_crapnet_lite"]
    prov = tables.summaries_provenance(found)
    assert prov.loc[0, "machine"] == "2-core test box" and prov.loc[0, "wall time (s)"] == 12
    assert len(tables.load_summaries(tmp_path)) == 2
    assert tables.load_summaries(tmp_path / "absent") == []
    (tmp_path / "chaos_setting1_crapnet_lite" / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable summary"):
        tables.load_summaries(tmp_path)
