"""The study as data: the declaration, the per-run results layout, status, migration and the workflow."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from crapnet_core.facts import DATASET_TITLES, METHODS
from crapnet_core.study import layout
from crapnet_core.study.declaration import DECLARATION, DeclarationError, hash_of, load_declaration, parse_declaration

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


@pytest.fixture(scope="module")
def decl():
    return load_declaration()


def _small(data: dict, keep: int = 3) -> dict:
    """A trimmed copy of the packaged declaration (fast to validate): its first table entries, the book
    (the tests that use it take the decision rule's families away: they name tables not kept here)."""
    out = copy.deepcopy(data)
    out["tables"] = out["tables"][:keep]
    for key in ("support_studies", "rerun_check", "analyses"):
        out.pop(key, None)
    for scope in out["book"].values():
        scope["left_out"] = [i for i in scope.get("left_out", []) if "variants" not in i]
    return out


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(DECLARATION.read_text())


# ----------------------------------------------------------------------------- the declaration
def test_declaration_names_come_from_the_facts(decl):
    assert {t.method for t in decl.tables.values()} == set(METHODS), "every method of the registry is declared"
    assert {t.dataset for t in decl.tables.values()} <= set(DATASET_TITLES)
    lite = decl.select(profiles=["lite"])
    assert len(lite) == 44 and sum(len(t.runs()) for t in lite) == 362
    converged = decl.select(profiles=["converged"])
    assert not any(t.pending for t in converged) and sum(len(t.runs()) for t in converged) == 75
    assert {c.family for c in decl.comparisons} == set(decl.families)
    for page, path in decl.pages.items():
        assert (REPO / path).is_file(), f"page {page}: {path} missing"


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["tables"][0].update(method="crapnet2"),
            "table {dataset}_setting1_{method}_lite: method 'crapnet2'",
        ),
        (lambda d: d["tables"][0].update(overrides=["model.n_blockz=3"]), "has no field 'n_blockz'"),
        (lambda d: d["tables"][0].update(overrides=["model.n_blocks=7"]), "variant 'crapnet' is not what"),
        (lambda d: d["tables"][0].update(overrides=["train.threads=2"]), "not part of the config hash"),
        (lambda d: d["tables"][0].update(profile="huge"), "profile 'huge' is not one of"),
        (lambda d: d["tables"][0].update(page="nowhere"), "page 'nowhere' is not one of"),
        (lambda d: d["tables"][0].update(family="misc"), "unknown field(s) family"),
        (lambda d: d["tables"][0].update(colour="red"), "unknown field(s) colour"),
        (lambda d: d["tables"].append(copy.deepcopy(d["tables"][0])), "declared twice"),
        (lambda d: d["book"]["smoke"]["left_out"].append({"methods": ["dino"], "why": "x"}), "method 'dino'"),
        (lambda d: d["pending_profiles"].update(lite={"based_on": "lite", "why": "x"}), "defined by the engine now"),
    ],
)
def test_a_bad_entry_is_one_clear_error_naming_it(raw, change, message, monkeypatch):
    monkeypatch.setattr("crapnet_core.engine.decision.FAMILIES", ())
    data = _small(raw)
    change(data)
    with pytest.raises(DeclarationError) as err:
        parse_declaration(data, "study.yaml")
    assert message.split("{")[0] in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_pairing_of_the_decision_rule_must_name_declared_tables(raw, monkeypatch):
    from crapnet_core.engine import decision

    fam = decision.Family("main", "t", "q", (decision.Comparison("chaos_setting1_crapnet_lite", "nothing_lite"),))
    monkeypatch.setattr(decision, "FAMILIES", (fam,))
    with pytest.raises(
        DeclarationError,
        match="family main of crapnet_core/engine/decision.py: comparison "
        "chaos_setting1_crapnet_lite - nothing_lite: no table 'nothing_lite'",
    ):
        parse_declaration(_small(raw), "study.yaml")
    fam = decision.Family(
        "main", "t", "q", (decision.Comparison("chaos_setting1_crapnet_lite", "chaos_setting2_crapnet_lite"),)
    )
    monkeypatch.setattr(decision, "FAMILIES", (fam,))
    data = _small(raw)
    data["tables"] = raw["tables"][:2]
    with pytest.raises(DeclarationError, match="same test scans"):
        parse_declaration(data, "study.yaml")


def test_the_cli_says_the_error_in_one_line(tmp_path, raw, capsys, monkeypatch):
    from crapnet_core.cli import main

    monkeypatch.setattr("crapnet_core.engine.decision.FAMILIES", ())
    data = _small(raw)
    data["tables"][0]["method"] = "crapnet2"
    bad = tmp_path / "study.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["study", "status", "--declaration", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "method 'crapnet2'" in err[0]


def test_committed_config_hashes_are_recomputed_from_the_declaration(decl):
    """The committed runs keep their config hashes: a sample recomputed from the declaration."""

    def run(table, seed, fold, group="all"):
        return next(r for r in decl.table(table).runs() if (r.seed, r.fold, r.group) == (seed, fold, group))

    assert run("chaos_setting1_crapnet_lite", 0, 0).hash == "7804db2a7044"
    assert run("chaos_setting1_crapnet_lite", 1, 0).hash == "f85ff0b95c82"
    assert run("sabs_setting1_alpnet_lite", 2, 0).hash == "5c45b746b677"
    assert run("chaos_setting2_crapnet_lite", 0, 0, "kidneys").hash == "d139f6f007d5"
    assert run("chaos_setting1_crapnet-blocks12_lite", 0, 0).hash == "b8eec1043bd7"
    assert run("chaos_setting1_alpnet-attention_lite", 0, 0).hash == "ba6e46487824"
    assert run("budget_chaos_setting1_f0_crapnet", 0, 0).hash == "cacb5e86fa1d"
    # a registered method run before its module constants entered the hash: accepted at its old hash,
    # while the constants keep the declared values
    adnet = run("chaos_setting1_adnet_lite", 0, 0)
    assert adnet.hash != "4d156b36e1a0" and "4d156b36e1a0" in decl.accepted_hashes(adnet.config)


def test_hash_of_is_the_config_hash(decl):
    cfg = decl.table("chaos_setting1_rpnet_lite").runs()[0].config
    assert hash_of(cfg.hashed_dict()) == cfg.config_hash()


def test_a_changed_method_constant_makes_the_old_runs_stale(decl, monkeypatch):
    from crapnet_core.models.methods import adnet

    cfg = decl.table("chaos_setting1_adnet_lite").runs()[0].config
    assert len(decl.accepted_hashes(cfg)) == 2
    monkeypatch.setattr(adnet, "INITIAL_THRESHOLD", -5.0)
    assert list(decl.accepted_hashes(cfg)) == [cfg.config_hash()]


# ----------------------------------------------------------------------------- the committed results
def test_committed_results_are_done_except_the_declared_missing_tables(decl):
    states = layout.states(decl, RESULTS, decl.select(profiles=["lite"]))
    assert {s.status for s in states} <= {"done", "missing"}, "a committed run is stale"
    missing = {s.run.table for s in states if s.status == "missing"}
    assert missing == {"chaos_setting2_rpnet_lite", "sabs_setting2_rpnet_lite"}  # queued last, not run yet
    assert layout.undeclared(decl, RESULTS, decl.select(profiles=["lite"])) == []


def test_every_committed_converged_run_is_a_declared_run(decl):
    """The converged study's folds committed so far (by the interim runner) are declared runs, done."""
    tables = decl.select(profiles=["converged"])
    assert layout.undeclared(decl, RESULTS, tables) == []
    states = layout.states(decl, RESULTS, tables)
    assert not [s for s in states if s.status == "stale"]
    found = sorted(RESULTS.glob("*_converged/seed*/*/metrics.json"))
    # a run is committed when trained and evaluated; its budget curve follows in a later commit
    waiting = [s for s in states if s.status == "missing" and s.folder and s.why == "incomplete: no budget.json"]
    assert len([s for s in states if s.status == "done"]) + len(waiting) == len(found)


def test_migrated_runs_reproduce_every_committed_seed_summary(decl):
    """Each committed seed summary is what its per-run folders give (Dice, HD95, ASD, per scan, support)."""
    checked = 0
    for table in decl.select(profiles=["lite"]):
        for seed in table.seeds:
            path = RESULTS / table.name / f"seed{seed}" / "summary.json"
            if not table.summary or not path.is_file():
                continue
            old, new = json.loads(path.read_text()), layout.seed_summary(decl, table, seed, RESULTS)
            for fold, entry in old["per_fold"].items():
                for key in ("dice", "dice_lcc", "hd95", "asd"):
                    assert new["per_fold"][fold][key] == pytest.approx(entry[key], abs=1e-9), (table.name, fold, key)
                assert new["per_fold"][fold]["per_scan"] == entry["per_scan"]
                assert new["per_fold"][fold]["support"] == entry["support"]
            checked += 1
    assert checked == 51


def test_results_holds_only_results():
    code = [p for p in RESULTS.rglob("*") if p.suffix in (".py", ".sh", ".ipynb")]
    assert code == []


def test_no_edit_of_the_module_search_path_anywhere():
    needle = "sys.path" + ".insert"  # spelled in two parts, so that this file is not a match of its own
    found = []
    for path in REPO.rglob("*"):
        if any(
            part in (".git", ".venv", "_build", "runs", ".cache", "node_modules", "site-packages")
            for part in path.parts
        ):
            continue
        if path.suffix in (".py", ".ipynb", ".sh") and path.is_file():
            if needle in path.read_text(errors="replace"):
                found.append(str(path.relative_to(REPO)))
    assert found == []


# ----------------------------------------------------------------------------- status, layout
def _fake_run(folder: Path, cfg_hash: str, budget: tuple[int, ...] = ()) -> None:
    files = {
        "config.json": {"config_hash": cfg_hash},
        "metrics.json": {"config_hash": cfg_hash},
        "run_info.json": {"command": "x"},
    }
    if budget:
        files["budget.json"] = {"points": [{"step": s} for s in budget]}
    layout.publish_run(folder, files)


def test_status_says_done_missing_and_stale_and_never_reads_a_stale_run(decl, tmp_path):
    table = decl.table("phantom_setting1_alpnet_smoke")
    run = table.runs()[0]
    assert layout.run_state(decl, run, tmp_path).status == "missing"
    _fake_run(layout.seed_dir(tmp_path, table.name, 0) / f"{run.prefix}_0123456789ab", "0123456789ab")
    state = layout.run_state(decl, run, tmp_path)
    assert state.status == "stale" and "0123456789ab" in state.why and run.hash in state.why
    with pytest.raises(ValueError, match="not every run is done"):
        layout.seed_summary(decl, table, 0, tmp_path)
    (layout.seed_dir(tmp_path, table.name, 0) / "notarun").mkdir()
    assert any("notarun" in x for x in layout.undeclared(decl, tmp_path, [table]))
    text = layout.status_report(decl, tmp_path, [table])
    assert "1 stale" in text and "stale    " in text
    _fake_run(layout.result_dir(tmp_path, run), run.hash)
    assert layout.run_state(decl, run, tmp_path).status == "done"


def test_the_other_test_group_of_a_supervised_setting1_run_is_not_stale(decl, tmp_path):
    """Supervised ALPNet trains one model per test group in setting 1, and both folders are named
    ``..._all_f<k>_...``: the kidneys run's result is not a stale version of the liver/spleen run."""
    table = decl.table("chaos_setting1_alpnet_sup_converged")
    runs = [r for r in table.runs() if r.seed == 0 and r.config.data.fold == 1]
    assert len(runs) == 2 and runs[0].prefix == runs[1].prefix
    done, other = runs
    folder = layout.result_dir(tmp_path, done)
    _fake_run(folder, done.hash, budget=tuple(table.budget))
    saved = json.loads((folder / "config.json").read_text())
    saved["data"] = {"test_group": list(done.config.data.test_group)}
    (folder / "config.json").write_text(json.dumps(saved))
    assert layout.run_state(decl, done, tmp_path).status == "done"
    assert layout.run_state(decl, other, tmp_path).status == "missing"
    # a folder the workflow is still writing (no config yet) is not a stale version of anything
    (layout.seed_dir(tmp_path, table.name, 0) / f"{other.prefix}_fedcba987654").mkdir()
    assert layout.run_state(decl, other, tmp_path).status == "missing"
    # the same group at another hash is stale
    stale = layout.seed_dir(tmp_path, table.name, 0) / f"{other.prefix}_0123456789ab"
    _fake_run(stale, "0123456789ab")
    (stale / "config.json").write_text(json.dumps({"data": {"test_group": list(other.config.data.test_group)}}))
    assert layout.run_state(decl, other, tmp_path).status == "stale"


def test_a_budget_table_is_done_only_with_its_curve(decl, tmp_path):
    table = decl.table("budget_chaos_setting1_f0_alpnet")
    run = table.runs()[0]
    assert run.config.train.checkpoint_every == 1000 and run.config.train.keep_checkpoints == 10
    _fake_run(layout.result_dir(tmp_path, run), run.hash)
    assert layout.run_state(decl, run, tmp_path).status == "missing"
    _fake_run(layout.result_dir(tmp_path, run), run.hash, budget=(1000, 3000, 5000))
    state = layout.run_state(decl, run, tmp_path)
    assert state.status == "missing" and "budget steps 10000" in state.why
    _fake_run(layout.result_dir(tmp_path, run), run.hash, budget=(1000, 3000, 5000, 10000))
    assert layout.run_state(decl, run, tmp_path).status == "done"


def test_publish_run_replaces_a_folder_at_once(tmp_path):
    dest = tmp_path / "t" / "seed0" / "run_abc"
    dest.mkdir(parents=True)  # the empty folder Snakemake makes for an output
    layout.publish_run(dest, {"metrics.json": {"a": 1}})
    assert json.loads((dest / "metrics.json").read_text()) == {"a": 1}
    layout.publish_run(dest, {"metrics.json": {"a": 2}, "run_info.json": {}})
    assert sorted(p.name for p in dest.iterdir()) == ["metrics.json", "run_info.json"]
    assert [p.name for p in dest.parent.iterdir()] == ["run_abc"], "no temporary folder left"


def test_migration_derives_run_folders_from_a_summary(decl, tmp_path):
    """A table committed as seed summaries only gets one folder per run, at the committed hash."""
    name = "chaos_setting2_alpnet_lite"
    src = RESULTS / name / "seed0"
    dst = tmp_path / name / "seed0"
    dst.mkdir(parents=True)
    for f in ("summary.json", "run_info.json"):
        shutil.copy(src / f, dst / f)
    written = layout.migrate_table(decl, decl.table(name), tmp_path)
    assert len(written) == 10 and all(p.parent == dst for p in written)
    for p in written:
        committed = RESULTS / name / "seed0" / p.name
        for f in layout.RUN_FILES:
            if (
                f == "config.json"
            ):  # the same computed config; runtime fields added since (deterministic, compile) aside
                from crapnet_core.engine.experiment import ExperimentConfig

                assert (
                    ExperimentConfig.load(p / f).hashed_dict() == ExperimentConfig.load(committed / f).hashed_dict()
                ), p.name
                assert (
                    json.loads((p / f).read_text())["config_hash"]
                    == json.loads((committed / f).read_text())["config_hash"]
                )
                continue
            assert json.loads((p / f).read_text()) == json.loads((committed / f).read_text()), (p.name, f)
    assert layout.migrate_table(decl, decl.table(name), tmp_path) == [], "done runs are kept"


# ----------------------------------------------------------------------------- the workflow
def test_study_plan_and_status_commands(capsys):
    from crapnet_core.cli import main

    assert main(["study", "plan", "--profile", "lite"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"profile lite: 44 table\(s\), 362 run\(s\): 342 done, 20 missing", out)
    assert "chaos_setting2_rpnet_lite: 10 run(s)" in out and "CPU core-hours" in out
    assert "support study support_lite" in out and "made by `crapnet study run`" in out, "how it is run"
    assert main(["study", "plan", "--profile", "converged"]) == 0
    out = capsys.readouterr().out
    assert "support study support_converged" in out and "(priority 25)" in out
    assert main(["study", "plan", "--profile", "paper"]) == 0
    assert "GPU-hours" in capsys.readouterr().out
    assert main(["study", "plan"]) == 0, "every profile at once"
    out = capsys.readouterr().out
    assert all(f"profile {p}:" in out for p in ("lite", "converged", "paper", "smoke"))
    assert main(["study", "run"]) == 2, "run needs a selection"
    assert "--profile P" in capsys.readouterr().err


def _run_study(results: Path, runs: Path, repo: Path, tables: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crapnet_core.cli",
            "study",
            "run",
            "--tables",
            tables,
            "--results",
            str(results),
            "--runs",
            str(runs),
            "--jobs",
            "1",
            "--device",
            "cpu",
        ],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_a_stopped_study_continues_in_a_fresh_clone(decl, tmp_path):
    """Stop `crapnet study run` of a tiny smoke study after its first run, commit, clone afresh, continue:
    the finished run is not trained again, the rest is made, and the summaries appear."""
    tables = "phantom_setting1_crapnet_smoke,phantom_setting1_alpnet_smoke"
    first = tmp_path / "first"
    (first / "results").mkdir(parents=True)
    proc = _run_study(first / "results", first / "runs", REPO, tables)
    deadline = time.time() + 900
    done: list[Path] = []
    while time.time() < deadline and not done:
        done = sorted((first / "results").glob("*/seed0/*/metrics.json"))
        if proc.poll() is not None:
            break
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)  # the machine goes away mid-study
    proc.wait()
    assert len(done) == 1, f"expected one finished run when stopped, found {done}"
    finished = done[0].parent
    kept = {f.name: f.read_bytes() for f in finished.iterdir()}
    # commit what is there and clone it afresh: no runs folder, no Snakemake records
    subprocess.run(["git", "init", "-q", str(first)], check=True)
    subprocess.run(["git", "-C", str(first), "add", "results"], check=True)
    subprocess.run(
        ["git", "-C", str(first), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "stop"], check=True
    )
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(first), str(clone)], check=True)
    proc = _run_study(clone / "results", clone / "runs", REPO, tables)
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out
    again = clone / "results" / finished.relative_to(first / "results")
    assert {f.name: f.read_bytes() for f in again.iterdir()} == kept, "the finished run was made again"
    trained = sorted(p.name for p in (clone / "runs").iterdir() if not p.name.startswith("."))
    assert finished.name not in trained and len(trained) == 1, trained
    for t in tables.split(","):
        assert (clone / "results" / t / "summary.json").is_file()
        states = layout.states(decl, clone / "results", [decl.table(t)])
        assert [s.status for s in states] == ["done"]
    info = json.loads(next((clone / "results").glob("*/seed0/*/run_info.json")).read_text())
    assert {"command", "started_utc", "wall_seconds", "train_seconds", "commit", "machine", "environment"} <= set(info)


def test_the_ablation_references_are_those_of_the_decision_rule(decl):
    """The book's ablation pages measure each point against the table the declared ablations family pairs it with."""
    from crapnet_core.book.plan import ablation_reference
    from crapnet_core.engine.decision import family

    for c in family("ablations").comparisons:
        assert ablation_reference(decl, decl.table(c.a)).name == c.b
    for profile in ("smoke", "paper"):
        for t in decl.select(profiles=[profile]):
            if t.page == "ablations":
                ref = ablation_reference(decl, t)
                assert ref is not None and (ref.dataset, ref.setting, ref.profile) == (t.dataset, t.setting, profile)


def test_status_names_result_tables_the_declaration_does_not(decl, tmp_path):
    (tmp_path / "chaos_setting1_alpnet-temp_lite" / "seed0" / "run_a").mkdir(parents=True)
    (tmp_path / "chaos_setting1_alpnet-temp_lite" / "seed0" / "run_a" / "metrics.json").write_text("{}")
    (tmp_path / "compare").mkdir()
    assert layout.undeclared_tables(decl, tmp_path) == ["chaos_setting1_alpnet-temp_lite"]
    text = layout.status_report(decl, tmp_path, list(decl.tables.values()))
    assert "chaos_setting1_alpnet-temp_lite: 1 run folder(s)" in text
    assert "crapnet-temp" not in layout.status_report(decl, tmp_path, [decl.table("chaos_setting1_crapnet_lite")])


def test_the_workflow_finishes_what_is_begun_first_within_a_declared_priority(decl, tmp_path):
    from crapnet_core.engine.runs import run_dir_for
    from crapnet_core.study.targets import PRIORITY_SCALE, study_targets

    tables = [decl.table("chaos_setting1_crapnet_converged"), decl.table("chaos_setting1_alpnet_converged")]
    results, runs = tmp_path / "results", tmp_path / "runs"
    st = study_targets(decl, tables, results)
    keys = {(t, s, r.fold): k for k, r in st.runs.items() for t, s in [k[:2]]}
    crap, alp = tables[0].name, tables[1].name
    base = st.priority[(crap, 1)] * PRIORITY_SCALE
    assert st.priority[(alp, 1)] == st.priority[(crap, 2)] == st.priority[(crap, 1)]
    assert st.run_priority(*keys[(crap, 1, 0)]) == base  # no runs folder named: the declared priority

    def prio():
        return {(t, s, f): st.run_priority(*k, runs) for (t, s, f), k in keys.items() if s > 0}

    # nothing begun: the earlier declared seed first, then the tables tie
    p = prio()
    assert p[(crap, 1, 0)] == p[(alp, 1, 3)] > p[(crap, 2, 0)] == p[(alp, 2, 4)] >= base

    def begin(table, seed, fold, step):
        run = st.runs[keys[(table, seed, fold)]]
        ckpt = run_dir_for(run.config, runs) / "checkpoints"
        ckpt.mkdir(parents=True)
        (ckpt / f"step_{step}.pt").write_bytes(b"")  # only the names are read
        (ckpt / "last.pt").write_bytes(b"")
        return run

    def publish(table, seed, fold):
        path = Path(st.run_file(*keys[(table, seed, fold)]))
        path.parent.mkdir(parents=True)
        path.write_text("{}")

    steps = tables[0].runs()[0].config.train.steps
    begin(crap, 2, 0, 1000)
    near_done = begin(crap, 2, 1, steps - 1000)
    for fold in (2, 3):
        publish(crap, 2, fold)
    publish(alp, 1, 0)
    p = prio()
    # an interrupted training first, the furthest first
    others = [v for k, v in p.items() if k not in ((crap, 2, 0), (crap, 2, 1))]
    assert p[(crap, 2, 1)] > p[(crap, 2, 0)] > max(others)
    # then the fresh run of the seed nearest completion (seed 2 of CRAPNet: 4 of 5 begun) before other
    # seeds', then the earlier seed
    assert p[(crap, 2, 4)] > p[(alp, 1, 1)] > p[(crap, 1, 0)] > p[(alp, 2, 0)] >= base
    # no tie-break crosses a declared priority, and summaries and budget curves come above every training
    assert max(p.values()) < base + PRIORITY_SCALE
    assert st.summary_priority > st.budget_priority(crap) > max(p.values())
    # trained, not yet published: only its evaluation is left, it goes first
    (run_dir_for(near_done.config, runs) / "TRAINED").write_text("")
    assert st.run_priority(*keys[(crap, 2, 1)], runs) > p[(crap, 2, 1)]


def test_status_shows_a_training_in_progress_and_not_the_workflows_empty_folder(decl, tmp_path):
    from crapnet_core.engine.runs import run_dir_for

    table = decl.table("phantom_setting1_alpnet_smoke")
    run = table.runs()[0]
    results, runs = tmp_path / "results", tmp_path / "runs"
    layout.result_dir(results, run).mkdir(parents=True)  # made by Snakemake before the job starts
    state = layout.run_state(decl, run, results)
    assert state.status == "missing" and state.why == ""
    assert layout.training_progress(run, runs) is None
    ckpt = run_dir_for(run.config, runs) / "checkpoints"
    ckpt.mkdir(parents=True)
    for step in (10, 20):
        (ckpt / f"step_{step}.pt").write_bytes(b"")  # only the names are read
    progress = f"training: step 20 of {run.config.train.steps}"
    assert layout.training_progress(run, runs) == progress
    assert f"[{progress}]" in layout.status_report(decl, results, [table], runs_dir=runs)
    assert "[" not in layout.status_report(decl, results, [table])
    (ckpt.parent / "TRAINED").write_text("")
    assert layout.training_progress(run, runs) == "trained, not yet published"
    (layout.result_dir(results, run) / "metrics.json").write_text("{}")
    assert "incomplete: no config.json" in layout.run_state(decl, run, results).why


def test_a_seed_summary_waits_for_every_runs_budget_curve(decl, tmp_path):
    """A run of a budget table is done only with its curve (layout.run_state), so the seed's summary job must
    take the curves as inputs: with only metrics.json it ran between a run and its curve and failed."""
    from crapnet_core.study.targets import study_targets

    table = decl.table("chaos_setting1_crapnet_converged")
    st = study_targets(decl, [table], tmp_path)
    for seed in table.seeds:
        inputs = st.seed_inputs[(table.name, seed)]
        runs = [k for k in st.runs if k[:2] == (table.name, seed)]
        assert sorted(inputs) == sorted(
            st.run_file(*k, name) for k in runs for name in ("metrics.json", layout.BUDGET_FILE)
        )


def test_a_fresh_clone_never_remakes_a_committed_budget_curve(decl, tmp_path):
    """A budget curve needs the run's checkpoints, which only the training machine has. In a fresh clone the
    file times follow the checkout order and Snakemake has no records: a metrics.json newer than its
    budget.json once made Snakemake delete the committed curve to remake it (and fail without checkpoints)."""
    from crapnet_core.book.study_flow import run_study

    table = decl.table("chaos_setting1_crapnet_converged")
    results = tmp_path / "results"
    shutil.copytree(REPO / "results" / table.name, results / table.name)
    curves = sorted(results.glob(f"{table.name}/seed*/*/{layout.BUDGET_FILE}"))
    assert len(curves) == 5 * len(table.seeds), curves
    for curve in curves:  # the checkout wrote every metrics.json after its budget.json
        later = curve.stat().st_mtime + 60
        os.utime(curve.parent / "metrics.json", (later, later))
    kept = {p: p.read_bytes() for p in curves}
    assert (
        run_study([table], decl, results_dir=results, runs_root=tmp_path / "runs", dry_run=True, echo=lambda s: None)
        == 0
    )
    plan = (tmp_path / "runs" / ".study" / "logs" / "snakemake-dry-run.log").read_text()
    stats = plan[plan.index("Job stats") :].split("\n\n")[0]
    assert not re.search(r"^(budget|run)\s+\d+", stats, re.M), stats
    assert {p: p.read_bytes() for p in curves} == kept


def test_support_kinds_name_the_files_the_evaluations_write():
    from crapnet_core.engine import support as sup
    from crapnet_core.study.declaration import SUPPORT_KINDS

    assert SUPPORT_KINDS == {"support": sup.SENSITIVITY_FILE, "kshot": sup.KSHOT_FILE}


def test_a_bad_support_study_is_one_clear_error(raw, monkeypatch):
    monkeypatch.setattr("crapnet_core.engine.decision.FAMILIES", ())
    data = _small(raw)
    data["pages"] = raw["pages"]
    good = dict(name="s", tables=[data["tables"][0]["name"]], seeds=[0], kinds=["kshot"], shots=[1], page="support")
    good["tables"] = [parse_declaration(data, "study.yaml").select()[0].name]
    for change, message in (
        ({"priority": "high"}, "priority must be an integer"),
        ({"colour": "red"}, "unknown field(s) colour"),
        ({"kinds": ["supports"]}, "kind 'supports'"),
    ):
        data["support_studies"] = [{**good, **change}]
        with pytest.raises(DeclarationError, match=re.escape(message)):
            parse_declaration(data, "study.yaml")


@pytest.mark.slow
def test_the_workflow_evaluates_supports_of_the_runs_whose_checkpoints_it_holds(raw, tmp_path):
    """A declared support study is a workflow job right after each run (its checkpoints exist only where it
    trained); a committed run trained elsewhere is listed, never trained again; committed files are final."""
    from crapnet_core.book.study_flow import run_study
    from crapnet_core.study.jobs import support_job
    from crapnet_core.study.targets import study_targets

    data = copy.deepcopy(raw)
    data["support_studies"] = [
        dict(
            name="support_smoke",
            tables=["phantom_setting1_crapnet_smoke"],
            seeds=[0],
            kinds=["support", "kshot"],
            shots=[1, 2],
            page="support",
        )
    ]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    decl = load_declaration(path)
    table = decl.table("phantom_setting1_crapnet_smoke")
    (run,) = table.runs()
    results, runs = tmp_path / "results", tmp_path / "runs"
    st = study_targets(decl, [table], results, runs)
    assert list(st.support) == [(table.name, 0, run.config.run_name())], "a run to be trained here is a target"
    assert st.support_priority(table.name, 0, run.config.run_name()) == st.budget_priority(table.name)
    assert run_study([table], decl, results_dir=results, runs_root=runs, jobs=1, device="cpu", echo=lambda s: None) == 0
    folder = results / "support" / table.name / "seed0" / run.config.run_name()
    sens = json.loads((folder / "support_sensitivity.json").read_text())
    kshot = json.loads((folder / "kshot.json").read_text())
    assert [p["k"] for p in kshot["points"]] == [1, 2] and sens["config_hash"] == run.hash
    assert "support study support_smoke" in kshot["provenance"]["command"]
    kept = {p: p.read_bytes() for p in folder.iterdir()}
    # a fresh clone: no runs folder, file times in checkout order -> nothing to make, nothing changed
    shutil.rmtree(runs)
    for f in folder.iterdir():
        os.utime(f, (1, 1))
    assert study_targets(decl, [table], results, runs).support_elsewhere == []
    assert run_study([table], decl, results_dir=results, runs_root=runs, dry_run=True, echo=lambda s: None) == 0
    plan = (runs / ".study" / "logs" / "snakemake-dry-run.log").read_text()
    assert "Nothing to be done" in plan or not re.search(r"^(support|run)\s+\d+", plan, re.M), plan[-2000:]
    assert {p: p.read_bytes() for p in folder.iterdir()} == kept
    # a committed run without its evaluations and without checkpoints here: listed, not a job, not trained
    for f in ("support_sensitivity.json", "kshot.json"):
        (folder / f).unlink()
    st = study_targets(decl, [table], results, runs)
    assert st.support == {} and len(st.support_elsewhere) == 1 and "support_smoke" in st.support_elsewhere[0]
    said: list[str] = []
    assert run_study([table], decl, results_dir=results, runs_root=runs, dry_run=True, echo=said.append) == 0
    assert any("1 committed run(s) of a support study were trained elsewhere" in line for line in said), said
    with pytest.raises(ValueError, match="holds no trained run"):
        support_job(decl, table.name, 0, run.config.run_name(), results, runs, device="cpu")
    assert not any(p for p in runs.iterdir() if not p.name.startswith("."))
